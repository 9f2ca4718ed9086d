"""Backend "triton": the LSTM recurrences as two Triton kernels, one forward and one backward.

Each kernel runs one layer direction's whole recurrence (the ``Loops`` of ``lstm_function``;
the input projection and the weight gradients stay whole-sequence products there). A program
owns BLOCK_B sequences and walks every step with them, so a step's hidden state never has to
reach another program: per step it tiles the recurrent product with ``tl.dot`` in IEEE
precision (no TF32, so float32 matches nn.LSTM's float32) and fuses the gate arithmetic of every
variant option around it. Rows whose sequence has ended keep their state (masked stores); the
hidden state and its gradient alternate between two buffers, because every unit of the next
step reads all of them.

The kernels themselves are in ``triton_kernels``; this module prepares their arguments.
Programs run in parallel only across blocks of BLOCK_B sequences: a small batch keeps one
streaming multiprocessor busy. Under ``TRITON_INTERPRET=1`` Triton runs the same kernels on CPU
tensors in NumPy; that is how the tests check them on machines without a GPU.

Shapes: N packed rows, B sequences, H cell size, P hidden size; gates along 4H as (i, f, g, o).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence

import torch
from torch import Tensor

from .contract import LAYER_NORM_EPS, LSTMMasks, LSTMOptions, LSTMWeights
from .lstm_function import Gradients, Loops, Workspace, lstm_layer_with

DTYPES = (torch.float32, torch.float64)
BLOCK_B = 16  # sequences per program: tl.dot's smallest tile
BLOCK_H = 32  # units (or columns) per tile
BLOCK_K = 32  # depth per tile of a product
# compile options: fused multiply-adds asked for, as Triton 3.9 warns when they are left to its default
LAUNCH = dict(num_warps=4, enable_fp_fusion=True)


_INSTALLED = importlib.util.find_spec("triton") is not None


def interpreted() -> bool:
    """Whether Triton runs kernels in its NumPy interpreter (``TRITON_INTERPRET=1``), on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def available() -> bool:
    """Triton is installed and has somewhere to run: a CUDA device, or its interpreter."""
    return _INSTALLED and (torch.cuda.is_available() or interpreted())


def runs_on(device: torch.device) -> bool:
    """Whether this backend takes tensors on ``device``."""
    return device.type == "cuda" or (device.type == "cpu" and interpreted())


def _scalars(like: Tensor, masks: LSTMMasks, options: LSTMOptions) -> Tensor:
    """The kernels' real-valued settings, as a tensor of their dtype (Triton would pass a Python
    float as float32, which moves a float64 kernel's results by up to 1e-8), in the order they load
    them: the clip bound, ``_tanh``'s series threshold, layer norm's eps, zoneout's keep fractions
    of c and h in evaluation."""
    values = (
        0.0 if options.clip is None else float(options.clip),
        0.25 if like.dtype == torch.float32 else 0.01,
        LAYER_NORM_EPS,
        _keep_mode(masks.keep_cell)[1],
        _keep_mode(masks.keep_hidden)[1],
    )
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def _keep_mode(mask: Tensor | None) -> tuple[int, float]:
    """(mode, value) for ``_keep``: 0 no zoneout, 1 a mask per row, 2 one value (evaluation)."""
    if mask is None:
        return 0, 0.0
    if mask.dim() == 0:
        return 2, float(mask)
    return 1, 0.0


def _flags(w: LSTMWeights, masks: LSTMMasks, options: LSTMOptions, reverse: bool) -> dict:
    """The kernels' compile-time switches."""
    return dict(
        REVERSE=reverse,
        PEEPHOLE_I=w.peephole_i is not None,
        PEEPHOLE_F=w.peephole_f is not None,
        PEEPHOLE_O=w.peephole_o is not None,
        LAYER_NORM=w.layer_norm_ih is not None,
        PROJECT=w.w_hr is not None,
        RECURRENT=masks.recurrent is not None,
        KEEP_C=_keep_mode(masks.keep_cell)[0],
        KEEP_H=_keep_mode(masks.keep_hidden)[0],
        COUPLED=options.coupled,
        CLIPPING=options.clip is not None,
        BLOCK_B=BLOCK_B,
        BLOCK_H=BLOCK_H,
        BLOCK_K=BLOCK_K,
    )


