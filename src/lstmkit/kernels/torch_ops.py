"""Backend "torch": backpropagation through time written by hand in PyTorch ops.

The LSTM's recurrences (``TorchLoops``) run step by step as PyTorch calls, one ``addmm`` per step,
inside the shared ``lstm_function.LSTMLayer``, and the plain RNN's (``TorchRNNLoops``) inside
``rnn_function.RNNLayer``.
Every variant of ``contract``; formulas in docs/variants.md, layout in ``lstmkit.kernels``.

Shapes: N rows, B sequences (= batch_sizes[0]), I inputs, H cell size, P hidden size (P = H
without projection). Gate order along 4H is PyTorch's (i, f, g, o).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .contract import LSTMMasks, LSTMOptions, LSTMWeights
from .lstm_function import (
    Gradients,
    Loops,
    Workspace,
    layer_norm,
    layer_norm_backward,
    lstm_layer_with,
)
from .rnn_function import rnn_layer_with
from .rows import step_ranges


def _rows(mask: Tensor, start: int, stop: int) -> Tensor:
    """A zoneout mask's rows; a 0-d mask (evaluation) is the same for every row."""
    return mask if mask.dim() == 0 else mask[start:stop]


class TorchLoops(Loops):
    """The LSTM recurrences as PyTorch calls (see ``lstm_function.Loops``)."""

    SUMS_GAINS = False
    ADDS_BIAS = False
    TRANSPOSES = False

    def forward(
        self, ws: Workspace, h0: Tensor, c0: Tensor, w: LSTMWeights, masks: LSTMMasks,
        batch_sizes: Sequence[int], reverse: bool, options: LSTMOptions, x: Tensor | None = None,
        project: bool = False,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        size, clip, layer_norm_on = c0.shape[1], options.clip, w.layer_norm_ih is not None
        hidden, cell = h0.clone(), c0.clone()
        for start, stop, active in step_ranges(batch_sizes, reverse):
            a = ws.gates[start:stop]
            h_prev, c_prev = hidden[:active], cell[:active]
            h_in = h_prev if masks.recurrent is None else h_prev * masks.recurrent[:active]
            if layer_norm_on:
                hat, rstd = layer_norm(h_in @ w.w_hh.t())
                ws.hh_hat[start:stop], ws.hh_rstd[start:stop] = hat, rstd
                a.addcmul_(hat, w.layer_norm_hh)
            else:
                a.addmm_(h_in, w.w_hh.t())
            a_i, a_f, a_g, a_o = a.chunk(4, 1)
            if w.peephole_i is not None:
                a_i.addcmul_(w.peephole_i, c_prev)
            if w.peephole_f is not None:
                a_f.addcmul_(w.peephole_f, c_prev)
            if clip is not None:
                torch.le(a[:, : 3 * size].abs(), clip, out=ws.gate_inside[start:stop, : 3 * size])
                a[:, : 3 * size].clamp_(-clip, clip)
            forget_gate = a_f.sigmoid_()
            input_gate = a_i.copy_(1 - forget_gate) if options.coupled else a_i.sigmoid_()
            candidate = a_g.tanh_()
            c_new = ws.cell_new[start:stop]
            torch.mul(forget_gate, c_prev, out=c_new)
            c_new.addcmul_(input_gate, candidate)
            if w.peephole_o is not None:
                a_o.addcmul_(w.peephole_o, c_new)
            if clip is not None:
                torch.le(a_o.abs(), clip, out=ws.gate_inside[start:stop, 3 * size :])
                a_o.clamp_(-clip, clip)
            output_gate = a_o.sigmoid_()
            squashed = c_new
            if layer_norm_on:
                hat, rstd = layer_norm(c_new)
                ws.cell_hat[start:stop], ws.cell_rstd[start:stop] = hat, rstd
                squashed = torch.addcmul(w.layer_norm_cell_bias, hat, w.layer_norm_cell_weight)
            r = output_gate * squashed.tanh()
            if ws.unprojected is not None:
                ws.unprojected[start:stop] = r
                r = r @ w.w_hr.t()
            if masks.keep_hidden is not None:
                r = torch.lerp(r, h_prev, _rows(masks.keep_hidden, start, stop))
            ws.out[start:stop] = r
            if masks.keep_cell is not None:
                torch.lerp(c_new, c_prev, _rows(masks.keep_cell, start, stop), out=ws.cells[start:stop])
            hidden[:active] = ws.out[start:stop]
            cell[:active] = ws.cells[start:stop]

        return hidden, cell

    def backward(
        self, ws: Workspace, gs: Gradients, d_out: Tensor, d_hn: Tensor, d_cn: Tensor, w: LSTMWeights,
        masks: LSTMMasks, batch_sizes: Sequence[int], reverse: bool, options: LSTMOptions,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        size, clip, coupled = ws.cell_new.shape[1], options.clip, options.coupled
        layer_norm_on = w.layer_norm_ih is not None
        dh, dc = d_hn.clone(), d_cn.clone()
        for start, stop, active in reversed(step_ranges(batch_sizes, reverse)):
            dh_t = dh[:active] + d_out[start:stop]
            dc_t = dc[:active]
            dh_carry = dc_carry = None
            if masks.keep_hidden is not None:
                keep = _rows(masks.keep_hidden, start, stop)
                dh_carry, dh_t = dh_t * keep, dh_t * (1 - keep)
            if masks.keep_cell is not None:
                keep = _rows(masks.keep_cell, start, stop)
                dc_carry, dc_t = dc_t * keep, dc_t * (1 - keep)
            if gs.d_projected is not None:
                gs.d_projected[start:stop] = dh_t
                dh_t = dh_t @ w.w_hr  # (active, H)
            input_gate, forget_gate, candidate, output_gate = ws.gates[start:stop].chunk(4, 1)
            c_prev = gs.cell_prev[start:stop]
            squashed = ws.cell_new[start:stop]
            if layer_norm_on:
                squashed = torch.addcmul(
                    w.layer_norm_cell_bias, ws.cell_hat[start:stop], w.layer_norm_cell_weight
                )
            tanh_squashed = squashed.tanh()
            d_o = dh_t * tanh_squashed
            d_sq = dh_t * output_gate * (1 - tanh_squashed * tanh_squashed)
            if layer_norm_on:
                gs.d_squashed[start:stop] = d_sq
                d_sq = layer_norm_backward(
                    d_sq * w.layer_norm_cell_weight, ws.cell_hat[start:stop], ws.cell_rstd[start:stop]
                )
            d_a = gs.d_gates[start:stop]
            d_ai, d_af, d_ag, d_ao = d_a.chunk(4, 1)
            torch.mul(d_o, output_gate * (1 - output_gate), out=d_ao)
            if clip is not None:
                d_ao.mul_(ws.gate_inside[start:stop, 3 * size :])
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
                d_a[:, : 3 * size].mul_(ws.gate_inside[start:stop, : 3 * size])
            dc_prev = dc_new * forget_gate
            if w.peephole_i is not None:
                dc_prev.addcmul_(d_ai, w.peephole_i)
            if w.peephole_f is not None:
                dc_prev.addcmul_(d_af, w.peephole_f)
            if dc_carry is not None:
                dc_prev += dc_carry
            d_z = d_a
            if layer_norm_on:
                d_z = layer_norm_backward(
                    d_a * w.layer_norm_hh, ws.hh_hat[start:stop], ws.hh_rstd[start:stop]
                )
                gs.d_recurrent[start:stop] = d_z
            dh_prev = d_z @ w.w_hh
            if masks.recurrent is not None:
                dh_prev.mul_(masks.recurrent[:active])
            if dh_carry is not None:
                dh_prev += dh_carry
            dh[:active], dc[:active] = dh_prev, dc_prev

        return dh, dc


lstm_layer = lstm_layer_with(TorchLoops())


class TorchRNNLoops:
    """The plain RNN's recurrences as PyTorch calls (see ``rnn_function.RNNLoops``)."""

    def forward(
        self, out: Tensor, hidden: Tensor, w_hh: Tensor, batch_sizes: Sequence[int], reverse: bool,
        nonlinearity: str,
    ) -> None:  # fmt: skip
        for start, stop, active in step_ranges(batch_sizes, reverse):
            pre = out[start:stop].addmm_(hidden[:active], w_hh.t())
            if nonlinearity == "tanh":
                pre.tanh_()
            else:
                pre.relu_()
            hidden[:active] = pre

    def backward(
        self, d_pre: Tensor, dh: Tensor, d_out: Tensor, out: Tensor, w_hh: Tensor, batch_sizes: Sequence[int],
        reverse: bool, nonlinearity: str,
    ) -> None:  # fmt: skip
        for start, stop, active in reversed(step_ranges(batch_sizes, reverse)):
            dh_t = dh[:active] + d_out[start:stop]
            hidden = out[start:stop]
            if nonlinearity == "tanh":
                torch.mul(dh_t, 1 - hidden * hidden, out=d_pre[start:stop])
            else:
                torch.mul(dh_t, hidden > 0, out=d_pre[start:stop])
            dh[:active] = d_pre[start:stop] @ w_hh


rnn_layer = rnn_layer_with(TorchRNNLoops())
