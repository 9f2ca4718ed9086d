"""lstmkit: the LSTM of SPEC.md as an exact, trainable drop-in for torch.nn.LSTM.

Public surface:

- ``LSTM``, ``RNN``, ``LSTMCell``, ``RNNCell``: modules with torch.nn's constructor, call,
  shapes and state_dict; ``from_torch`` / ``to_torch`` convert.
- ``reference``: the textbook cell and layer of SPEC.md, the oracle of every fast path.
- ``functional``: stacked networks over packed rows, with backend dispatch.
"""

from importlib.metadata import PackageNotFoundError, version

from . import functional as functional
from . import reference as reference
from .nn import LSTM as LSTM
from .nn import RNN as RNN
from .nn import LSTMCell as LSTMCell
from .nn import RNNCell as RNNCell

try:
    __version__ = version("lstmkit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["LSTM", "RNN", "LSTMCell", "RNNCell", "functional", "reference", "__version__"]