def _shared(
    w: LSTMWeights, masks: LSTMMasks, like: Tensor, batch_sizes: Sequence[int], options: LSTMOptions
) -> tuple:
    """The arguments both kernels take after their own buffers: vectors, masks, step layout."""
    vectors = tuple(
        _pointer(None if v is None else v.detach().contiguous(), like)
        for v in (w.peephole_i, w.peephole_f, w.peephole_o, w.layer_norm_hh, w.layer_norm_cell_weight,
                  w.layer_norm_cell_bias, masks.recurrent)
    )  # fmt: skip
    keep = tuple(
        _pointer(None if m is None or m.dim() == 0 else m.detach().contiguous(), like) for m in masks[1:]
    )
    sizes = torch.as_tensor(list(batch_sizes), dtype=torch.int64)
    offsets = (torch.cumsum(sizes, 0) - sizes).to(like.device)
    return (*vectors, *keep, offsets, sizes.to(like.device), len(batch_sizes), _scalars(like, masks, options))


def _pointer(tensor: Tensor | None, like: Tensor) -> Tensor:
    """What a kernel argument points at: ``like`` for an absent buffer (its switch keeps the kernel
    off it), bytes for the clip flags (Triton stores no bool)."""
    if tensor is None:
        return like
    return tensor.view(torch.uint8) if tensor.dtype == torch.bool else tensor


class TritonLoops(Loops):
    """The LSTM recurrences as one Triton kernel launch each (see ``lstm_function.Loops``)."""

    SUMS_GAINS = False
    ADDS_BIAS = False
    TRANSPOSES = False

    def forward(
        self, ws: Workspace, h0: Tensor, c0: Tensor, w: LSTMWeights, masks: LSTMMasks,
        batch_sizes: Sequence[int], reverse: bool, options: LSTMOptions, x: Tensor | None = None,
        project: bool = False,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        batch, size, hidden_size = c0.shape[0], c0.shape[1], h0.shape[1]
        like = ws.gates
        hidden = h0.detach().new_empty(2, batch, hidden_size)
        hidden[0] = h0
        cell = c0.detach().clone().contiguous()
        w_hr_t = None if w.w_hr is None else w.w_hr.detach().t().contiguous()
        buffers = (ws.unprojected, ws.hh_hat, ws.hh_rstd, ws.cell_hat, ws.cell_rstd, ws.gate_inside)
        from .triton_kernels import lstm_forward  # at the first launch: Triton's import costs 0.13 s

        lstm_forward[(-(-batch // BLOCK_B),)](
            like, ws.cell_new, ws.cells, ws.out, *(_pointer(t, like) for t in buffers),
            hidden, cell, w.w_hh.detach().t().contiguous(), _pointer(w_hr_t, like),
            *_shared(w, masks, like, batch_sizes, options), batch, size, hidden_size,
            **_flags(w, masks, options, reverse), **LAUNCH,
        )  # fmt: skip
        return hidden[len(batch_sizes) % 2], cell

    def backward(
        self, ws: Workspace, gs: Gradients, d_out: Tensor, d_hn: Tensor, d_cn: Tensor, w: LSTMWeights,
        masks: LSTMMasks, batch_sizes: Sequence[int], reverse: bool, options: LSTMOptions,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        batch, size, hidden_size = d_cn.shape[0], d_cn.shape[1], d_hn.shape[1]
        like = ws.gates
        dh = d_hn.new_empty(2, batch, hidden_size)
        dh[0] = d_hn
        dc = d_cn.clone().contiguous()
        scratch = like.new_empty(3, batch, max(size, hidden_size))  # d_hidden, carry_h, d_new rows
        w_hr = None if w.w_hr is None else w.w_hr.detach().contiguous()
        buffers = (ws.hh_hat, ws.hh_rstd, ws.cell_hat, ws.cell_rstd, ws.gate_inside)
        from .triton_kernels import lstm_backward

        lstm_backward[(-(-batch // BLOCK_B),)](
            like, ws.cell_new, *(_pointer(t, like) for t in buffers), gs.cell_prev,
            d_out, dh, dc, gs.d_gates, gs.d_recurrent, _pointer(gs.d_squashed, like), _pointer(gs.d_projected, like),
            scratch[0], scratch[1], scratch[2], w.w_hh.detach().contiguous(), _pointer(w_hr, like),
            *_shared(w, masks, like, batch_sizes, options), batch, size, hidden_size,
            **_flags(w, masks, options, reverse), **LAUNCH,
        )  # fmt: skip
        return dh[len(batch_sizes) % 2], dc


lstm_layer = lstm_layer_with(TritonLoops())
