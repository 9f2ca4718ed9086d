"""Stacked, optionally bidirectional recurrent networks over packed rows, with backend dispatch.

``lstm`` and ``rnn`` take the packed-row layout of ``lstmkit.kernels`` and run ``num_layers``
layers of one or two directions (SPEC.md §3): each layer reads the concatenated outputs of the
layer below; dropout, when training, acts between layers, never after the last (as torch.nn.LSTM).
The module classes in ``lstmkit.nn`` validate arguments and convert tensors and PackedSequences
to this layout; these functions trust their input.

Every backend provides one layer function per cell type with the signature
``layer(x, state, weights, batch_sizes, reverse) -> (out, new_state)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import reference
from .kernels import torch_ops

LayerWeights = tuple[Tensor | None, ...]
LayerFn = Callable[..., tuple[Tensor, tuple[Tensor, ...]]]


def _padded(x: Tensor, batch_sizes: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Packed rows (N, F) -> padded (T, B, F) and lengths (B,)."""
    return pad_packed_sequence(PackedSequence(x, torch.tensor(batch_sizes)))


def _rows(padded: Tensor, lengths: Tensor) -> Tensor:
    return pack_padded_sequence(padded, lengths).data


def _reference_lstm(x, state, weights, batch_sizes, reverse):
    padded, lengths = _padded(x, batch_sizes)
    out, new_state = reference.lstm_layer(padded, state, weights, lengths, reverse)
    return _rows(out, lengths), new_state


def _reference_rnn(x, state, weights, batch_sizes, reverse, nonlinearity="tanh"):
    padded, lengths = _padded(x, batch_sizes)
    out, hidden = reference.rnn_layer(padded, *state, weights, lengths, reverse, nonlinearity)
    return _rows(out, lengths), (hidden,)


LSTM_BACKENDS: dict[str, LayerFn] = {
    "torch": torch_ops.lstm_layer,
    "reference": _reference_lstm,
}
RNN_BACKENDS: dict[str, LayerFn] = {
    "torch": torch_ops.rnn_layer,
    "reference": _reference_rnn,
}
# "auto" is the fastest correct backend available; the hand-written BPTT is the only fast one yet
AUTO_BACKEND = "torch"
BACKENDS = ("auto", *LSTM_BACKENDS)


def resolve_backend(backend: str) -> str:
    """The concrete backend that ``backend`` names; raises ValueError for an unknown name."""
    if backend == "auto":
        return AUTO_BACKEND
    if backend not in LSTM_BACKENDS:
        raise ValueError(f"backend {backend!r} is not available here; available: {list(BACKENDS)}")
    return backend


def stack(
    layer: LayerFn,
    x: Tensor,
    batch_sizes: Sequence[int],
    state: tuple[Tensor, ...],
    weights: Sequence[LayerWeights],
    *,
    num_layers: int,
    bidirectional: bool,
    dropout: float = 0.0,
    training: bool = False,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Run ``num_layers`` layers of ``layer`` over packed rows.

    x (N, I); each state tensor (L*D, B, .) with row ``layer * D + direction``, as torch's h0/c0;
    weights[layer * D + direction]. Returns out (N, D*P) and the final state, shaped as ``state``.
    """
    directions = 2 if bidirectional else 1
    finals: list[tuple[Tensor, ...]] = []
    for index in range(num_layers):
        outs = []
        for direction in range(directions):
            k = index * directions + direction
            out, final = layer(x, tuple(s[k] for s in state), weights[k], batch_sizes, direction == 1)
            outs.append(out)
            finals.append(final)
        x = outs[0] if directions == 1 else torch.cat(outs, 1)
        if dropout > 0 and training and index < num_layers - 1:
            x = F.dropout(x, dropout, training=True)
    return x, tuple(torch.stack(parts) for parts in zip(*finals, strict=True))


def lstm(
    x: Tensor,
    batch_sizes: Sequence[int],
    state: tuple[Tensor, Tensor],
    weights: Sequence[LayerWeights],
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    training: bool = False,
    backend: str = "auto",
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Stacked LSTM. x (N, I), state = (h0 (L*D, B, P), c0 (L*D, B, H)), weights per layer and
    direction = (w_ih, w_hh, b_ih, b_hh, w_hr) -> (out (N, D*P), (h_n, c_n))."""
    return stack(
        LSTM_BACKENDS[resolve_backend(backend)],
        x,
        batch_sizes,
        state,
        weights,
        num_layers=num_layers,
        bidirectional=bidirectional,
        dropout=dropout,
        training=training,
    )


def rnn(
    x: Tensor,
    batch_sizes: Sequence[int],
    state: tuple[Tensor],
    weights: Sequence[LayerWeights],
    *,
    nonlinearity: str = "tanh",
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    training: bool = False,
    backend: str = "auto",
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Stacked plain RNN. x (N, I), state = (h0 (L*D, B, H),), weights per layer and direction
    = (w_ih, w_hh, b_ih, b_hh) -> (out (N, D*H), (h_n,))."""
    return stack(
        partial(RNN_BACKENDS[resolve_backend(backend)], nonlinearity=nonlinearity),
        x,
        batch_sizes,
        state,
        weights,
        num_layers=num_layers,
        bidirectional=bidirectional,
        dropout=dropout,
        training=training,
    )
