"""Backend "cpu" for a single step: an LSTMCell, or a sequence of one step, as pointwise kernels.

The step's recurrent product W_hh h_0 is known before the step, so it joins the input side as
one more product in PyTorch, and the compiled kernels are only the gate arithmetic: no packed
W_hh and none of the sequence kernels' set-up, which a single step cannot repay (measured for
an LSTMCell of H = 64 at batch 1, inference: 148 µs on the sequence kernel, 116 µs on the torch
backend, 82-92 µs on these kernels; nn.LSTMCell 44-50 µs). ``StepLoops`` plugs into the shared
``lstm_function.LSTMLayer`` as ``cpu.NumbaLoops`` does, and each row's arithmetic is the sequence
kernels' own (``cpu._activate``, ``cpu._gate_gradients``), so the two cannot drift apart.

Every option but layer norm and the projection, whose steps need the sequence kernel's
row-wide passes; ``lstm_layer`` sends those, and every call of more than one step, there.

Shapes: B sequences (the N rows of the one step), H cell size = hidden size; gates along 4H as
(i, f, g, o).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from . import cpu
from .contract import NO_MASKS, PLAIN, LSTMMasks, LSTMOptions, LSTMWeights
from .cpu import (
    ONE,
    _activate,
    _borrowed,
    _gate_gradients,
    _jit,
    _mix,
    _squash,
    _wide_vectors,
    step_constants,
)
from .lstm_function import Gradients, Loops, Workspace, lstm_layer_with
from .matmul import linear


@_jit
def _forward(
    gates, bias, cell_prev, hidden_prev, cell_new, cells, out, gate_inside, p_i, p_f, p_o,
    keep_c, keep_c_value, keep_h, keep_h_value, coupled, clip,
):  # fmt: skip
    """One step over the rows of ``gates`` (B, 4H), which hold the pre-activations but the biases
    (``bias`` = b_ih + b_hh, ``cpu._bias``): the activations in place, c' into ``cell_new``, the
    carried c and h into ``cells`` and ``out``."""
    _wide_vectors()
    gates, cell_new, cells, out = _borrowed(gates), _borrowed(cell_new), _borrowed(cells), _borrowed(out)
    size = cell_new.shape[1]
    k = step_constants(gates, size)
    for b in range(gates.shape[0]):
        a = gates[b]
        for j in range(4 * size):
            a[j] += bias[j]
    zoneout_c = keep_c.shape[0] > 0 or keep_c_value > 0
    zoneout_h = keep_h.shape[0] > 0 or keep_h_value > 0
    keep_row_c = np.full(size, keep_c_value, dtype=gates.dtype)
    keep_row_h = np.full(size, keep_h_value, dtype=gates.dtype)
    h_new = np.empty(size, dtype=gates.dtype)
    for b in range(gates.shape[0]):
        a = gates[b]
        _activate(a, cell_prev[b], cell_new[b], p_i, p_f, p_o, gate_inside, b, coupled, clip, k)
        _squash(a[3 * size :], cell_new[b], h_new if zoneout_h else out[b], k)
        if zoneout_h:
            _mix(keep_h[b] if keep_h.shape[0] > 0 else keep_row_h, hidden_prev[b], h_new, out[b], k)
        if zoneout_c:
            _mix(keep_c[b] if keep_c.shape[0] > 0 else keep_row_c, cell_prev[b], cell_new[b], cells[b], k)


@_jit
def _backward(
    gates, cell_new, gate_inside, cell_prev, d_out, d_hn, dc, d_gates, carry_h, p_i, p_f, p_o,
    keep_c, keep_c_value, keep_h, keep_h_value, coupled, clip,
):  # fmt: skip
    """dL/d(pre-activations) into ``d_gates`` (B, 4H) from dL/dh_1 = d_out + d_hn and
    dL/dc_1 = ``dc`` (B, H), which becomes dL/dc_0; ``carry_h`` gets the part of dL/dh_1 that
    zoneout passes to h_0."""
    _wide_vectors()
    gates, d_gates, dc = _borrowed(gates), _borrowed(d_gates), _borrowed(dc)
    size = cell_new.shape[1]
    k = step_constants(gates, size)
    one = k[ONE]
    zoneout_c = keep_c.shape[0] > 0 or keep_c_value > 0
    zoneout_h = keep_h.shape[0] > 0 or keep_h_value > 0
    keep_row_c = np.full(size, keep_c_value, dtype=gates.dtype)
    keep_row_h = np.full(size, keep_h_value, dtype=gates.dtype)
    d_hidden, d_new = np.empty(size, dtype=gates.dtype), np.empty(size, dtype=gates.dtype)
    tanh_squashed, carry_c = np.empty(size, dtype=gates.dtype), np.zeros(size, dtype=gates.dtype)
    no_vector, no_rows = np.empty(0, dtype=gates.dtype), np.empty((0, 0), dtype=gates.dtype)
    no_gains = np.empty(0, dtype=np.float64)
    for b in range(gates.shape[0]):
        for j in range(size):
            d_hidden[j] = d_out[b, j] + d_hn[b, j]
        if zoneout_h:
            keep = keep_h[b] if keep_h.shape[0] > 0 else keep_row_h
            for j in range(size):
                carry_h[b, j] = d_hidden[j] * keep[j]
                d_hidden[j] *= one - keep[j]
        _gate_gradients(
            k, gates[b], d_gates[b], cell_prev[b], cell_new[b], d_hidden, dc[b], d_new, tanh_squashed,
            carry_c, keep_c[b] if keep_c.shape[0] > 0 else keep_row_c, zoneout_c, p_i, p_f, p_o,
            gate_inside, no_rows, no_rows, no_vector, no_vector, no_gains, b, coupled, clip,
        )  # fmt: skip


def _options(w: LSTMWeights, masks: LSTMMasks, like: np.ndarray, batch_sizes, options: LSTMOptions) -> tuple:
    """Both kernels' last arguments: the sequence kernels' own (``cpu._shared``, made once for a
    layer without options) less those a step has no use for: peepholes, zoneout's masks, the
    options."""
    shared, last = cpu._shared(w, masks, like, batch_sizes, options)
    # shared = (p_i, p_f, p_o, the three layer-norm gains, recurrent, keep_c, keep_c_value,
    # keep_h, keep_h_value, offsets, sizes)
    return (*shared[:3], *shared[7:11], *last)


def _step(
    gates: np.ndarray, c0: np.ndarray, h0: np.ndarray, cell_new: np.ndarray, cells: np.ndarray,
    out: np.ndarray, gate_inside: np.ndarray, w: LSTMWeights, masks: LSTMMasks, batch_sizes,
    options: LSTMOptions,
) -> None:  # fmt: skip
    """``_forward`` on NumPy arrays: ``StepLoops.forward``'s workspace, or ``step_inference``'s own."""
    _forward(
        gates, cpu._bias(w, gates), c0, h0, cell_new, cells, out,
        gate_inside, *_options(w, masks, gates, batch_sizes, options),
    )  # fmt: skip


def _numpy(tensor: Tensor) -> np.ndarray:
    """A state tensor as a NumPy array, without the ``detach`` call where nothing needs it."""
    return (tensor.detach() if tensor.requires_grad else tensor).contiguous().numpy()


class StepLoops(Loops):
    """One step's recurrences (see ``lstm_function.Loops``), without layer norm or projection."""

    SUMS_GAINS = False  # no layer norm here
    ADDS_BIAS = True  # in the kernel's pass over each row: one torch call less a step

    def forward(
        self, ws: Workspace, h0: Tensor, c0: Tensor, w: LSTMWeights, masks: LSTMMasks,
        batch_sizes: Sequence[int], reverse: bool, options: LSTMOptions, x: None = None,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        ws.gates.addmm_(h0 if masks.recurrent is None else h0 * masks.recurrent, w.w_hh.t())
        _step(
            ws.gates.numpy(), _numpy(c0), _numpy(h0), ws.cell_new.numpy(), ws.cells.numpy(), ws.out.numpy(),
            cpu._flags(ws.gate_inside), w, masks, batch_sizes, options,
        )  # fmt: skip
        # the final states are the step's rows, as tensors of their own: the Function returns
        # them beside ``out`` and ``cells``
        return ws.out.clone(), ws.cells.clone()

    def backward(
        self, ws: Workspace, gs: Gradients, d_out: Tensor, d_hn: Tensor, d_cn: Tensor, w: LSTMWeights,
        masks: LSTMMasks, batch_sizes: Sequence[int], reverse: bool, options: LSTMOptions,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        dc = d_cn.clone()
        carry_h = torch.zeros_like(d_hn)
        like = ws.gates.numpy()
        _backward(
            like, ws.cell_new.numpy(), cpu._flags(ws.gate_inside),
            gs.cell_prev.numpy(), d_out.numpy(), d_hn.numpy(), dc.numpy(), gs.d_gates.numpy(),
            carry_h.numpy(), *_options(w, masks, like, batch_sizes, options),
        )  # fmt: skip
        dh = gs.d_gates @ w.w_hh  # dL/dh_0 through W_hh h_0, and through zoneout's carry
        if masks.recurrent is not None:
            dh.mul_(masks.recurrent)
        return dh.add_(carry_h), dc


_step_layer = lstm_layer_with(StepLoops())


def lstm_layer(x, state, weights, batch_sizes, reverse, options=PLAIN, masks=NO_MASKS):
    """Backend "cpu"'s layer function (``lstm_function.lstm_layer_with``): a single step without
    layer norm or projection on ``StepLoops``, anything else on the sequence kernel."""
    w = weights if isinstance(weights, LSTMWeights) else LSTMWeights(*weights)
    if len(batch_sizes) == 1 and w.layer_norm_ih is None and w.w_hr is None:
        return _step_layer(x, state, weights, batch_sizes, reverse, options, masks)
    return cpu.lstm_layer(x, state, weights, batch_sizes, reverse, options, masks)


def step_inference(
    x: Tensor, state: tuple[Tensor, Tensor] | None, w: LSTMWeights, options: LSTMOptions = PLAIN
) -> tuple[Tensor, Tensor, Tensor]:
    """One step with nothing to differentiate and no masks, as ``lstm_layer`` computes it (the
    same numbers), on NumPy arrays from the products on: none of the autograd-ready workspace,
    state copies and views, which took a third of an LSTMCell's inference call at batch 1, H =
    64 (78 against 52 µs, nn.LSTMCell 39). Peepholes and the options, no layer norm or
    projection. x (B, I), state (h_0, c_0) (B, H) or None for zeros -> h_1, c_1 (B, H) and the
    gate activations (B, 4H)."""
    gates = linear(x, w.w_ih)
    batch, size = gates.shape[0], gates.shape[1] // 4
    like = gates.numpy()
    if state is None:  # W_hh h_0 = 0: no product
        h0 = c0 = np.zeros((batch, size), like.dtype)
    else:
        gates.addmm_(state[0], w.w_hh.t())
        h0, c0 = (_numpy(s) for s in state)
    cell, hidden = np.empty_like(h0), np.empty_like(h0)
    flags = cpu._discarded_flags(options, *like.shape)
    _step(like, c0, h0, cell, cell, hidden, flags, w, NO_MASKS, [batch], options)
    return torch.from_numpy(hidden), torch.from_numpy(cell), gates
