"""Backend "torch": backpropagation through time written by hand in PyTorch ops.

One ``torch.autograd.Function`` per cell type runs one layer in one direction over packed rows
(layout in ``lstmkit.kernels``), with every LSTM variant of ``contract`` (formulas in
``docs/variants.md``). Forward computes the input projection of all steps as one matrix product,
then runs the recurrence, one ``addmm`` per step. Backward runs the recurrence in reverse for dh
and dc only, storing the gate gradients of every row; dW_ih, dW_hh, the biases, the peepholes,
the layer-norm gains and the input gradient are then each one product or sum over all steps.

Shapes: N rows, B sequences (= batch_sizes[0]), I inputs, H cell size, P hidden size (P = H
without projection). Gate order along 4H is PyTorch's (i, f, g, o).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from .contract import LAYER_NORM_EPS, NO_MASKS, PLAIN, LSTMMasks, LSTMOptions, LSTMWeights


def step_ranges(batch_sizes: Sequence[int], reverse: bool) -> list[tuple[int, int, int]]:
    """(start, stop, active) rows of every step, in the order the recurrence visits them."""
    ranges, start = [], 0
    for active in batch_sizes:
        ranges.append((start, start + active, active))
        start += active
    return ranges[::-1] if reverse else ranges


def _coordinates(batch_sizes: Sequence[int]) -> tuple[Tensor, Tensor]:
    """(step (N,), position in the batch (N,)) of every packed row."""
    sizes = torch.tensor(batch_sizes, dtype=torch.long)
    step = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    offsets = torch.cumsum(sizes, 0) - sizes  # (T,) first row of each step
    return step, torch.arange(int(sizes.sum())) - offsets[step]


def row_positions(batch_sizes: Sequence[int], device: torch.device) -> Tensor:
    """(N,) position in the batch of every packed row."""
    return _coordinates(batch_sizes)[1].to(device)


def previous_rows(batch_sizes: Sequence[int], reverse: bool, device: torch.device) -> Tensor:
    """(N,) index into ``cat([states (N, .), initial (B, .)])`` of the state each row started from.

    A row's step reads the state its sequence left at the neighbouring step (t - 1 forward,
    t + 1 in reverse), or the initial state when that neighbour does not exist for it.
    """
    step, seq = _coordinates(batch_sizes)
    sizes = torch.tensor(batch_sizes, dtype=torch.long)
    offsets = torch.cumsum(sizes, 0) - sizes
    neighbour = step + 1 if reverse else step - 1
    # one zero-sized step past each end makes neighbours -1 and T "not running"
    padded_sizes = torch.cat([sizes, sizes.new_zeros(1)])
    padded_offsets = torch.cat([offsets, offsets.new_zeros(1)])
    running = seq < padded_sizes[neighbour]
    index = torch.where(running, padded_offsets[neighbour] + seq, len(seq) + seq)
    return index.to(device)


def _input_projection(x: Tensor, w_ih: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor:
    """x W_ih^T + b_ih + b_hh for all rows at once: (N, G)."""
    if b_ih is None or b_hh is None:
        return x @ w_ih.t()
    return torch.addmm(b_ih + b_hh, x, w_ih.t())


def _layer_norm(z: Tensor) -> tuple[Tensor, Tensor]:
    """Each row of z (R, F) normalised: (ẑ, 1/σ) with ẑ = (z - mean) / σ, σ = sqrt(var + eps)."""
    var, mean = torch.var_mean(z, dim=-1, keepdim=True, correction=0)
    rstd = torch.rsqrt(var + LAYER_NORM_EPS)
    return (z - mean) * rstd, rstd


def _layer_norm_backward(d_hat: Tensor, hat: Tensor, rstd: Tensor) -> Tensor:
    """dL/dz from dL/dẑ for ẑ = LN(z), per row."""
    mean_d = d_hat.mean(-1, keepdim=True)
    mean_dh = (d_hat * hat).mean(-1, keepdim=True)
    return rstd * (d_hat - mean_d - hat * mean_dh)


def _rows(mask: Tensor, start: int, stop: int) -> Tensor:
    """A zoneout mask's rows; a 0-d mask (evaluation) is the same for every row."""
    return mask if mask.dim() == 0 else mask[start:stop]


