"""Backend "cpu": each recurrence of one layer and direction as a single compiled Numba call.

``NumbaLoops`` plugs into the shared ``lstm_function.LSTMLayer`` (which does the input side and
the parameter gradients as whole-sequence matrix products in PyTorch). Inside one call per
direction and pass, every step runs the recurrent matrix product on BLAS (Numba's ``np.dot``,
SciPy's OpenBLAS) and the gate arithmetic of every variant of ``contract`` fused, unit by unit,
with no Python between steps. It computes the formulas of docs/variants.md in the order of
``torch_ops.TorchLoops``; both are tested against ``reference_variants``.

Compiled code is cached on disk (``cache=True``); it depends on dtype (float32 or float64), never
on shapes. Arrays absent for a configuration are passed as empty arrays, with a flag.

Shapes: N rows, B sequences, H cell size, P hidden size; gates along 4H as (i, f, g, o).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .contract import LAYER_NORM_EPS, LSTMMasks, LSTMOptions, LSTMWeights
from .lstm_function import Gradients, Workspace, lstm_layer_with

try:
    import numba
    import scipy.linalg  # noqa: F401  (Numba's np.dot calls SciPy's BLAS)
    from threadpoolctl import ThreadpoolController
except ImportError:  # the backend reports itself unavailable
    numba = None

DTYPES = (torch.float32, torch.float64)
# no "nnan"/"ninf": non-finite inputs must propagate as they do in the reference
_FASTMATH = {"nsz", "arcp", "contract", "reassoc"}


def available() -> bool:
    return numba is not None


@functools.cache
def _blas():
    return ThreadpoolController().select(user_api="blas")


def _one_blas_thread():
    """Run the BLAS calls of a kernel on one thread, beside torch's own threads.

    OpenBLAS's worker threads spin for a while after each call; inside a recurrence of small
    products they stay awake and steal the cores from torch's threads (measured: nn.LSTM ran at
    half speed after a multi-threaded kernel call). One thread per kernel call avoids that.
    """
    return _blas().limit(limits=1)


def _jit(function=None, *, inline: str = "never"):
    """numba.njit with this module's settings; ``inline="always"`` for the gate functions, which
    must be inlined into the loops for these to vectorise."""
    if function is None:
        return lambda f: _jit(f, inline=inline)
    if numba is None:
        return function
    # error_model="numpy": no zero-division checks, which would stop the loops from vectorising
    return numba.njit(cache=True, fastmath=_FASTMATH, error_model="numpy", nogil=True, inline=inline)(
        function
    )


# --- the gate functions, vectorisable ---------------------------------------------------------
# Numba has no vector maths library, and libm's exp/tanh are scalar calls (about 3 and 13 ns each
# here); this exp is a polynomial that LLVM vectorises (about 0.3 ns per value in float32), with a
# relative error of 1.2e-7 in float32 and 1e-14 in float64. Constants come in a tuple ``k`` of the
# kernel's dtype, so that float32 kernels compute in float32 (a Python float would be float64).

ONE, TWO, ZERO, LOW, HIGH, LOG2E, LN2_HIGH, LN2_LOW, EPS, INV_GATES, INV_SIZE, HALF, SMALL, POLY = range(14)
# tanh near 0 by its series x - x^3/3 + 2x^5/15 - 17x^7/315 + 62x^9/2835: 1 - 2/(1 + e^2x) cancels
# there, which costs float32 up to 1e-4 of relative error at |x| ~ 1e-3 (float64 keeps 1e-13).
_TANH_SERIES = (1.0 / 3, 2.0 / 15, 17.0 / 315, 62.0 / 2835)
_TAYLOR = [1.0 / math.factorial(n) for n in range(12, -1, -1)]  # 1/12!, ..., 1/1!, 1
TANH = POLY + len(_TAYLOR)


def constants(dtype: np.dtype, size: int) -> tuple:
    """The ``k`` tuple for a kernel of ``dtype`` and cell size ``size``: a tuple, not an array, so
    that no store into the kernel's arrays can alias the constants."""
    single = dtype == np.float32
    values = [
        1.0, 2.0, 0.0,
        -87.0 if single else -708.0,  # exp's input range: 2**n stays a normal number
        88.0 if single else 709.0,
        1.4426950408889634,
        0.693145751953125 if single else 6.93147180369123816490e-01,  # ln 2 in two parts
        1.428606765330187e-06 if single else 1.90821492927058770002e-10,
        LAYER_NORM_EPS, 1.0 / (4 * size), 1.0 / size, 0.5,
        0.25 if single else 0.0,  # below this |x|, tanh takes its series
        *_TAYLOR, *_TANH_SERIES,
    ]  # fmt: skip
    return tuple(dtype.type(v) for v in values)


