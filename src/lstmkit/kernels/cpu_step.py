"""Backend "cpu" for a single step: an LSTMCell, or a sequence of one step, as pointwise kernels.

The step's recurrent product W_hh h_0 is known before the step, so it joins the input side as
one more product in PyTorch, and the compiled kernels are only the gate arithmetic: no packed
W_hh and none of the sequence kernels' set-up, which a single step cannot repay (measured for
an LSTMCell of H = 64 at batch 1, inference: 148 µs on the sequence kernel, 116 µs on the torch
backend, 82-92 µs on these kernels; nn.LSTMCell 44-50 µs). ``StepFunction`` is the step's
autograd Function, the shared ``lstm_function.LSTMLayer``'s computation for one step without its
sequence bookkeeping, and each row's arithmetic is the sequence kernels' own (``cpu._activate``,
``cpu._gate_gradients``), so the two cannot drift apart.

Every option but layer norm and the projection, whose steps need the sequence kernel's
row-wide passes; ``lstm_layer`` sends those, and every call of more than one step, there.

Shapes: B sequences (the N rows of the one step), H cell size = hidden size; gates along 4H as
(i, f, g, o).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from . import cpu, second_order
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
from .lstm_function import recorded
from .matmul import linear, times, weight_gradient


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
    gates, cell_new, gate_inside, cell_prev, d_h, dc, d_gates, carry_h, p_i, p_f, p_o, keep_c,
    keep_c_value, keep_h, keep_h_value, coupled, clip,
):  # fmt: skip
    """dL/d(pre-activations) into ``d_gates`` (B, 4H) from dL/dh_1 = ``d_h`` and dL/dc_1 = ``dc``
    (B, H), which becomes dL/dc_0; ``carry_h`` gets the part of dL/dh_1 that
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
            d_hidden[j] = d_h[b, j]
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
    """``_forward`` on NumPy arrays: ``_run``'s buffers, or ``step_inference``'s own."""
    _forward(
        gates, cpu._bias(w, gates), c0, h0, cell_new, cells, out,
        gate_inside, *_options(w, masks, gates, batch_sizes, options),
    )  # fmt: skip