N_WEIGHTS = len(LSTMWeights._fields)


class LSTMLayer(torch.autograd.Function):
    """One LSTM layer, one direction, every variant of ``contract``:
    (x, h0, c0, *weights, *masks, batch_sizes, reverse, options) ->
    (out (N, P), h_n (B, P), c_n (B, H), gates (N, 4H), cells (N, H)).

    ``gates`` are the activations (i, f, g, o) and ``cells`` the carried c_t of every row, for
    introspection; they are the forward's own buffers, not differentiable.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, h0: Tensor, c0: Tensor, *args) -> tuple[Tensor, ...]:
        w = LSTMWeights(*args[:N_WEIGHTS])
        masks = LSTMMasks(*args[N_WEIGHTS : N_WEIGHTS + 3])
        batch_sizes, reverse, options = args[N_WEIGHTS + 3 :]
        rows, size = x.shape[0], c0.shape[1]
        layer_norm, clip = w.layer_norm_ih is not None, options.clip
        new = x.new_empty

        pre = x @ w.w_ih.t()  # (N, 4H)
        ih_hat = ih_rstd = hh_hat = hh_rstd = cell_hat = cell_rstd = None
        if layer_norm:
            ih_hat, ih_rstd = _layer_norm(pre)
            pre = ih_hat * w.layer_norm_ih
            hh_hat, hh_rstd = new(rows, 4 * size), new(rows, 1)
            cell_hat, cell_rstd = new(rows, size), new(rows, 1)
        if w.b_ih is not None:
            pre += w.b_ih + w.b_hh
        gates = pre  # (N, 4H) pre-activations, activated in place step by step
        cell_new = new(rows, size)  # (N, H) c'_t, before zoneout
        cells = cell_new if masks.keep_cell is None else new(rows, size)  # (N, H) carried c_t
        out = new(rows, h0.shape[1])  # (N, P) carried h_t
        unprojected = None if w.w_hr is None else new(rows, size)  # (N, H) o * tanh(c)
        gate_inside = None  # (N, 4H) where clamping let the gradient through
        if clip is not None:
            gate_inside = torch.empty(rows, 4 * size, dtype=torch.bool, device=x.device)

        hidden, cell = h0.clone(), c0.clone()
        for start, stop, active in step_ranges(batch_sizes, reverse):
            a = gates[start:stop]
            h_prev, c_prev = hidden[:active], cell[:active]
            h_in = h_prev if masks.recurrent is None else h_prev * masks.recurrent[:active]
            if layer_norm:
                hat, rstd = _layer_norm(h_in @ w.w_hh.t())
                hh_hat[start:stop], hh_rstd[start:stop] = hat, rstd
                a.addcmul_(hat, w.layer_norm_hh)
            else:
                a.addmm_(h_in, w.w_hh.t())
            a_i, a_f, a_g, a_o = a.chunk(4, 1)
            if w.peephole_i is not None:
                a_i.addcmul_(w.peephole_i, c_prev)
            if w.peephole_f is not None:
                a_f.addcmul_(w.peephole_f, c_prev)
            if clip is not None:
                torch.le(a[:, : 3 * size].abs(), clip, out=gate_inside[start:stop, : 3 * size])
                a[:, : 3 * size].clamp_(-clip, clip)
            forget_gate = a_f.sigmoid_()
            input_gate = a_i.copy_(1 - forget_gate) if options.coupled else a_i.sigmoid_()
            candidate = a_g.tanh_()
            c_new = cell_new[start:stop]
            torch.mul(forget_gate, c_prev, out=c_new)
            c_new.addcmul_(input_gate, candidate)
            if w.peephole_o is not None:
                a_o.addcmul_(w.peephole_o, c_new)
            if clip is not None:
                torch.le(a_o.abs(), clip, out=gate_inside[start:stop, 3 * size :])
                a_o.clamp_(-clip, clip)
            output_gate = a_o.sigmoid_()
            squashed = c_new
            if layer_norm:
                hat, rstd = _layer_norm(c_new)
                cell_hat[start:stop], cell_rstd[start:stop] = hat, rstd
                squashed = torch.addcmul(w.layer_norm_cell_bias, hat, w.layer_norm_cell_weight)
            r = output_gate * squashed.tanh()
            if unprojected is not None:
                unprojected[start:stop] = r
                r = r @ w.w_hr.t()
            if masks.keep_hidden is not None:
                r = torch.lerp(r, h_prev, _rows(masks.keep_hidden, start, stop))
            out[start:stop] = r
            if masks.keep_cell is not None:
                torch.lerp(c_new, c_prev, _rows(masks.keep_cell, start, stop), out=cells[start:stop])
            hidden[:active] = out[start:stop]
            cell[:active] = cells[start:stop]

        ctx.save_for_backward(
            x, h0, c0, *w, *masks, gates, cell_new, cells, out, unprojected,
            ih_hat, ih_rstd, hh_hat, hh_rstd, cell_hat, cell_rstd, gate_inside,
        )  # fmt: skip
        ctx.batch_sizes, ctx.reverse, ctx.options = batch_sizes, reverse, options
        ctx.mark_non_differentiable(gates, cells)
        return out, hidden, cell, gates, cells

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, d_out: Tensor, d_hn: Tensor, d_cn: Tensor, *_: Tensor) -> tuple:
        saved = ctx.saved_tensors
        x, h0, c0 = saved[:3]
        w = LSTMWeights(*saved[3 : 3 + N_WEIGHTS])
        masks = LSTMMasks(*saved[3 + N_WEIGHTS : 6 + N_WEIGHTS])
        (gates, cell_new, cells, out, unprojected, ih_hat, ih_rstd, hh_hat, hh_rstd,
         cell_hat, cell_rstd, gate_inside) = saved[6 + N_WEIGHTS :]  # fmt: skip
        size, clip, coupled = c0.shape[1], ctx.options.clip, ctx.options.coupled
        layer_norm = w.layer_norm_ih is not None

        prev = previous_rows(ctx.batch_sizes, ctx.reverse, x.device)
        cell_prev = torch.cat([cells, c0]).index_select(0, prev)  # (N, H) c_{t-1} of every row
        d_gates = torch.empty_like(gates)  # (N, 4H) dL/d(gate pre-activations)
        d_recurrent = torch.empty_like(gates) if layer_norm else d_gates  # (N, 4H) dL/d(W_hh h)
        d_squashed = torch.empty_like(cell_new) if layer_norm else None  # (N, H) dL/dLN(c)
        d_projected = None if w.w_hr is None else torch.empty_like(out)  # (N, P) dL/dh'_t
        dh, dc = d_hn.clone(), d_cn.clone()
        for start, stop, active in reversed(step_ranges(ctx.batch_sizes, ctx.reverse)):
            dh_t = dh[:active] + d_out[start:stop]
            dc_t = dc[:active]
            dh_carry = dc_carry = None
            if masks.keep_hidden is not None:
                keep = _rows(masks.keep_hidden, start, stop)
                dh_carry, dh_t = dh_t * keep, dh_t * (1 - keep)
            if masks.keep_cell is not None:
                keep = _rows(masks.keep_cell, start, stop)
                dc_carry, dc_t = dc_t * keep, dc_t * (1 - keep)
            if d_projected is not None:
                d_projected[start:stop] = dh_t
                dh_t = dh_t @ w.w_hr  # (active, H)
            input_gate, forget_gate, candidate, output_gate = gates[start:stop].chunk(4, 1)
            c_prev = cell_prev[start:stop]
            squashed = cell_new[start:stop]
            if layer_norm:
                squashed = torch.addcmul(
                    w.layer_norm_cell_bias, cell_hat[start:stop], w.layer_norm_cell_weight
                )
            tanh_squashed = squashed.tanh()
            d_o = dh_t * tanh_squashed
            d_sq = dh_t * output_gate * (1 - tanh_squashed * tanh_squashed)
            if layer_norm:
                d_squashed[start:stop] = d_sq
                d_sq = _layer_norm_backward(
                    d_sq * w.layer_norm_cell_weight, cell_hat[start:stop], cell_rstd[start:stop]
                )
            d_a = d_gates[start:stop]
            d_ai, d_af, d_ag, d_ao = d_a.chunk(4, 1)
            torch.mul(d_o, output_gate * (1 - output_gate), out=d_ao)
            if clip is not None:
                d_ao.mul_(gate_inside[start:stop, 3 * size :])
            dc_new = dc_t + d_sq
            if w.peephole_o is not None:
                dc_new.addcmul_(d_ao, w.peephole_o)
            torch.mul(dc_new * input_gate, 1 - candidate * candidate, out=d_ag)
            d_input = dc_new * candidate
            d_forget = dc_new * c_prev
            if coupled:  # i = 1 - f: the forget gate takes the input gate's gradient, negated
                d_forget.sub_(d_input)
                d_ai.zero_()
            else:
                torch.mul(d_input, input_gate * (1 - input_gate), out=d_ai)
            torch.mul(d_forget, forget_gate * (1 - forget_gate), out=d_af)
            if clip is not None:
                d_a[:, : 3 * size].mul_(gate_inside[start:stop, : 3 * size])
            dc_prev = dc_new * forget_gate
            if w.peephole_i is not None:
                dc_prev.addcmul_(d_ai, w.peephole_i)
            if w.peephole_f is not None:
                dc_prev.addcmul_(d_af, w.peephole_f)
            if dc_carry is not None:
                dc_prev += dc_carry
            d_z = d_a
            if layer_norm:
                d_z = _layer_norm_backward(d_a * w.layer_norm_hh, hh_hat[start:stop], hh_rstd[start:stop])
                d_recurrent[start:stop] = d_z
            dh_prev = d_z @ w.w_hh
            if masks.recurrent is not None:
                dh_prev.mul_(masks.recurrent[:active])
            if dh_carry is not None:
                dh_prev += dh_carry
            dh[:active], dc[:active] = dh_prev, dc_prev

        needs = ctx.needs_input_grad
        hidden_in = torch.cat([out, h0]).index_select(0, prev)  # (N, P) h_{t-1} of every row
        if masks.recurrent is not None:
            hidden_in.mul_(masks.recurrent.index_select(0, row_positions(ctx.batch_sizes, x.device)))
        d_input_side = d_gates  # (N, 4H) dL/d(W_ih x)
        grads = dict.fromkeys(LSTMWeights._fields)
        if layer_norm:
            grads["layer_norm_ih"] = (d_gates * ih_hat).sum(0)
            grads["layer_norm_hh"] = (d_gates * hh_hat).sum(0)
            grads["layer_norm_cell_weight"] = (d_squashed * cell_hat).sum(0)
            grads["layer_norm_cell_bias"] = d_squashed.sum(0)
            d_input_side = _layer_norm_backward(d_gates * w.layer_norm_ih, ih_hat, ih_rstd)
        d_x = d_input_side @ w.w_ih if needs[0] else None
        grads["w_ih"] = d_input_side.t() @ x
        grads["w_hh"] = d_recurrent.t() @ hidden_in
        if w.b_ih is not None:
            grads["b_ih"] = d_gates.sum(0)
            grads["b_hh"] = grads["b_ih"].clone()  # distinct tensors: autograd may keep one as .grad
        if w.w_hr is not None:
            grads["w_hr"] = d_projected.t() @ unprojected
        d_i, d_f, _, d_o = d_gates.chunk(4, 1)
        for name, d_pre, c in (
            ("peephole_i", d_i, cell_prev),
            ("peephole_f", d_f, cell_prev),
            ("peephole_o", d_o, cell_new),
        ):
            if getattr(w, name) is not None:
                grads[name] = (d_pre * c).sum(0)
        return d_x, dh, dc, *grads.values(), None, None, None, None, None, None


class RNNLayer(torch.autograd.Function):
    """One plain-RNN layer, one direction: (x, h0, weights) -> (out (N, H), h_n (B, H))."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: Tensor,
        h0: Tensor,
        w_ih: Tensor,
        w_hh: Tensor,
        b_ih: Tensor | None,
        b_hh: Tensor | None,
        batch_sizes: Sequence[int],
        reverse: bool,
        nonlinearity: str,
    ) -> tuple[Tensor, Tensor]:
        out = _input_projection(x, w_ih, b_ih, b_hh)  # (N, H), activated in place step by step
        hidden = h0.clone()
        for start, stop, active in step_ranges(batch_sizes, reverse):
            pre = out[start:stop].addmm_(hidden[:active], w_hh.t())
            if nonlinearity == "tanh":
                pre.tanh_()
            else:
                pre.relu_()
            hidden[:active] = pre
        ctx.save_for_backward(x, h0, w_ih, w_hh, out)
        ctx.batch_sizes, ctx.reverse, ctx.has_bias = batch_sizes, reverse, b_ih is not None
        ctx.nonlinearity = nonlinearity
        return out, hidden

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, d_out: Tensor, d_hn: Tensor) -> tuple:
        x, h0, w_ih, w_hh, out = ctx.saved_tensors
        d_pre = torch.empty_like(out)
        dh = d_hn.clone()
        for start, stop, active in reversed(step_ranges(ctx.batch_sizes, ctx.reverse)):
            dh_t = dh[:active] + d_out[start:stop]
            hidden = out[start:stop]
            if ctx.nonlinearity == "tanh":
                torch.mul(dh_t, 1 - hidden * hidden, out=d_pre[start:stop])
            else:
                torch.mul(dh_t, hidden > 0, out=d_pre[start:stop])
            dh[:active] = d_pre[start:stop] @ w_hh
        prev = previous_rows(ctx.batch_sizes, ctx.reverse, x.device)
        hidden_prev = torch.cat([out, h0]).index_select(0, prev)  # (N, H) h_{t-1} of every row
        d_x = d_pre @ w_ih if ctx.needs_input_grad[0] else None
        d_b_ih = d_b_hh = None
        if ctx.has_bias:
            d_b_ih = d_pre.sum(0)
            d_b_hh = d_b_ih.clone()  # distinct tensors: autograd may keep one as .grad
        return d_x, dh, d_pre.t() @ x, d_pre.t() @ hidden_prev, d_b_ih, d_b_hh, None, None, None