def _from_bits(n):
    """2**n for an integral float n."""


if numba is not None:
    from numba import types
    from numba.extending import intrinsic, overload

    @intrinsic
    def _bits_to_float(typingctx, bits):
        target = types.float32 if bits == types.int32 else types.float64

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))

        return target(bits), codegen

    @overload(_from_bits, inline="always")
    def _from_bits_overload(n):
        if n == types.float32:
            # Numba computes int32 arithmetic in int64: narrow the result back
            return lambda n: _bits_to_float(np.int32((np.int64(n) + 127) << 23))
        return lambda n: _bits_to_float((np.int64(n) + 1023) << 52)


@_jit(inline="always")
def _exp(x, k):
    x = min(max(x, k[LOW]), k[HIGH])
    n = np.floor(x * k[LOG2E] + k[HALF])
    r = x - n * k[LN2_HIGH] - n * k[LN2_LOW]
    p = k[POLY] * r + k[POLY + 1]
    p = p * r + k[POLY + 2]
    p = p * r + k[POLY + 3]
    p = p * r + k[POLY + 4]
    p = p * r + k[POLY + 5]
    p = p * r + k[POLY + 6]
    p = p * r + k[POLY + 7]
    p = p * r + k[POLY + 8]
    p = p * r + k[POLY + 9]
    p = p * r + k[POLY + 10]
    p = p * r + k[POLY + 11]
    p = p * r + k[POLY + 12]
    return p * _from_bits(n)


@_jit(inline="always")
def _sigmoid(x, k):
    return k[ONE] / (k[ONE] + _exp(-x, k))


@_jit(inline="always")
def _tanh(x, k):
    x2 = x * x
    series = x * (k[ONE] - x2 * (k[TANH] - x2 * (k[TANH + 1] - x2 * (k[TANH + 2] - x2 * k[TANH + 3]))))
    value = k[ONE] - k[TWO] / (k[ONE] + _exp(k[TWO] * x, k))
    return series if abs(x) < k[SMALL] else value


@_jit
def _normalise(source, hat, inverse_count, k):
    """hat = (source - mean) / sqrt(var + eps) over one row; returns 1 / sqrt(var + eps)."""
    mean = k[ZERO]
    for j in range(source.shape[0]):
        mean += source[j]
    mean *= inverse_count
    var = k[ZERO]
    for j in range(source.shape[0]):
        d = source[j] - mean
        var += d * d
    rstd = k[ONE] / np.sqrt(var * inverse_count + k[EPS])
    for j in range(source.shape[0]):
        hat[j] = (source[j] - mean) * rstd
    return rstd


@_jit
def _normalise_backward(d_hat, hat, rstd, inverse_count, result, k):
    """dL/dz of one row from dL/dẑ, for ẑ = LN(z); ``result`` may be ``d_hat``."""
    mean_d = k[ZERO]
    mean_dh = k[ZERO]
    for j in range(d_hat.shape[0]):
        mean_d += d_hat[j]
        mean_dh += d_hat[j] * hat[j]
    mean_d *= inverse_count
    mean_dh *= inverse_count
    for j in range(d_hat.shape[0]):
        result[j] = rstd * (d_hat[j] - mean_d - hat[j] * mean_dh)