def _run(
    x: Tensor, state: tuple[Tensor, Tensor] | None, w: LSTMWeights, masks: LSTMMasks, options: LSTMOptions
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:  # fmt: skip
    """The step's forward, on NumPy arrays from the products on: (out = h_1, cells = the carried
    c_1, gates (the activations), cell_new = c'_1 before zoneout, the clipping flags or None), all
    (B, .); ``state`` (h_0, c_0), or None for zeros (no W_hh h_0 product then). NumPy's
    allocations: ``new_empty`` and a ``numpy`` call took 7.5 µs an array, ``np.empty`` and
    ``torch.from_numpy`` 2.3 (measured)."""
    gates = linear(x, w.w_ih)
    like = gates.numpy()
    if state is None:
        h0 = c0 = np.zeros((like.shape[0], like.shape[1] // 4), like.dtype)
    else:
        h = state[0] if masks.recurrent is None else state[0] * masks.recurrent
        gates.addmm_(h, w.w_hh.t())
        h0, c0 = (cpu._array(s, like, 2) for s in state)
    cell_new = np.empty_like(c0)
    cells = cell_new if masks.keep_cell is None else np.empty_like(c0)
    out = np.empty_like(h0)
    inside = cpu._flags(None) if options.clip is None else np.empty(like.shape, np.bool_)
    _step(like, c0, h0, cell_new, cells, out, inside, w, masks, [like.shape[0]], options)
    carried = torch.from_numpy(cells)
    new = carried if cells is cell_new else torch.from_numpy(cell_new)
    return (
        torch.from_numpy(out),
        carried,
        gates,
        new,
        None if options.clip is None else torch.from_numpy(inside),
    )


# StepFunction's optional inputs: the peepholes (p_i, p_f, p_o) and the masks (LSTMMasks' fields)
_NO_EXTRAS = (None,) * 6


class StepFunction(torch.autograd.Function):
    """(x, h0, c0, w_ih, w_hh, b_ih, b_hh, options, *extras) -> (out (B, H), h_1 (B, H), c_1
    (B, H), gates (B, 4H), cells (B, H)): ``lstm_function.LSTMLayer`` for one step, with its
    gradients, on these kernels; ``extras`` = (p_i, p_f, p_o, *masks), or nothing where all are
    None. A Function of its own because a step has no rows to gather and no recurrence to
    allocate for (the shared one's workspace, row bookkeeping and state copies), and few
    arguments because autograd's ``apply`` pays for each (a Function of 19 arguments took 31 µs
    a call, of 6 17-20 µs; measured). ``gates`` and ``cells`` as there: the step's own buffers,
    not differentiable."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor,
        b_ih: Tensor | None, b_hh: Tensor | None, options: LSTMOptions, *extras: Tensor | None,
    ) -> tuple[Tensor, ...]:  # fmt: skip
        p_i, p_f, p_o, *masks = extras or _NO_EXTRAS
        w = LSTMWeights(w_ih, w_hh, b_ih, b_hh, None, p_i, p_f, p_o)
        out, cells, gates, cell_new, inside = _run(x, (h0, c0), w, LSTMMasks(*masks), options)
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, gates, cell_new, inside, *extras)
        ctx.options = options
        ctx.mark_non_differentiable(gates, cells)
        ctx.set_materialize_grads(False)  # no zeros for the outputs that did not reach the loss
        return out, out.clone(), cells.clone(), gates, cells

    @staticmethod
    def backward(
        ctx: FunctionCtx, d_out: Tensor | None, d_hn: Tensor | None, d_cn: Tensor | None, *_
    ) -> tuple:
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, gates, cell_new, inside, *extras = ctx.saved_tensors
        p_i, p_f, p_o, *mask_fields = extras or _NO_EXTRAS
        w, masks = LSTMWeights(w_ih, w_hh, b_ih, b_hh, None, p_i, p_f, p_o), LSTMMasks(*mask_fields)
        if second_order.wanted():  # create_graph=True
            needs = ctx.needs_input_grad
            grads = second_order.gradients(
                "lstm", x, (h0, c0), w, ([x.shape[0]], False, ctx.options, masks),
                (*needs[:7], False, *needs[8:11]), (d_out, d_hn, d_cn),
            )  # fmt: skip
            return *grads[:7], None, *((*grads[8:11], None, None, None) if extras else ())
        # dL/dh_1 through the output and the final state: None where one did not reach the loss
        d_h = d_hn if d_out is None else d_out if d_hn is None else d_out + d_hn
        like = gates.numpy()
        d_h = np.zeros_like(cell_new.numpy()) if d_h is None else cpu._array(d_h, like, 2)
        # dL/dc_1, which the kernel turns into dL/dc_0 in place: a copy
        dc = np.zeros_like(cell_new.numpy()) if d_cn is None else cpu._array(d_cn, like, 2).copy()
        carry_h = None if masks.keep_hidden is None else np.zeros_like(d_h)  # zoneout's part of dL/dh_0
        d_gates = np.empty_like(like)
        _backward(
            like, cell_new.numpy(), cpu._flags(inside), cpu._array(c0, like, 2), d_h, dc, d_gates,
            cpu._empty(like.dtype, 2) if carry_h is None else carry_h,
            *_options(w, masks, like, [x.shape[0]], ctx.options),
        )  # fmt: skip
        d_gates = torch.from_numpy(d_gates)
        needs = ctx.needs_input_grad
        d_x = times(d_gates, w_ih) if needs[0] else None
        dh = None
        if needs[1]:
            dh = times(d_gates, w_hh)  # through W_hh h_0, then zoneout's carry
            if masks.recurrent is not None:
                dh.mul_(masks.recurrent)
            if carry_h is not None:
                dh.add_(torch.from_numpy(carry_h))
        d_w_ih = weight_gradient(d_gates, x) if needs[3] else None
        hidden_in = h0 if masks.recurrent is None else h0 * masks.recurrent
        d_w_hh = weight_gradient(d_gates, hidden_in) if needs[4] else None
        d_b_ih = d_b_hh = None
        if b_ih is not None:
            d_b_ih = d_gates.sum(0)
            d_b_hh = d_b_ih.clone()  # distinct tensors: autograd may keep one as .grad
        d_extras = ()
        if extras:
            d_i, d_f, _, d_o = d_gates.chunk(4, 1)
            d_extras = (
                tuple(
                    None if p is None else (d * c).sum(0)
                    for p, d, c in ((p_i, d_i, c0), (p_f, d_f, c0), (p_o, d_o, cell_new))
                )
                + (None,) * 3
            )
        return d_x, dh, torch.from_numpy(dc), d_w_ih, d_w_hh, d_b_ih, d_b_hh, None, *d_extras


def lstm_layer(x, state, weights, batch_sizes, reverse, options=PLAIN, masks=NO_MASKS):
    """Backend "cpu"'s layer function (as ``lstm_function.lstm_layer_with``'s): a single step
    without layer norm or projection on ``StepFunction``, anything else on the sequence kernel."""
    w = weights if isinstance(weights, LSTMWeights) else LSTMWeights(*weights)
    if len(batch_sizes) > 1 or w.layer_norm_ih is not None or w.w_hr is not None:
        return cpu.lstm_layer(x, state, weights, batch_sizes, reverse, options, masks)
    extras = (w.peephole_i, w.peephole_f, w.peephole_o, *masks)
    tensors = (x, *state, w.w_ih, w.w_hh, w.b_ih, w.b_hh, *extras)
    if recorded(tensors):
        extras = () if all(t is None for t in extras) else extras
        out, hidden, cell, gates, cells = StepFunction.apply(
            x, *state, w.w_ih, w.w_hh, w.b_ih, w.b_hh, options, *extras
        )
    else:  # nothing to differentiate: the same step without autograd's bookkeeping
        out, cells, gates, _, _ = _run(x, state, w, LSTMMasks(*masks), options)
        hidden, cell = out.clone(), cells.clone()
    return out, (hidden, cell), (gates, cells)


def step_inference(
    x: Tensor, state: tuple[Tensor, Tensor] | None, w: LSTMWeights, options: LSTMOptions = PLAIN
) -> tuple[Tensor, Tensor, Tensor]:
    """One step with nothing to differentiate and no masks: ``_run``, the forward of
    ``lstm_layer`` (the same numbers), without the copies of the final states that it returns
    beside ``out``. Peepholes and the options, no layer norm or projection. x (B, I), state
    (h_0, c_0) (B, H) or None for zeros -> h_1, c_1 (B, H) and the gate activations (B, 4H)."""
    hidden, cell, gates, _, _ = _run(x, state, w, NO_MASKS, options)
    return hidden, cell, gates
