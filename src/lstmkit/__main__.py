"""``python -m lstmkit``: the command line, also as torchrun runs it (``torchrun -m lstmkit train ...``)."""

from .cli import main

main()