@_jit
def _clip(values, inside, bound):
    """Clamp ``values`` to [-bound, bound] in place, recording where they were inside."""
    for j in range(values.shape[0]):
        v = values[j]
        inside[j] = (v >= -bound) & (v <= bound)
        values[j] = min(max(v, -bound), bound)


@_jit(inline="always")
def _add_product(target, a, b):
    """target += a * b, elementwise."""
    for j in range(target.shape[0]):
        target[j] += a[j] * b[j]


@_jit
def _mix(keep, old, new, result, k):
    """result = keep * old + (1 - keep) * new, elementwise: zoneout."""
    for j in range(result.shape[0]):
        result[j] = keep[j] * old[j] + (k[ONE] - keep[j]) * new[j]


# --- the recurrences --------------------------------------------------------------------------


@_jit
def _forward(
    k, gates, cell_new, cells, out, unprojected, hh_hat, hh_rstd, cell_hat, cell_rstd, gate_inside,
    hidden, cell, w_hh_t, w_hr_t, p_i, p_f, p_o, ln_hh, ln_cw, ln_cb,
    recurrent, keep_c, keep_c_value, keep_h, keep_h_value, offsets, batch_sizes, reverse, coupled, clip,
):  # fmt: skip
    steps = batch_sizes.shape[0]
    size = cell.shape[1]
    batch, hidden_size = hidden.shape
    one = k[ONE]
    layer_norm = ln_hh.shape[0] > 0
    project = w_hr_t.shape[0] > 0
    clipping = clip < np.inf
    h_in = np.empty_like(hidden)
    z = np.empty((batch, 4 * size), dtype=gates.dtype)  # W_hh h of the step's rows
    h_new = np.empty_like(hidden)
    keep_row_c = np.full(size, keep_c_value, dtype=gates.dtype)
    keep_row_h = np.full(hidden_size, keep_h_value, dtype=gates.dtype)
    for s in range(steps):
        t = steps - 1 - s if reverse else s
        start, active = offsets[t], batch_sizes[t]
        if recurrent.shape[0] > 0:
            for b in range(active):
                for j in range(hidden_size):
                    h_in[b, j] = hidden[b, j] * recurrent[b, j]
            np.dot(h_in[:active], w_hh_t, z[:active])
        else:
            np.dot(hidden[:active], w_hh_t, z[:active])
        for b in range(active):
            row = start + b
            a = gates[row]
            # the four gates as views: loops that start at 0 prove their indices non-negative,
            # which lets LLVM drop Numba's wraparound checks and vectorise them
            a_i, a_f, a_g, a_o = a[:size], a[size : 2 * size], a[2 * size : 3 * size], a[3 * size :]
            c_prev = cell[b]
            c_new = cell_new[row]
            if layer_norm:
                hh_rstd[row, 0] = _normalise(z[b], hh_hat[row], k[INV_GATES], k)
                _add_product(a, hh_hat[row], ln_hh)
            else:
                for j in range(4 * size):
                    a[j] += z[b, j]
            if p_i.shape[0] > 0:
                _add_product(a_i, p_i, c_prev)
            if p_f.shape[0] > 0:
                _add_product(a_f, p_f, c_prev)
            if clipping:
                _clip(a[: 3 * size], gate_inside[row, : 3 * size], clip)
            for j in range(size):
                a_f[j] = _sigmoid(a_f[j], k)
            if coupled:
                for j in range(size):
                    a_i[j] = one - a_f[j]
            else:
                for j in range(size):
                    a_i[j] = _sigmoid(a_i[j], k)
            for j in range(size):
                a_g[j] = _tanh(a_g[j], k)
            for j in range(size):
                c_new[j] = a_f[j] * c_prev[j] + a_i[j] * a_g[j]
            if p_o.shape[0] > 0:
                _add_product(a_o, p_o, c_new)
            if clipping:
                _clip(a_o, gate_inside[row, 3 * size :], clip)
            for j in range(size):
                a_o[j] = _sigmoid(a_o[j], k)
            target = unprojected[row] if project else h_new[b]
            if layer_norm:
                cell_rstd[row, 0] = _normalise(c_new, cell_hat[row], k[INV_SIZE], k)
                hat = cell_hat[row]
                for j in range(size):
                    target[j] = a_o[j] * _tanh(hat[j] * ln_cw[j] + ln_cb[j], k)
            else:
                for j in range(size):
                    target[j] = a_o[j] * _tanh(c_new[j], k)
            if keep_c.shape[0] > 0:
                _mix(keep_c[row], c_prev, c_new, cells[row], k)
            elif keep_c_value > 0:
                _mix(keep_row_c, c_prev, c_new, cells[row], k)
            c_prev[:] = cells[row]
        if project:
            np.dot(unprojected[start : start + active], w_hr_t, h_new[:active])
        for b in range(active):
            row = start + b
            if keep_h.shape[0] > 0:
                _mix(keep_h[row], hidden[b], h_new[b], out[row], k)
            elif keep_h_value > 0:
                _mix(keep_row_h, hidden[b], h_new[b], out[row], k)
            else:
                out[row] = h_new[b]
            hidden[b] = out[row]


