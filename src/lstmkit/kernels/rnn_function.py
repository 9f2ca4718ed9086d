"""The plain RNN layer's autograd Function, shared by the backends that differ only in their loops.

h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh) (or ReLU), SPEC.md's plain RNN. Forward computes
the input side of all steps at once (one matrix product with both biases) and hands the
recurrence to a backend's ``RNNLoops.forward``, which activates those rows in place. Backward
hands the reverse recurrence to ``RNNLoops.backward``, which fills the gradients of the
pre-activations; the parameter and input gradients are then one product or sum over all rows
here (``matmul``), as for the LSTM (``lstm_function``).

Shapes: N rows, B sequences, I inputs, H hidden size; layout in ``lstmkit.kernels``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from . import second_order
from .lstm_function import gather_previous, recorded
from .matmul import linear, times, weight_gradient
from .rows import previous_rows


class RNNLoops(Protocol):
    """A backend's plain-RNN recurrences over packed rows, in the order of ``rows.step_ranges``."""

    def forward(
        self, out: Tensor, hidden: Tensor, w_hh: Tensor, batch_sizes: Sequence[int], reverse: bool,
        nonlinearity: str,
    ) -> None:  # fmt: skip
        """``out`` (N, H) holds W_ih x + biases: add W_hh h_{t-1} and activate, row by row, in
        place; ``hidden`` (B, H) holds h0 and is left holding h_n."""

    def backward(
        self, d_pre: Tensor, dh: Tensor, d_out: Tensor, out: Tensor, w_hh: Tensor, batch_sizes: Sequence[int],
        reverse: bool, nonlinearity: str,
    ) -> None:  # fmt: skip
        """Fill ``d_pre`` (N, H) with dL/d(pre-activations) from ``d_out`` (N, H) and the activated
        ``out``; ``dh`` (B, H) holds dL/dh_n and is left holding dL/dh0."""


def _forward(
    x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None,
    batch_sizes: Sequence[int], reverse: bool, nonlinearity: str, loops: RNNLoops,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    bias = None if b_ih is None or b_hh is None else b_ih + b_hh
    out = linear(x, w_ih, bias)  # (N, H), activated in place step by step
    hidden = h0.detach().clone().contiguous()
    loops.forward(out, hidden, w_hh, batch_sizes, reverse, nonlinearity)
    return out, hidden


class RNNLayer(torch.autograd.Function):
    """(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, nonlinearity, loops) ->
    (out (N, H), h_n (B, H))."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, *args
    ) -> tuple[Tensor, Tensor]:
        b_ih, b_hh, batch_sizes, reverse, nonlinearity, loops = args
        out, hidden = _forward(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, nonlinearity, loops)
        ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh, out)
        ctx.batch_sizes, ctx.reverse, ctx.has_bias = batch_sizes, reverse, b_ih is not None
        ctx.nonlinearity, ctx.loops = nonlinearity, loops
        return out, hidden

    @staticmethod
    def backward(ctx: FunctionCtx, d_out: Tensor, d_hn: Tensor) -> tuple:
        x, h0, w_ih, w_hh, b_ih, b_hh, out = ctx.saved_tensors
        if second_order.wanted():  # create_graph=True
            arguments = (ctx.batch_sizes, ctx.reverse, ctx.nonlinearity)
            grads = second_order.gradients(
                "rnn", x, (h0,), (w_ih, w_hh, b_ih, b_hh), arguments, ctx.needs_input_grad, (d_out, d_hn)
            )
            return *grads, None, None, None, None
        d_pre = torch.empty_like(out)
        dh = d_hn.clone().contiguous()
        ctx.loops.backward(
            d_pre, dh, d_out.contiguous(), out, w_hh, ctx.batch_sizes, ctx.reverse, ctx.nonlinearity
        )
        prev = previous_rows(ctx.batch_sizes, ctx.reverse, x.device)
        hidden_prev = gather_previous(out, h0, prev)  # (N, H) h_{t-1} of every row
        d_x = times(d_pre, w_ih) if ctx.needs_input_grad[0] else None
        d_b_ih = d_b_hh = None
        if ctx.has_bias:
            d_b_ih = d_pre.sum(0)
            d_b_hh = d_b_ih.clone()  # distinct tensors: autograd may keep one as .grad
        d_w_ih, d_w_hh = weight_gradient(d_pre, x), weight_gradient(d_pre, hidden_prev)
        return d_x, dh, d_w_ih, d_w_hh, d_b_ih, d_b_hh, None, None, None, None


def rnn_layer_with(loops: RNNLoops):
    """A kernel entry ``rnn_layer(x, state, weights, batch_sizes, reverse, nonlinearity)`` ->
    (out (N, H), (h_n,), None) running ``loops``; state = (h0 (B, H),), weights = (w_ih, w_hh,
    b_ih, b_hh) with None where absent."""

    def rnn_layer(x, state, weights, batch_sizes, reverse, nonlinearity="tanh"):
        tensors = (x, *state, *weights)
        if recorded(tensors):
            out, hidden = RNNLayer.apply(x, *state, *weights, batch_sizes, reverse, nonlinearity, loops)
        else:  # nothing to differentiate: the same pass without autograd's bookkeeping
            out, hidden = _forward(x, *state, *weights, batch_sizes, reverse, nonlinearity, loops)
        return out, (hidden,), None

    return rnn_layer
