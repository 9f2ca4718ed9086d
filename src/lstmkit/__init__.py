"""lstmkit: the LSTM of SPEC.md as an exact, trainable drop-in for torch.nn.LSTM.

Public surface:

- ``LSTM``, ``RNN``, ``LSTMCell``, ``RNNCell``: modules with torch.nn's constructor, call,
  shapes and state_dict; ``from_torch`` / ``to_torch`` convert. LSTM and LSTMCell take the
  variant options of docs/variants.md; ``LSTMGates`` is what ``return_gates=True`` adds.
- ``reference``: the textbook cell and layer of SPEC.md, the oracle of every fast path.
- ``reference_variants``: every variant's formulas, step by step, the variants' oracle.
- ``functional``: stacked networks over packed rows, with backend dispatch.
- ``precompile``: ``compile_kernels()``, the compiled CPU kernels compiled now (``python -m
  lstmkit.precompile``); ``backend="auto"`` otherwise compiles them in a background process on
  first use and runs the PyTorch-ops backend meanwhile (``compilation``).
- ``memory``: ``keep_freed_memory()``, glibc settings that spare a training loop from faulting
  its tensors' pages in again at every step (the command line applies them).
"""

import importlib
from importlib.metadata import PackageNotFoundError, version

from . import functional as functional
from . import memory as memory
from . import reference as reference
from . import reference_variants as reference_variants
from .nn import LSTM as LSTM
from .nn import RNN as RNN
from .nn import LSTMCell as LSTMCell
from .nn import LSTMGates as LSTMGates
from .nn import RNNCell as RNNCell


def __getattr__(name: str):
    if name == "precompile":
        return importlib.import_module(f"{__name__}.precompile")
    raise AttributeError(f"module 'lstmkit' has no attribute {name!r}")


try:
    __version__ = version("lstmkit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "LSTM",
    "RNN",
    "LSTMCell",
    "RNNCell",
    "LSTMGates",
    "functional",
    "memory",
    "precompile",  # imported on first use (``__getattr__``): ``python -m lstmkit.precompile`` runs it
    "reference",
    "reference_variants",
    "__version__",
]