@_jit
def _backward(
    k, gates, cell_new, hh_hat, hh_rstd, cell_hat, cell_rstd, gate_inside, cell_prev,
    d_out, dh, dc, d_gates, d_recurrent, d_squashed, d_projected,
    w_hh, w_hr, p_i, p_f, p_o, ln_hh, ln_cw, ln_cb,
    recurrent, keep_c, keep_c_value, keep_h, keep_h_value, offsets, batch_sizes, reverse, coupled, clip,
):  # fmt: skip
    steps = batch_sizes.shape[0]
    size = dc.shape[1]
    batch, hidden_size = dh.shape
    one, zero = k[ONE], k[ZERO]
    layer_norm = ln_hh.shape[0] > 0
    project = w_hr.shape[0] > 0
    clipping = clip < np.inf
    zoneout_h = keep_h.shape[0] > 0 or keep_h_value > 0
    d_hidden = np.empty_like(dh)  # dL/dh'_t of the step's rows
    carry_h = np.zeros_like(dh)  # the part of dL/dh_t that zoneout passes to h_{t-1}
    d_r = np.empty((batch, size), dtype=dh.dtype)  # dL/d(o * tanh(LN_c(c')))
    d_new = np.empty(size, dtype=dh.dtype)  # dL/dc'
    carry_c = np.zeros(size, dtype=dh.dtype)  # the part of dL/dc_t that zoneout passes to c_{t-1}
    tanh_squashed = np.empty(size, dtype=dh.dtype)
    scaled = np.empty(4 * size, dtype=dh.dtype)
    dh_in = np.empty_like(dh)
    keep_row_c = np.full(size, keep_c_value, dtype=dh.dtype)
    keep_row_h = np.full(hidden_size, keep_h_value, dtype=dh.dtype)
    for s in range(steps):
        t = s if reverse else steps - 1 - s  # the forward order, reversed
        start, active = offsets[t], batch_sizes[t]
        for b in range(active):
            row = start + b
            for j in range(hidden_size):
                d_hidden[b, j] = dh[b, j] + d_out[row, j]
            if zoneout_h:
                keep = keep_h[row] if keep_h.shape[0] > 0 else keep_row_h
                for j in range(hidden_size):
                    carry_h[b, j] = d_hidden[b, j] * keep[j]
                    d_hidden[b, j] *= one - keep[j]
            if project:
                d_projected[row] = d_hidden[b]
        if project:
            np.dot(d_hidden[:active], w_hr, d_r[:active])
        else:
            d_r[:active] = d_hidden[:active]
        for b in range(active):
            row = start + b
            g = gates[row]
            dg = d_gates[row]
            # views of the four gates, as in _forward
            input_gate, forget_gate, candidate, output_gate = (
                g[:size],
                g[size : 2 * size],
                g[2 * size : 3 * size],
                g[3 * size :],
            )
            d_i, d_f, d_g, d_o = dg[:size], dg[size : 2 * size], dg[2 * size : 3 * size], dg[3 * size :]
            c_prev = cell_prev[row]
            d_c = dc[b]
            if layer_norm:
                hat = cell_hat[row]
                for j in range(size):
                    tanh_squashed[j] = _tanh(hat[j] * ln_cw[j] + ln_cb[j], k)
            else:
                c_new = cell_new[row]
                for j in range(size):
                    tanh_squashed[j] = _tanh(c_new[j], k)
            dr = d_r[b]
            for j in range(size):
                d_o[j] = dr[j] * tanh_squashed[j] * output_gate[j] * (one - output_gate[j])
                d_new[j] = dr[j] * output_gate[j] * (one - tanh_squashed[j] * tanh_squashed[j])
            if clipping:
                inside = gate_inside[row, 3 * size :]
                for j in range(size):
                    d_o[j] = d_o[j] if inside[j] else zero
            if layer_norm:
                d_squashed[row] = d_new
                for j in range(size):
                    d_new[j] *= ln_cw[j]
                _normalise_backward(d_new, cell_hat[row], cell_rstd[row, 0], k[INV_SIZE], d_new, k)
            if keep_c.shape[0] > 0 or keep_c_value > 0:
                keep = keep_c[row] if keep_c.shape[0] > 0 else keep_row_c
                for j in range(size):
                    carry_c[j] = d_c[j] * keep[j]
                    d_new[j] += d_c[j] * (one - keep[j])
            else:
                for j in range(size):
                    d_new[j] += d_c[j]
            if p_o.shape[0] > 0:
                _add_product(d_new, d_o, p_o)
            for j in range(size):
                d_g[j] = d_new[j] * input_gate[j] * (one - candidate[j] * candidate[j])
                d_f[j] = d_new[j] * c_prev[j]
            if coupled:  # i = 1 - f: the forget gate takes the input gate's gradient, negated
                for j in range(size):
                    d_f[j] -= d_new[j] * candidate[j]
                    d_i[j] = zero
            else:
                for j in range(size):
                    d_i[j] = d_new[j] * candidate[j] * input_gate[j] * (one - input_gate[j])
            for j in range(size):
                d_f[j] *= forget_gate[j] * (one - forget_gate[j])
            if clipping:
                inside = gate_inside[row]
                for j in range(3 * size):
                    dg[j] = dg[j] if inside[j] else zero
            for j in range(size):
                d_c[j] = d_new[j] * forget_gate[j] + carry_c[j]
            if p_i.shape[0] > 0:
                _add_product(d_c, d_i, p_i)
            if p_f.shape[0] > 0:
                _add_product(d_c, d_f, p_f)
            if layer_norm:
                for j in range(4 * size):
                    scaled[j] = dg[j] * ln_hh[j]
                _normalise_backward(scaled, hh_hat[row], hh_rstd[row, 0], k[INV_GATES], d_recurrent[row], k)
        np.dot(d_recurrent[start : start + active], w_hh, dh_in[:active])
        for b in range(active):
            for j in range(hidden_size):
                value = dh_in[b, j]
                if recurrent.shape[0] > 0:
                    value *= recurrent[b, j]
                dh[b, j] = value + carry_h[b, j]