def lstm_layer(
    x: Tensor,
    state: tuple[Tensor, ...],
    weights: LSTMWeights,
    batch_sizes: Sequence[int],
    reverse: bool,
    options: LSTMOptions = PLAIN,
    masks: LSTMMasks = NO_MASKS,
) -> tuple[Tensor, tuple[Tensor, ...], tuple[Tensor, Tensor]]:
    """x (N, I), state = (h0 (B, P), c0 (B, H)) -> (out (N, P), (h_n, c_n), (gates (N, 4H), cells (N, H)))."""
    out, hidden, cell, gates, cells = LSTMLayer.apply(
        x, *state, *weights, *masks, batch_sizes, reverse, options
    )
    return out, (hidden, cell), (gates, cells)


def rnn_layer(
    x: Tensor,
    state: tuple[Tensor, ...],
    weights: tuple[Tensor | None, ...],
    batch_sizes: Sequence[int],
    reverse: bool,
    nonlinearity: str = "tanh",
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """x (N, I), state = (h0 (B, H),), weights = (w_ih, w_hh, b_ih, b_hh) with None where
    absent -> (out (N, H), (h_n,), None)."""
    out, hidden = RNNLayer.apply(x, *state, *weights, batch_sizes, reverse, nonlinearity)
    return out, (hidden,), None
