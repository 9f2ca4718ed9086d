"""Backend "torch": backpropagation through time written by hand in PyTorch ops.

One ``torch.autograd.Function`` per cell type runs one layer in one direction over packed rows
(layout in ``lstmkit.kernels``). Forward computes the input projection of all steps as one matrix
product, then runs the recurrence, one ``addmm`` per step. Backward runs the recurrence in
reverse for dh and dc only, storing the gate gradients of every row; dW_ih, dW_hh, the biases and
the input gradient are then each one matrix product over all steps.

Shapes: N rows, B sequences (= batch_sizes[0]), I inputs, H cell size, P hidden size (P = H
without projection). Gate order along 4H is PyTorch's (i, f, g, o).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable


def step_ranges(batch_sizes: Sequence[int], reverse: bool) -> list[tuple[int, int, int]]:
    """(start, stop, active) rows of every step, in the order the recurrence visits them."""
    ranges, start = [], 0
    for active in batch_sizes:
        ranges.append((start, start + active, active))
        start += active
    return ranges[::-1] if reverse else ranges


def previous_rows(batch_sizes: Sequence[int], reverse: bool, device: torch.device) -> Tensor:
    """(N,) index into ``cat([states (N, .), initial (B, .)])`` of the state each row started from.

    A row's step reads the state its sequence left at the neighbouring step (t - 1 forward,
    t + 1 in reverse), or the initial state when that neighbour does not exist for it.
    """
    sizes = torch.tensor(batch_sizes, dtype=torch.long)
    total = int(sizes.sum())
    offsets = torch.cumsum(sizes, 0) - sizes  # (T,)
    step = torch.repeat_interleave(torch.arange(len(sizes)), sizes)  # (N,)
    seq = torch.arange(total) - offsets[step]  # (N,) position in the batch
    neighbour = step + 1 if reverse else step - 1
    # one zero-sized step past each end makes neighbour -1 and T "not running"
    padded_sizes = torch.cat([sizes, sizes.new_zeros(1)])
    padded_offsets = torch.cat([offsets, offsets.new_zeros(1)])
    running = seq < padded_sizes[neighbour]
    index = torch.where(running, padded_offsets[neighbour] + seq, total + seq)
    return index.to(device)


def _input_projection(x: Tensor, w_ih: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor:
    """x W_ih^T + b_ih + b_hh for all rows at once: (N, G)."""
    if b_ih is None or b_hh is None:
        return x @ w_ih.t()
    return torch.addmm(b_ih + b_hh, x, w_ih.t())


def _linear_grads(
    needs: tuple[bool, ...],
    d_pre: Tensor,
    x: Tensor,
    h_prev: Tensor,
    w_ih: Tensor,
    has_bias: bool,
) -> tuple[Tensor | None, ...]:
    """Gradients of x, W_ih, W_hh, b_ih, b_hh from the pre-activation gradients of all rows.

    ``needs`` are the ``needs_input_grad`` flags of (x, w_ih, w_hh).
    """
    d_x = d_pre @ w_ih if needs[0] else None
    d_w_ih = d_pre.t() @ x if needs[1] else None
    d_w_hh = d_pre.t() @ h_prev if needs[2] else None
    d_b = d_pre.sum(0) if has_bias else None
    # two distinct tensors: autograd may keep a returned gradient as .grad without copying
    return d_x, d_w_ih, d_w_hh, d_b, None if d_b is None else d_b.clone()


class LSTMLayer(torch.autograd.Function):
    """One LSTM layer, one direction: (x, h0, c0, weights) -> (out (N, P), h_n (B, P), c_n (B, H))."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: Tensor,
        h0: Tensor,
        c0: Tensor,
        w_ih: Tensor,
        w_hh: Tensor,
        b_ih: Tensor | None,
        b_hh: Tensor | None,
        w_hr: Tensor | None,
        batch_sizes: Sequence[int],
        reverse: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:
        size = c0.shape[1]
        gates = _input_projection(x, w_ih, b_ih, b_hh)  # (N, 4H), activated in place step by step
        cells = x.new_empty(x.shape[0], size)  # (N, H)
        out = x.new_empty(x.shape[0], h0.shape[1])  # (N, P)
        unprojected = out if w_hr is None else x.new_empty(x.shape[0], size)  # (N, H)
        hidden, cell = h0.clone(), c0.clone()
        for start, stop, active in step_ranges(batch_sizes, reverse):
            gate = gates[start:stop]
            gate.addmm_(hidden[:active], w_hh.t())
            gate[:, : 2 * size].sigmoid_()  # input and forget gates
            gate[:, 2 * size : 3 * size].tanh_()  # candidate
            gate[:, 3 * size :].sigmoid_()  # output gate
            input_gate, forget_gate, candidate, output_gate = gate.chunk(4, 1)
            cell_t = cells[start:stop]
            torch.mul(forget_gate, cell[:active], out=cell_t)
            cell_t.addcmul_(input_gate, candidate)
            torch.mul(output_gate, cell_t.tanh(), out=unprojected[start:stop])
            if w_hr is not None:
                torch.mm(unprojected[start:stop], w_hr.t(), out=out[start:stop])
            hidden[:active] = out[start:stop]
            cell[:active] = cell_t
        ctx.save_for_backward(
            x, h0, c0, w_ih, w_hh, w_hr, gates, cells, out, None if w_hr is None else unprojected
        )
        ctx.batch_sizes, ctx.reverse, ctx.has_bias = batch_sizes, reverse, b_ih is not None
        return out, hidden, cell

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, d_out: Tensor, d_hn: Tensor, d_cn: Tensor) -> tuple:
        x, h0, c0, w_ih, w_hh, w_hr, gates, cells, out, unprojected = ctx.saved_tensors
        prev = previous_rows(ctx.batch_sizes, ctx.reverse, x.device)
        cell_prev = torch.cat([cells, c0]).index_select(0, prev)  # (N, H) C_{t-1} of every row
        d_gates = torch.empty_like(gates)  # (N, 4H) gradients of the pre-activations
        d_hidden = None if w_hr is None else torch.empty_like(out)  # (N, P) total dL/dh_t
        dh, dc = d_hn.clone(), d_cn.clone()
        for start, stop, active in reversed(step_ranges(ctx.batch_sizes, ctx.reverse)):
            dh_t = dh[:active] + d_out[start:stop]
            if w_hr is not None:
                d_hidden[start:stop] = dh_t
                dh_t = dh_t @ w_hr  # (active, H): through the projection
            input_gate, forget_gate, candidate, output_gate = gates[start:stop].chunk(4, 1)
            tanh_cell = cells[start:stop].tanh()
            dc_t = dc[:active] + dh_t * output_gate * (1 - tanh_cell * tanh_cell)
            d_i, d_f, d_g, d_o = d_gates[start:stop].chunk(4, 1)
            torch.mul(dc_t * candidate, input_gate * (1 - input_gate), out=d_i)
            torch.mul(dc_t * cell_prev[start:stop], forget_gate * (1 - forget_gate), out=d_f)
            torch.mul(dc_t * input_gate, 1 - candidate * candidate, out=d_g)
            torch.mul(dh_t * tanh_cell, output_gate * (1 - output_gate), out=d_o)
            dh[:active] = d_gates[start:stop] @ w_hh
            dc[:active] = dc_t * forget_gate
        hidden_prev = torch.cat([out, h0]).index_select(0, prev)  # (N, P) h_{t-1} of every row
        needs = ctx.needs_input_grad
        d_x, d_w_ih, d_w_hh, d_b_ih, d_b_hh = _linear_grads(
            (needs[0], needs[3], needs[4]), d_gates, x, hidden_prev, w_ih, ctx.has_bias
        )
        d_w_hr = None if w_hr is None else d_hidden.t() @ unprojected
        return d_x, dh, dc, d_w_ih, d_w_hh, d_b_ih, d_b_hh, d_w_hr, None, None


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
        hidden_prev = torch.cat([out, h0]).index_select(0, prev)
        needs = ctx.needs_input_grad
        d_x, d_w_ih, d_w_hh, d_b_ih, d_b_hh = _linear_grads(
            (needs[0], needs[2], needs[3]), d_pre, x, hidden_prev, w_ih, ctx.has_bias
        )
        return d_x, dh, d_w_ih, d_w_hh, d_b_ih, d_b_hh, None, None, None


def lstm_layer(
    x: Tensor,
    state: tuple[Tensor, ...],
    weights: tuple[Tensor | None, ...],
    batch_sizes: Sequence[int],
    reverse: bool,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """x (N, I), state = (h0 (B, P), c0 (B, H)), weights = (w_ih, w_hh, b_ih, b_hh, w_hr) with
    None where absent -> (out (N, P), (h_n, c_n))."""
    out, hidden, cell = LSTMLayer.apply(x, *state, *weights, batch_sizes, reverse)
    return out, (hidden, cell)


def rnn_layer(
    x: Tensor,
    state: tuple[Tensor, ...],
    weights: tuple[Tensor | None, ...],
    batch_sizes: Sequence[int],
    reverse: bool,
    nonlinearity: str = "tanh",
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """x (N, I), state = (h0 (B, H),), weights = (w_ih, w_hh, b_ih, b_hh) with None where
    absent -> (out (N, H), (h_n,))."""
    out, hidden = RNNLayer.apply(x, *state, *weights, batch_sizes, reverse, nonlinearity)
    return out, (hidden,)