def _array(tensor: Tensor | None, like: np.ndarray, dims: int) -> np.ndarray:
    """A tensor as a contiguous NumPy array; None as an empty one of the same dtype."""
    if tensor is None:
        return np.empty((0,) * dims, dtype=like.dtype)
    return tensor.detach().contiguous().numpy()


def _flags(tensor: Tensor | None) -> np.ndarray:
    """The clipping flags as a boolean array; an empty one without clipping."""
    return np.empty((0, 0), dtype=np.bool_) if tensor is None else tensor.numpy()


def _keep(mask: Tensor | None, like: np.ndarray) -> tuple[np.ndarray, np.generic]:
    """A zoneout mask as (per-row array or empty, constant value): evaluation's masks are 0-d."""
    if mask is None or mask.dim() == 0:
        return _array(None, like, 2), like.dtype.type(0.0 if mask is None else float(mask))
    return _array(mask, like, 2), like.dtype.type(0.0)


def _shared(w: LSTMWeights, masks: LSTMMasks, like: np.ndarray, batch_sizes, options: LSTMOptions) -> tuple:
    """The arguments that forward and backward take in the same order, after their own."""
    keep_c, keep_c_value = _keep(masks.keep_cell, like)
    keep_h, keep_h_value = _keep(masks.keep_hidden, like)
    vectors = (
        w.peephole_i,
        w.peephole_f,
        w.peephole_o,
        w.layer_norm_hh,
        w.layer_norm_cell_weight,
        w.layer_norm_cell_bias,
    )
    sizes = np.asarray(batch_sizes, dtype=np.int64)
    clip = like.dtype.type(math.inf if options.clip is None else options.clip)
    return (
        *(_array(v, like, 1) for v in vectors),
        _array(masks.recurrent, like, 2),
        keep_c,
        keep_c_value,
        keep_h,
        keep_h_value,
        np.cumsum(sizes) - sizes,
        sizes,
    ), (options.coupled, clip)


