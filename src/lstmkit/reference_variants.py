"""Every LSTM variant of docs/variants.md, written step by step from its formulas, plain autograd.

The oracle of the production kernels for the variant options, and backend "reference" of
``lstmkit.LSTM``. It shares no code with the kernels: layer norm is ``torch.nn.functional``'s,
clipping is ``torch.clamp``, gradients are autograd's. With every option off it is the textbook
cell of ``lstmkit.reference`` (a test checks so).

Shapes: T steps, B sequences, I inputs, H cell size, P hidden size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .kernels.contract import LAYER_NORM_EPS, NO_MASKS, PLAIN, LSTMMasks, LSTMOptions, LSTMWeights


def lstm_cell(
    x: Tensor,
    state: tuple[Tensor, Tensor],
    w: LSTMWeights,
    options: LSTMOptions = PLAIN,
    recurrent: Tensor | None = None,
    keep_cell: Tensor | None = None,
    keep_hidden: Tensor | None = None,
) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
    """One step. x (B, I), state (h (B, P), c (B, H)); masks as ``LSTMMasks`` for this step.

    Returns (hidden, cell, (input_gate, forget_gate, candidate, output_gate)).
    """
    h_prev, c_prev = state
    size = c_prev.shape[1]

    def clip(a: Tensor) -> Tensor:
        return a if options.clip is None else torch.clamp(a, -options.clip, options.clip)

    h_in = h_prev if recurrent is None else h_prev * recurrent  # variational recurrent dropout
    from_x = x @ w.w_ih.T  # (B, 4H)
    from_h = h_in @ w.w_hh.T  # (B, 4H)
    if w.layer_norm_ih is not None:
        from_x = F.layer_norm(from_x, (4 * size,), weight=w.layer_norm_ih, eps=LAYER_NORM_EPS)
        from_h = F.layer_norm(from_h, (4 * size,), weight=w.layer_norm_hh, eps=LAYER_NORM_EPS)
    pre = from_x + from_h
    if w.b_ih is not None:
        pre = pre + w.b_ih + w.b_hh
    a_i, a_f, a_g, a_o = pre.chunk(4, 1)
    if w.peephole_i is not None:
        a_i = a_i + w.peephole_i * c_prev
    if w.peephole_f is not None:
        a_f = a_f + w.peephole_f * c_prev

    forget_gate = torch.sigmoid(clip(a_f))
    input_gate = 1 - forget_gate if options.coupled else torch.sigmoid(clip(a_i))
    candidate = torch.tanh(clip(a_g))
    cell = forget_gate * c_prev + input_gate * candidate
    if w.peephole_o is not None:
        a_o = a_o + w.peephole_o * cell
    output_gate = torch.sigmoid(clip(a_o))
    squashed = cell
    if w.layer_norm_cell_weight is not None:
        squashed = F.layer_norm(
            cell, (size,), w.layer_norm_cell_weight, w.layer_norm_cell_bias, eps=LAYER_NORM_EPS
        )
    hidden = output_gate * torch.tanh(squashed)
    if w.w_hr is not None:
        hidden = hidden @ w.w_hr.T  # (B, P)

    if keep_cell is not None:  # zoneout: keep each unit's old value with probability k
        cell = keep_cell * c_prev + (1 - keep_cell) * cell
    if keep_hidden is not None:
        hidden = keep_hidden * h_prev + (1 - keep_hidden) * hidden
    return hidden, cell, (input_gate, forget_gate, candidate, output_gate)


def _at(mask: Tensor | None, t: int) -> Tensor | None:
    """Step t of a (T, B, .) mask; a 0-d mask (evaluation) is every step's."""
    return mask if mask is None or mask.dim() == 0 else mask[t]


def lstm_layer(
    x: Tensor,
    state: tuple[Tensor, Tensor],
    w: LSTMWeights,
    lengths: Tensor | None = None,
    reverse: bool = False,
    options: LSTMOptions = PLAIN,
    masks: LSTMMasks = NO_MASKS,
) -> tuple[Tensor, tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """One layer, one direction over a padded batch x (T, B, I); zoneout masks (T, B, .) or 0-d.

    Padding steps (t >= lengths[b]) leave the state as it was and output zeros. Returns output
    (T, B, P), (h_n, c_n), and (gates (T, B, 4H) as (i, f, g, o), cells (T, B, H)), zero at padding.
    """
    hidden, cell = state
    steps = x.shape[0]
    outputs, gates, cells = [None] * steps, [None] * steps, [None] * steps
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in order:
        new_hidden, new_cell, gate = lstm_cell(
            x[t],
            (hidden, cell),
            w,
            options,
            masks.recurrent,
            _at(masks.keep_cell, t),
            _at(masks.keep_hidden, t),
        )
        active = torch.ones(x.shape[1], 1, dtype=torch.bool, device=x.device)
        if lengths is not None:
            active = (lengths.to(x.device) > t).unsqueeze(1)
        hidden = torch.where(active, new_hidden, hidden)
        cell = torch.where(active, new_cell, cell)
        outputs[t] = torch.where(active, new_hidden, 0.0)
        gates[t] = torch.where(active, torch.cat(gate, 1), 0.0)
        cells[t] = torch.where(active, new_cell, 0.0)
    return torch.stack(outputs), (hidden, cell), (torch.stack(gates).detach(), torch.stack(cells).detach())
