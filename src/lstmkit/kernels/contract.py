"""The arguments every LSTM layer kernel takes, bundled: weights, static options, random masks.

Shapes: N packed rows, B sequences, I inputs, H cell size, P hidden size (P = H unless a
projection is given). Gate order along 4H is PyTorch's (i, f, g, o). The formulas are in
``docs/variants.md``; a field left ``None`` switches its option off.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

# Layer-norm epsilon, as torch.nn.LayerNorm's default.
LAYER_NORM_EPS = 1e-5


class LSTMWeights(NamedTuple):
    """One layer and direction's parameters."""

    w_ih: Tensor  # (4H, I)
    w_hh: Tensor  # (4H, P)
    b_ih: Tensor | None = None  # (4H,)
    b_hh: Tensor | None = None  # (4H,)
    w_hr: Tensor | None = None  # (P, H): projection h = W_hr (o * tanh(c))
    peephole_i: Tensor | None = None  # (H,): p_i * c_{t-1} in the input gate
    peephole_f: Tensor | None = None  # (H,): p_f * c_{t-1} in the forget gate
    peephole_o: Tensor | None = None  # (H,): p_o * c_t in the output gate
    layer_norm_ih: Tensor | None = None  # (4H,): gain of LN(W_ih x)
    layer_norm_hh: Tensor | None = None  # (4H,): gain of LN(W_hh h)
    layer_norm_cell_weight: Tensor | None = None  # (H,): gain of LN(c) before its tanh
    layer_norm_cell_bias: Tensor | None = None  # (H,): bias of LN(c)


class LSTMOptions(NamedTuple):
    """Options that change the cell's arithmetic but carry no tensor."""

    coupled: bool = False  # i = 1 - f (CIFG); the input gate's own rows go unused
    clip: float | None = None  # clamp the four gate pre-activations to [-clip, clip] (ONNX ``clip``)


class LSTMMasks(NamedTuple):
    """Random (training) or constant (evaluation) multipliers, drawn outside the kernel."""

    recurrent: Tensor | None = None  # (B, P): h_{t-1} feeding the gates is multiplied by it
    keep_cell: Tensor | None = None  # (N, H) or 0-d: zoneout, c_t = k c_{t-1} + (1 - k) c'_t
    keep_hidden: Tensor | None = None  # (N, P) or 0-d: zoneout, h_t = k h_{t-1} + (1 - k) h'_t


PLAIN = LSTMOptions()
NO_MASKS = LSTMMasks()