class NumbaLoops:
    """The LSTM recurrences as one compiled call each (see ``lstm_function.Loops``)."""

    def forward(
        self, ws: Workspace, h0: Tensor, c0: Tensor, w: LSTMWeights, masks: LSTMMasks,
        batch_sizes: Sequence[int], reverse: bool, options: LSTMOptions,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        hidden, cell = h0.detach().clone().contiguous(), c0.detach().clone().contiguous()
        like = ws.gates.numpy()
        shared, last = _shared(w, masks, like, batch_sizes, options)
        buffers = (ws.unprojected, ws.hh_hat, ws.hh_rstd, ws.cell_hat, ws.cell_rstd)
        with _one_blas_thread():
            _forward(
                constants(like.dtype, c0.shape[1]), like, ws.cell_new.numpy(), ws.cells.numpy(), ws.out.numpy(),
                *(_array(t, like, 2) for t in buffers), _flags(ws.gate_inside), hidden.numpy(), cell.numpy(),
                _array(w.w_hh.t(), like, 2), _array(None if w.w_hr is None else w.w_hr.t(), like, 2),
                *shared, reverse, *last,
            )  # fmt: skip
        return hidden, cell

    def backward(
        self, ws: Workspace, gs: Gradients, d_out: Tensor, d_hn: Tensor, d_cn: Tensor, w: LSTMWeights,
        masks: LSTMMasks, batch_sizes: Sequence[int], reverse: bool, options: LSTMOptions,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        dh, dc = d_hn.clone().contiguous(), d_cn.clone().contiguous()
        like = ws.gates.numpy()
        shared, last = _shared(w, masks, like, batch_sizes, options)
        buffers = (ws.hh_hat, ws.hh_rstd, ws.cell_hat, ws.cell_rstd)
        with _one_blas_thread():
            _backward(
                constants(like.dtype, d_cn.shape[1]), like, ws.cell_new.numpy(),
                *(_array(t, like, 2) for t in buffers), _flags(ws.gate_inside), gs.cell_prev.numpy(),
                d_out.numpy(), dh.numpy(), dc.numpy(), gs.d_gates.numpy(), gs.d_recurrent.numpy(),
                _array(gs.d_squashed, like, 2), _array(gs.d_projected, like, 2),
                _array(w.w_hh, like, 2), _array(w.w_hr, like, 2),
                *shared, reverse, *last,
            )  # fmt: skip
        return dh, dc


lstm_layer = lstm_layer_with(NumbaLoops())
