"""The LSTM layer's autograd Function, shared by the backends that differ only in their loops.

Forward computes the input side of all steps at once (one matrix product, layer norm, biases
unless the loops add them), allocates the workspace, and hands the recurrence to a backend's
``Loops.forward``. Backward hands the reverse recurrence to ``Loops.backward``, which fills the
per-row gradients of the gate pre-activations; every parameter gradient and the input gradient
are then one product or sum over all rows here (the products in ``matmul``, on oneDNN or MKL,
whichever was the faster). Formulas in docs/variants.md; layout in ``lstmkit.kernels``.

Shapes: N rows, B sequences, I inputs, H cell size, P hidden size; gates along 4H as (i, f, g, o).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from . import second_order
from .contract import LAYER_NORM_EPS, NO_MASKS, PLAIN, LSTMMasks, LSTMOptions, LSTMWeights
from .matmul import linear, reads_transposed, times, weight_gradient
from .rows import Previous, previous_rows, row_positions

N_WEIGHTS = len(LSTMWeights._fields)


def layer_norm(z: Tensor) -> tuple[Tensor, Tensor]:
    """Each row of z (R, F) normalised: (ẑ, 1/σ) with ẑ = (z - mean) / σ, σ = sqrt(var + eps)."""
    var, mean = torch.var_mean(z, dim=-1, keepdim=True, correction=0)
    rstd = torch.rsqrt(var + LAYER_NORM_EPS)
    return (z - mean) * rstd, rstd


def layer_norm_backward(d_hat: Tensor, hat: Tensor, rstd: Tensor) -> Tensor:
    """dL/dz from dL/dẑ for ẑ = LN(z), per row."""
    mean_d = d_hat.mean(-1, keepdim=True)
    mean_dh = (d_hat * hat).mean(-1, keepdim=True)
    return rstd * (d_hat - mean_d - hat * mean_dh)


def gather_previous(states: Tensor, initial: Tensor, previous: Previous) -> Tensor:
    """Each row's previous state (N, F) from ``states`` (N, F) and ``initial`` (B, F), without
    the concatenation of the two that an index into both would need (the backward pass's
    memory peak)."""
    if previous.starts.shape[0] == states.shape[0]:  # one step: every row reads its initial state
        return initial.index_select(0, previous.sequences)
    gathered = states.index_select(0, previous.rows)
    gathered[previous.starts] = initial.index_select(0, previous.sequences)
    return gathered


class Workspace(NamedTuple):
    """What the forward recurrence writes and the backward one reads; None where an option is off."""

    gates: Tensor  # (N, 4H): in, the input side's pre-activations (biases too, unless ADDS_BIAS); out, the activations
    cell_new: Tensor  # (N, H): c'_t, before zoneout
    cells: Tensor  # (N, H): the carried c_t (cell_new itself without zoneout of c)
    out: Tensor  # (N, P): the carried h_t, the layer's output
    unprojected: Tensor | None  # (N, H): o * tanh(LN_c(c')), with a projection
    hh_hat: Tensor | None  # (N, 4H): LN(W_hh h) normalised, with layer norm
    hh_rstd: Tensor | None  # (N, 1)
    cell_hat: Tensor | None  # (N, H): LN(c') normalised, with layer norm
    cell_rstd: Tensor | None  # (N, 1)
    gate_inside: Tensor | None  # (N, 4H) bool: where clipping let the gradient through
    # for the weight gradients' products, which read these transposed (``Loops.TRANSPOSES``):
    inputs_t: Tensor | None = None  # (I, N): x.T
    previous_t: Tensor | None = None  # (P, N): the h_{t-1} of each row (times its recurrent mask), transposed
    joint_t: Tensor | None = None  # (I + P, N): where both are kept, the one buffer they are the rows of


class Gradients(NamedTuple):
    """What the backward recurrence writes; None where an option is off."""

    d_gates: Tensor  # (N, 4H): dL/d(gate pre-activations)
    d_recurrent: Tensor  # (N, 4H): dL/d(W_hh h); d_gates itself without layer norm
    d_squashed: Tensor | None  # (N, H): dL/dLN_c(c'), with layer norm (unless gains)
    d_projected: Tensor | None  # (N, P): dL/dh'_t, with a projection
    cell_prev: Tensor  # (N, H): c_{t-1} of every row (read only)
    # (6H,) float64, zeros in: the layer-norm gains' gradients summed over all rows, dL/dγ_hh (4H),
    # dL/dγ_c (H), dL/dβ_c (H), for loops that sum them in their pass (``SUMS_GAINS``)
    gains: Tensor | None = None


class Loops(Protocol):
    """A backend's recurrences over packed rows, in the visiting order of ``rows.step_ranges``.

    With ``SUMS_GAINS`` true, backward adds the layer-norm gains' gradients into ``gs.gains``
    while each row's values are at hand (``gs.d_squashed`` is then None); else they are summed
    here afterwards, from ``gs.d_squashed``: three more passes over (N, 4H) and (N, H) arrays
    that have left the cache by then (0.2-0.8 ms of a 19-20 ms training step at (100, 32, 128),
    measured old against new).

    With ``ADDS_BIAS`` true, forward gets ``ws.gates`` without the biases and adds b_ih + b_hh to
    each row as it reads it; else they are added here, in the input projection's product or
    after layer norm: one more pass over (N, 4H) (on MKL, (3200 x 128) @ (128 x 512) took 1.97 ms
    with its bias, 1.67 ms without).

    With ``TRANSPOSES`` true, forward fills ``ws.inputs_t`` (from ``x``, then given) and
    ``ws.previous_t`` where they are not None: step by step, while the rows are in cache, for
    the weight gradients on oneDNN, which otherwise copy x.T and the gathered h_{t-1}'s transpose
    first (``matmul.reads_transposed``).
    """

    SUMS_GAINS: bool
    ADDS_BIAS: bool
    TRANSPOSES: bool

    def projects_input(self, x: Tensor, w: LSTMWeights, batch_sizes: Sequence[int]) -> bool:
        """Whether ``forward`` computes the input side W_ih x itself, beside its recurrence or
        step by step inside it (asked only without layer norm, and only of loops that add the
        biases, ``ADDS_BIAS``). Never, for loops that subclass this protocol and keep this
        method."""
        return False

    def forward(
        self, ws: Workspace, h0: Tensor, c0: Tensor, w: LSTMWeights, masks: LSTMMasks,
        batch_sizes: Sequence[int], reverse: bool, options: LSTMOptions, x: Tensor | None = None,
        project: bool = False,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        """Fill ``ws``; return the final (h (B, P), c (B, H)). ``x`` (N, I) is the layer's input;
        with ``project`` (``projects_input`` said so) ``ws.gates`` arrives unfilled, for
        x @ W_ih.T."""

    def backward(
        self, ws: Workspace, gs: Gradients, d_out: Tensor, d_hn: Tensor, d_cn: Tensor, w: LSTMWeights,
        masks: LSTMMasks, batch_sizes: Sequence[int], reverse: bool, options: LSTMOptions,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        """Fill ``gs``; return (dL/dh0 (B, P), dL/dc0 (B, H))."""


def _workspace(
    pre: Tensor, x: Tensor, h0: Tensor, c0: Tensor, w: LSTMWeights, masks: LSTMMasks,
    options: LSTMOptions, transposes: tuple[bool, bool],
) -> Workspace:  # fmt: skip
    rows, size = pre.shape[0], c0.shape[1]
    new = pre.new_empty
    layer_norm_on = w.layer_norm_ih is not None
    cell_new = new(rows, size)
    inputs, hiddens = x.shape[1], h0.shape[1]
    # both in one buffer: without layer norm W_ih's and W_hh's gradients are then one product
    # (``LSTMLayer.backward``), 0.99 of a training step's time at (100, 32, 128) and (100, 64,
    # 128) on the `znver5` (one process, shuffled order with nn.LSTM's)
    joint_t = new(inputs + hiddens, rows) if all(transposes) else None
    if joint_t is not None:
        inputs_t, previous_t = joint_t.split([inputs, hiddens])
    else:
        inputs_t = new(inputs, rows) if transposes[0] else None
        previous_t = new(hiddens, rows) if transposes[1] else None
    return Workspace(
        gates=pre,
        cell_new=cell_new,
        cells=cell_new if masks.keep_cell is None else new(rows, size),
        out=new(rows, h0.shape[1]),
        unprojected=None if w.w_hr is None else new(rows, size),
        hh_hat=new(rows, 4 * size) if layer_norm_on else None,
        hh_rstd=new(rows, 1) if layer_norm_on else None,
        cell_hat=new(rows, size) if layer_norm_on else None,
        cell_rstd=new(rows, 1) if layer_norm_on else None,
        gate_inside=None
        if options.clip is None
        else torch.empty(rows, 4 * size, dtype=torch.bool, device=pre.device),
        inputs_t=inputs_t,
        previous_t=previous_t,
        joint_t=joint_t,
    )


# The most floats of transposes, N x (I + P), that a layer direction keeps (``_transposes``).
# Training on the `znver5`, kept / copied (one process, interleaved): (100, 32, 128), 0.8M,
# the two products 2.97 / 3.99 ms and the gather of h_{t-1} 0.15 / 0.31 for 0.36 ms more of
# forward kernel, whole steps 0.95-0.97; (100, 64, 256), 3.3M, 17.8 / 21.0 and 0.46 / 0.92 for
# 2.2 ms more, whole steps 0.98-1.01; 2 layers bidirectional (50, 128, 256), 3.3M and 4.9M,
# 1.00. Above it the forward's writes cost what the copies saved, and the transposes raised a
# step's peak (80.4 to 87.5 MiB at (100, 64, 256), 219 to 277 MiB bidirectional).
MOST_TRANSPOSED = 2**21


def _transposes(
    x: Tensor, h0: Tensor, w: LSTMWeights, loops: Loops, wanted: tuple[bool, bool]
) -> tuple[bool, bool]:
    """Whether forward keeps (x.T, the h_{t-1}'s transpose): for the weight gradients of W_ih and
    W_hh that ``wanted`` asks, where they read them so (``matmul.reads_transposed``), up to
    ``MOST_TRANSPOSED`` floats."""
    rows, outputs = x.shape[0], w.w_hh.shape[0]
    if not loops.TRANSPOSES or rows * (x.shape[1] + h0.shape[1]) > MOST_TRANSPOSED:
        return False, False
    return (
        wanted[0] and reads_transposed(x, rows, x.shape[1], outputs),
        wanted[1] and reads_transposed(x, rows, h0.shape[1], outputs),
    )


def _forward(
    x: Tensor, h0: Tensor, c0: Tensor, w: LSTMWeights, masks: LSTMMasks, batch_sizes: Sequence[int],
    reverse: bool, options: LSTMOptions, loops: Loops, wanted: tuple[bool, bool] = (False, False),
) -> tuple[Workspace, Tensor, Tensor, tuple[Tensor | None, Tensor | None, Tensor | None]]:  # fmt: skip
    """The forward pass: (workspace, h_n, c_n, (input side before layer norm, its mean, 1/σ)).
    ``wanted``: whether the backward pass will take W_ih's and W_hh's gradients."""
    ih_input = ih_mean = ih_rstd = None
    bias = None if w.b_ih is None or loops.ADDS_BIAS else w.b_ih + w.b_hh
    projecting = w.layer_norm_ih is None and loops.ADDS_BIAS and loops.projects_input(x, w, batch_sizes)
    if projecting:
        pre = x.new_empty(x.shape[0], w.w_ih.shape[0])
    elif w.layer_norm_ih is None:
        pre = linear(x, w.w_ih, bias)  # (N, 4H): the input side of every step at once
    else:  # one fused pass; its backward is aten's too
        ih_input = linear(x, w.w_ih)
        pre, ih_mean, ih_rstd = torch.native_layer_norm(
            ih_input, ih_input.shape[1:], w.layer_norm_ih, None, LAYER_NORM_EPS
        )
        if bias is not None:
            pre += bias
    ws = _workspace(pre, x, h0, c0, w, masks, options, _transposes(x, h0, w, loops, wanted))
    hidden, cell = loops.forward(ws, h0, c0, w, masks, batch_sizes, reverse, options, x, projecting)
    return ws, hidden, cell, (ih_input, ih_mean, ih_rstd)


class LSTMLayer(torch.autograd.Function):
    """(x, h0, c0, *weights, *masks, batch_sizes, reverse, options, loops) ->
    (out (N, P), h_n (B, P), c_n (B, H), gates (N, 4H), cells (N, H)).

    ``gates`` (the activations i, f, g, o) and ``cells`` (the carried c_t) are the workspace's own
    buffers, returned for introspection and not differentiable. A backward asked to build a graph
    of itself returns ``second_order``'s gradients instead of the loops'.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, h0: Tensor, c0: Tensor, *args) -> tuple[Tensor, ...]:
        w = LSTMWeights(*args[:N_WEIGHTS])
        masks = LSTMMasks(*args[N_WEIGHTS : N_WEIGHTS + 3])
        batch_sizes, reverse, options, loops = args[N_WEIGHTS + 3 :]
        wanted = ctx.needs_input_grad[3], ctx.needs_input_grad[4]  # W_ih's, W_hh's
        ws, hidden, cell, layer_norm_ih = _forward(
            x, h0, c0, w, masks, batch_sizes, reverse, options, loops, wanted
        )
        ctx.save_for_backward(x, h0, c0, *w, *masks, *ws, *layer_norm_ih)
        ctx.batch_sizes, ctx.reverse, ctx.options, ctx.loops = batch_sizes, reverse, options, loops
        ctx.mark_non_differentiable(ws.gates, ws.cells)
        # otherwise autograd hands backward zeros for gates and cells, (N, 5H) never read
        ctx.set_materialize_grads(False)
        return ws.out, hidden, cell, ws.gates, ws.cells

    @staticmethod
    def backward(ctx: FunctionCtx, d_out: Tensor, d_hn: Tensor, d_cn: Tensor, *_: Tensor) -> tuple:
        saved = ctx.saved_tensors
        x, h0, c0 = saved[:3]
        w = LSTMWeights(*saved[3 : 3 + N_WEIGHTS])
        masks = LSTMMasks(*saved[3 + N_WEIGHTS : 6 + N_WEIGHTS])
        if second_order.wanted():  # create_graph=True
            arguments = (ctx.batch_sizes, ctx.reverse, ctx.options, masks)
            grads = second_order.gradients(
                "lstm", x, (h0, c0), w, arguments, ctx.needs_input_grad, (d_out, d_hn, d_cn)
            )
            return *grads, None, None, None, None, None, None, None
        ws = Workspace(*saved[6 + N_WEIGHTS : 6 + N_WEIGHTS + len(Workspace._fields)])
        ih_input, ih_mean, ih_rstd = saved[-3:]
        layer_norm_on = w.layer_norm_ih is not None

        prev = previous_rows(ctx.batch_sizes, ctx.reverse, x.device)
        d_gates = torch.empty_like(ws.gates)
        sums_gains = layer_norm_on and ctx.loops.SUMS_GAINS
        size = c0.shape[1]
        gs = Gradients(
            d_gates=d_gates,
            d_recurrent=torch.empty_like(ws.gates) if layer_norm_on else d_gates,
            d_squashed=torch.empty_like(ws.cell_new) if layer_norm_on and not sums_gains else None,
            d_projected=None if w.w_hr is None else torch.empty_like(ws.out),
            cell_prev=gather_previous(ws.cells, c0, prev),
            gains=torch.zeros(6 * size, dtype=torch.float64, device=x.device) if sums_gains else None,
        )
        d_out, d_hn, d_cn = (
            torch.zeros_like(like) if d is None else d.contiguous()
            for d, like in ((d_out, ws.out), (d_hn, h0), (d_cn, c0))
        )  # None: that output did not reach the loss
        dh, dc = ctx.loops.backward(
            ws, gs, d_out, d_hn, d_cn, w, masks, ctx.batch_sizes, ctx.reverse, ctx.options
        )  # fmt: skip

        if w.peephole_i is None and w.peephole_f is None:
            gs = gs._replace(cell_prev=None)  # no longer needed: free it before the next peak
        grads = dict.fromkeys(LSTMWeights._fields)
        if ws.joint_t is not None and not layer_norm_on:
            # d_recurrent is d_gates: W_ih's and W_hh's gradients are one product, [x | h_{t-1}]'s
            grads["w_ih"], grads["w_hh"] = weight_gradient(d_gates, ws.joint_t.t()).split(
                [x.shape[1], h0.shape[1]], dim=1
            )
        elif ws.previous_t is not None:
            grads["w_hh"] = weight_gradient(gs.d_recurrent, ws.previous_t.t())
        else:
            # h_{t-1} of every row (N, P), freed before d_x exists: the two are the pass's
            # largest temporaries after d_gates
            hidden_in = gather_previous(ws.out, h0, prev)
            if masks.recurrent is not None:
                hidden_in.mul_(masks.recurrent.index_select(0, row_positions(ctx.batch_sizes, x.device)))
            grads["w_hh"] = weight_gradient(gs.d_recurrent, hidden_in)
            del hidden_in
        d_input_side = d_gates  # (N, 4H) dL/d(W_ih x)
        if layer_norm_on:
            if sums_gains:
                gains = gs.gains.to(d_gates.dtype).split([4 * size, size, size])
            else:
                gains = (
                    (d_gates * ws.hh_hat).sum(0),
                    (gs.d_squashed * ws.cell_hat).sum(0),
                    gs.d_squashed.sum(0),
                )
            grads["layer_norm_hh"], grads["layer_norm_cell_weight"], grads["layer_norm_cell_bias"] = gains
            d_input_side, grads["layer_norm_ih"], _ = torch.ops.aten.native_layer_norm_backward(
                d_gates,
                ih_input,
                ih_input.shape[1:],
                ih_mean,
                ih_rstd,
                w.layer_norm_ih,
                None,
                [True, True, False],
            )
        # before d_x exists: on oneDNN the weight gradient copies x's transpose (N x I) first
        if grads["w_ih"] is None:
            grads["w_ih"] = weight_gradient(d_input_side, x if ws.inputs_t is None else ws.inputs_t.t())
        d_x = times(d_input_side, w.w_ih) if ctx.needs_input_grad[0] else None
        if w.b_ih is not None:
            grads["b_ih"] = d_gates.sum(0)
            grads["b_hh"] = grads["b_ih"].clone()  # distinct tensors: autograd may keep one as .grad
        if w.w_hr is not None:
            grads["w_hr"] = weight_gradient(gs.d_projected, ws.unprojected)
        d_i, d_f, _, d_o = d_gates.chunk(4, 1)
        for name, d_pre, c in (
            ("peephole_i", d_i, gs.cell_prev),
            ("peephole_f", d_f, gs.cell_prev),
            ("peephole_o", d_o, ws.cell_new),
        ):
            if getattr(w, name) is not None:
                grads[name] = (d_pre * c).sum(0)
        return d_x, dh, dc, *grads.values(), None, None, None, None, None, None, None


