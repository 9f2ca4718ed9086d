"""The textbook LSTM and plain RNN of SPEC.md, written step by step with plain autograd.

This file is the oracle: every fast path in lstmkit is tested against it, never the other way
round. It has no speed tricks and no options beyond SPEC.md sections 1-3.

Gate order in the weights is PyTorch's (i, f, g, o): rows ``[0:H]`` of ``w_ih`` and ``w_hh`` feed
the input gate, ``[H:2H]`` the forget gate, ``[2H:3H]`` the candidate (PyTorch's ``g``, SPEC's
C̃) and ``[3H:4H]`` the output gate. The seeds' single matrix W over ``[h_{t-1}, x_t]`` is the pair
(``w_hh``, ``w_ih``) side by side.

Shapes: T steps, B sequences, I input features, H cell size, P hidden size (P = H unless a
projection ``w_hr`` of shape (P, H) is given).
"""

from __future__ import annotations

import torch
from torch import Tensor


def lstm_cell(
    x: Tensor,
    state: tuple[Tensor, Tensor],
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    w_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One LSTM step (SPEC.md §1). x (B, I), state = (h (B, P), c (B, H)) -> (hidden, cell)."""
    h_prev, c_prev = state
    size = w_hh.shape[0] // 4

    def affine(k: int) -> Tensor:
        # W_k·[h_{t-1}, x_t] + b_k for gate k, with W_k = [w_hh rows k | w_ih rows k]
        rows = slice(k * size, (k + 1) * size)
        out = x @ w_ih[rows].T + h_prev @ w_hh[rows].T  # (B, H)
        if b_ih is not None and b_hh is not None:
            out = out + b_ih[rows] + b_hh[rows]
        return out

    input_gate = torch.sigmoid(affine(0))  # i_t = σ(W_i·[h_{t-1}, x_t] + b_i)
    forget_gate = torch.sigmoid(affine(1))  # f_t = σ(W_f·[h_{t-1}, x_t] + b_f)
    candidate = torch.tanh(affine(2))  # C̃_t = tanh(W_C·[h_{t-1}, x_t] + b_C)
    cell = forget_gate * c_prev + input_gate * candidate  # C_t = f_t * C_{t-1} + i_t * C̃_t
    output_gate = torch.sigmoid(affine(3))  # o_t = σ(W_o·[h_{t-1}, x_t] + b_o)
    hidden = output_gate * torch.tanh(cell)  # h_t = o_t * tanh(C_t)
    if w_hr is not None:
        hidden = hidden @ w_hr.T  # (B, P): the projection of torch.nn.LSTM(proj_size=P)
    return hidden, cell


def rnn_cell(
    x: Tensor,
    h_prev: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    nonlinearity: str = "tanh",
) -> Tensor:
    """One plain-RNN step (SPEC.md §2): h_t = tanh(W_h h_{t-1} + W_x x_t + b_h). x (B, I), h (B, H)."""
    pre = x @ w_ih.T + h_prev @ w_hh.T  # (B, H)
    if b_ih is not None and b_hh is not None:
        pre = pre + b_ih + b_hh
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def _steps(length: int, reverse: bool) -> range:
    return range(length - 1, -1, -1) if reverse else range(length)


def _active(t: int, lengths: Tensor | None, like: Tensor) -> Tensor:
    """(B, 1) mask of the sequences that still have a step t; all ones without lengths."""
    if lengths is None:
        return torch.ones(like.shape[0], 1, dtype=torch.bool, device=like.device)
    return (lengths.to(like.device) > t).unsqueeze(1)


def lstm_layer(
    x: Tensor,
    state: tuple[Tensor, Tensor],
    weights: tuple[Tensor | None, ...],
    lengths: Tensor | None = None,
    reverse: bool = False,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One LSTM layer in one direction over a padded batch (SPEC.md §3).

    x (T, B, I); state = (h0 (B, P), c0 (B, H)); weights = (w_ih, w_hh, b_ih, b_hh, w_hr) with
    None for absent ones; lengths (B,) true lengths, steps at or past a sequence's length are
    padding. A reverse layer reads each sequence from its own last true step back to step 0.
    Returns output (T, B, P), zero at padding, and the final (h_n, c_n).
    """
    hidden, cell = state
    outputs = [x.new_zeros(())] * x.shape[0]
    for t in _steps(x.shape[0], reverse):
        new_hidden, new_cell = lstm_cell(x[t], (hidden, cell), *weights)
        active = _active(t, lengths, x)  # padding leaves the state as it was
        hidden = torch.where(active, new_hidden, hidden)
        cell = torch.where(active, new_cell, cell)
        outputs[t] = torch.where(active, new_hidden, torch.zeros_like(new_hidden))
    return torch.stack(outputs), (hidden, cell)


def rnn_layer(
    x: Tensor,
    h0: Tensor,
    weights: tuple[Tensor | None, ...],
    lengths: Tensor | None = None,
    reverse: bool = False,
    nonlinearity: str = "tanh",
) -> tuple[Tensor, Tensor]:
    """One plain-RNN layer in one direction: x (T, B, I), h0 (B, H) -> (output (T, B, H), h_n)."""
    hidden = h0
    outputs = [x.new_zeros(())] * x.shape[0]
    for t in _steps(x.shape[0], reverse):
        new_hidden = rnn_cell(x[t], hidden, *weights, nonlinearity=nonlinearity)
        active = _active(t, lengths, x)
        hidden = torch.where(active, new_hidden, hidden)
        outputs[t] = torch.where(active, new_hidden, torch.zeros_like(new_hidden))
    return torch.stack(outputs), hidden