def recorded(tensors: Sequence[Tensor | None]) -> bool:
    """Whether autograd records a call on ``tensors``: grad mode on and one of them requires grad
    (else a layer runs its forward alone, without a Function's bookkeeping)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def lstm_layer_with(loops: Loops):
    """A kernel entry ``lstm_layer(x, state, weights, batch_sizes, reverse, options, masks)``
    -> (out (N, P), (h_n, c_n), (gates (N, 4H), cells (N, H))) running ``loops``."""

    def lstm_layer(x, state, weights, batch_sizes, reverse, options=PLAIN, masks=NO_MASKS):
        tensors = (x, *state, *weights, *masks)
        if recorded(tensors):
            out, hidden, cell, gates, cells = LSTMLayer.apply(
                x, *state, *weights, *masks, batch_sizes, reverse, options, loops
            )
            return out, (hidden, cell), (gates, cells)
        # nothing to differentiate (inference, frozen weights): the same pass without autograd's
        # bookkeeping, which cost about 15 µs a call (an LSTMCell step took 51 µs with it)
        ws, hidden, cell, _ = _forward(
            x, *state, LSTMWeights(*weights), LSTMMasks(*masks), batch_sizes, reverse, options, loops
        )
        return ws.out, (hidden, cell), (ws.gates, ws.cells)

    return lstm_layer
