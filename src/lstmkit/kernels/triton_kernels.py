"""The Triton kernels of backend "triton" (``gpu``): the LSTM's forward and backward recurrences.

``lstm_forward`` fills the workspace of ``lstm_function`` and ``lstm_backward`` the gate gradients,
one launch per layer direction, one program per BLOCK_B sequences for all steps (the design is in
``gpu``'s docstring). Compile-time switches in capitals turn each variant option on; real-valued
settings come in ``scalars``, in the order of ``gpu._scalars``. Imported at the first launch, so
that ``import lstmkit`` does not import Triton.

Shapes: N packed rows, B sequences, H cell size, P hidden size; gates along 4H as (i, f, g, o).
"""

import triton
import triton.language as tl


@triton.jit
def _tanh(x, small):
    # tanh(|x|) = (1 - e) / (1 + e) with e = exp(-2|x|) cancels near 0: below ``small`` (0.25 in
    # float32, 0.01 in float64) its series, whose next term is below the dtype's precision there
    t = tl.exp(-2.0 * tl.abs(x))
    magnitude = (1.0 - t) / (1.0 + t)
    x2 = x * x
    series = x * (1.0 - x2 * (1.0 / 3 - x2 * (2.0 / 15 - x2 * (17.0 / 315 - x2 * (62.0 / 2835)))))
    return tl.where(tl.abs(x) < small, series, tl.where(x < 0, -magnitude, magnitude))


@triton.jit
def _times(
    a, a_stride, a_rows, a_live, scale, w, w_stride, columns, columns_live, depth,
    SCALED: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """(BLOCK_B, BLOCK_H) = A[a_rows, :depth] @ W[:depth, columns] for row-major A and W;
    with SCALED, A's rows times ``scale``'s rows of the same layout (recurrent dropout)."""
    acc = tl.zeros((BLOCK_B, BLOCK_H), dtype=w.dtype.element_ty)
    for k0 in range(0, depth, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_live = k < depth
        inside = a_live[:, None] & k_live[None, :]
        at = a_rows[:, None] * a_stride + k[None, :]
        left = tl.load(a + at, mask=inside, other=0.0)
        if SCALED:
            left *= tl.load(scale + at, mask=inside, other=0.0)
        right = tl.load(
            w + k[:, None] * w_stride + columns[None, :],
            mask=k_live[:, None] & columns_live[None, :],
            other=0.0,
        )
        acc = tl.dot(left, right, acc, input_precision="ieee")
    return acc


@triton.jit
def _columns(n0, width, live, BLOCK_H: tl.constexpr):
    """The block of BLOCK_H columns from n0 of a row ``width`` wide: (indices, which exist, which
    exist in a live row)."""
    n = n0 + tl.arange(0, BLOCK_H)
    n_live = n < width
    return n, n_live, live[:, None] & n_live[None, :]


@triton.jit
def _row_moments(values, rows, live, width, eps, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """(mean, 1 / sqrt(variance + eps)) of each row ``rows`` of a row-major (N, width) buffer,
    in two passes (the one-pass formula cancels)."""
    total = tl.zeros((BLOCK_B,), dtype=values.dtype.element_ty)
    for n0 in range(0, width, BLOCK_H):
        n, _, inside = _columns(n0, width, live, BLOCK_H)
        total += tl.sum(tl.load(values + rows[:, None] * width + n[None, :], mask=inside, other=0.0), axis=1)
    mean = total / width
    spread = tl.zeros((BLOCK_B,), dtype=values.dtype.element_ty)
    for n0 in range(0, width, BLOCK_H):
        n, _, inside = _columns(n0, width, live, BLOCK_H)
        value = tl.load(values + rows[:, None] * width + n[None, :], mask=inside, other=0.0)
        d = tl.where(inside, value - mean[:, None], 0.0)
        spread += tl.sum(d * d, axis=1)
    return mean, 1.0 / tl.sqrt(spread / width + eps)


@triton.jit
def _recurrent_side(
    gate, at, n, n_live, inside, size, h_src, hidden_size, b, live, recurrent, w_hh_t, hh_hat, ln_hh,
    mean, inverse, LAYER_NORM: tl.constexpr, RECURRENT: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """One gate's block of units: (W_hh h)'s columns, or with LAYER_NORM the raw values that
    ``hh_hat`` holds at ``at`` normalised (and stored back) times their gains."""
    offset = gate * size
    if LAYER_NORM:
        hat = (tl.load(hh_hat + at + offset, mask=inside, other=0.0) - mean[:, None]) * inverse[:, None]
        tl.store(hh_hat + at + offset, hat, mask=inside)
        return hat * tl.load(ln_hh + offset + n, mask=n_live, other=0.0)[None, :]
    return _times(
        h_src, hidden_size, b, live, recurrent, w_hh_t, 4 * size, n + offset, n_live, hidden_size,
        RECURRENT, BLOCK_B, BLOCK_H, BLOCK_K,
    )  # fmt: skip


@triton.jit
def _keep(keep, keep_value, at, inside, MODE: tl.constexpr):
    """Zoneout's keep fraction: MODE 1 a per-row mask, 2 one value (evaluation)."""
    if MODE == 1:
        return tl.load(keep + at, mask=inside, other=0.0)
    return tl.where(inside, keep_value, 0.0)


@triton.jit
def _gain_sums(d, gain, hat, n, n_live, inside, sum_s, sum_sh):
    """sum_s + Σ_j d g_j and sum_sh + Σ_j d g_j ẑ_j over one gate's block of units, per row."""
    scaled = d * tl.load(gain + n, mask=n_live, other=0.0)[None, :]
    return sum_s + tl.sum(scaled, axis=1), sum_sh + tl.sum(
        scaled * tl.load(hat, mask=inside, other=0.0), axis=1
    )


@triton.jit
def lstm_forward(
    gates, cell_new, cells, out, unprojected, hh_hat, hh_rstd, cell_hat, cell_rstd, gate_inside,
    hidden, cell, w_hh_t, w_hr_t, p_i, p_f, p_o, ln_hh, ln_cw, ln_cb,
    recurrent, keep_c, keep_h, offsets, batch_sizes, steps, scalars, batch, size, hidden_size,
    REVERSE: tl.constexpr, PEEPHOLE_I: tl.constexpr, PEEPHOLE_F: tl.constexpr, PEEPHOLE_O: tl.constexpr,
    LAYER_NORM: tl.constexpr, PROJECT: tl.constexpr, RECURRENT: tl.constexpr,
    KEEP_C: tl.constexpr, KEEP_H: tl.constexpr, COUPLED: tl.constexpr, CLIPPING: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    # in ``_scalars``' order
    clip, small, eps = tl.load(scalars), tl.load(scalars + 1), tl.load(scalars + 2)
    keep_c_value, keep_h_value = tl.load(scalars + 3), tl.load(scalars + 4)
    b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    exists = b < batch
    width = 4 * size
    for s in range(steps):
        if REVERSE:
            t = steps - 1 - s
        else:
            t = s
        start = tl.load(offsets + t)
        live = b < tl.load(batch_sizes + t)
        rows = start + b
        h_src = hidden + (s % 2) * batch * hidden_size
        h_dst = hidden + ((s + 1) % 2) * batch * hidden_size

        if LAYER_NORM:  # W_hh h of the whole row first: its mean and spread over 4H
            for n0 in range(0, width, BLOCK_H):
                n, n_live, inside = _columns(n0, width, live, BLOCK_H)
                z = _times(
                    h_src, hidden_size, b, live, recurrent, w_hh_t, width, n, n_live, hidden_size,
                    RECURRENT, BLOCK_B, BLOCK_H, BLOCK_K,
                )  # fmt: skip
                tl.store(hh_hat + rows[:, None] * width + n[None, :], z, mask=inside)
            tl.debug_barrier()
            mean, hh_inverse = _row_moments(hh_hat, rows, live, width, eps, BLOCK_B, BLOCK_H)
            tl.store(hh_rstd + rows, hh_inverse, mask=live)
        else:  # unused
            mean = tl.zeros((BLOCK_B,), dtype=w_hh_t.dtype.element_ty)
            hh_inverse = mean

        for n0 in range(0, size, BLOCK_H):
            n, n_live, inside = _columns(n0, size, live, BLOCK_H)
            at = rows[:, None] * width + n[None, :]
            state_at = b[:, None] * size + n[None, :]
            a_i = tl.load(gates + at, mask=inside, other=0.0)
            a_f = tl.load(gates + at + size, mask=inside, other=0.0)
            a_g = tl.load(gates + at + 2 * size, mask=inside, other=0.0)
            a_o = tl.load(gates + at + 3 * size, mask=inside, other=0.0)
            # the recurrent side of each gate: W_hh h's block, or its layer norm times the gain
            a_i += _recurrent_side(
                0, at, n, n_live, inside, size, h_src, hidden_size, b, live, recurrent, w_hh_t, hh_hat,
                ln_hh, mean, hh_inverse, LAYER_NORM, RECURRENT, BLOCK_B, BLOCK_H, BLOCK_K,
            )  # fmt: skip
            a_f += _recurrent_side(
                1, at, n, n_live, inside, size, h_src, hidden_size, b, live, recurrent, w_hh_t, hh_hat,
                ln_hh, mean, hh_inverse, LAYER_NORM, RECURRENT, BLOCK_B, BLOCK_H, BLOCK_K,
            )  # fmt: skip
            a_g += _recurrent_side(
                2, at, n, n_live, inside, size, h_src, hidden_size, b, live, recurrent, w_hh_t, hh_hat,
                ln_hh, mean, hh_inverse, LAYER_NORM, RECURRENT, BLOCK_B, BLOCK_H, BLOCK_K,
            )  # fmt: skip
            a_o += _recurrent_side(
                3, at, n, n_live, inside, size, h_src, hidden_size, b, live, recurrent, w_hh_t, hh_hat,
                ln_hh, mean, hh_inverse, LAYER_NORM, RECURRENT, BLOCK_B, BLOCK_H, BLOCK_K,
            )  # fmt: skip
            c_prev = tl.load(cell + state_at, mask=inside, other=0.0)
            if PEEPHOLE_I:
                a_i += tl.load(p_i + n, mask=n_live, other=0.0)[None, :] * c_prev
            if PEEPHOLE_F:
                a_f += tl.load(p_f + n, mask=n_live, other=0.0)[None, :] * c_prev
            if CLIPPING:
                flags = gate_inside + at
                tl.store(flags, ((a_i >= -clip) & (a_i <= clip)).to(tl.uint8), mask=inside)
                tl.store(flags + size, ((a_f >= -clip) & (a_f <= clip)).to(tl.uint8), mask=inside)
                tl.store(flags + 2 * size, ((a_g >= -clip) & (a_g <= clip)).to(tl.uint8), mask=inside)
                a_i = tl.minimum(tl.maximum(a_i, -clip), clip)
                a_f = tl.minimum(tl.maximum(a_f, -clip), clip)
                a_g = tl.minimum(tl.maximum(a_g, -clip), clip)
            forget_gate = tl.sigmoid(a_f)
            if COUPLED:
                input_gate = 1.0 - forget_gate
            else:
                input_gate = tl.sigmoid(a_i)
            candidate = _tanh(a_g, small)
            c_new = forget_gate * c_prev + input_gate * candidate
            if PEEPHOLE_O:
                a_o += tl.load(p_o + n, mask=n_live, other=0.0)[None, :] * c_new
            if CLIPPING:
                tl.store(
                    gate_inside + at + 3 * size,
                    ((a_o >= -clip) & (a_o <= clip)).to(tl.uint8),
                    mask=inside,
                )
                a_o = tl.minimum(tl.maximum(a_o, -clip), clip)
            output_gate = tl.sigmoid(a_o)
            tl.store(gates + at, input_gate, mask=inside)
            tl.store(gates + at + size, forget_gate, mask=inside)
            tl.store(gates + at + 2 * size, candidate, mask=inside)
            tl.store(gates + at + 3 * size, output_gate, mask=inside)
            tl.store(cell_new + rows[:, None] * size + n[None, :], c_new, mask=inside)
            carried = c_new
            if KEEP_C != 0:
                keep = _keep(keep_c, keep_c_value, rows[:, None] * size + n[None, :], inside, KEEP_C)
                carried = keep * c_prev + (1.0 - keep) * c_new
                tl.store(cells + rows[:, None] * size + n[None, :], carried, mask=inside)
            tl.store(cell + state_at, carried, mask=inside)
            if not LAYER_NORM:  # o * tanh(c'), before the projection and zoneout of h
                r = output_gate * _tanh(c_new, small)
                if PROJECT:
                    tl.store(unprojected + rows[:, None] * size + n[None, :], r, mask=inside)
                else:
                    tl.store(out + rows[:, None] * hidden_size + n[None, :], r, mask=inside)

        if LAYER_NORM:  # LN(c') over the row's H units, then o * tanh(LN(c'))
            tl.debug_barrier()
            c_mean, c_inverse = _row_moments(cell_new, rows, live, size, eps, BLOCK_B, BLOCK_H)
            tl.store(cell_rstd + rows, c_inverse, mask=live)
            for n0 in range(0, size, BLOCK_H):
                n, n_live, inside = _columns(n0, size, live, BLOCK_H)
                at = rows[:, None] * size + n[None, :]
                c = tl.load(cell_new + at, mask=inside, other=0.0)
                hat = (c - c_mean[:, None]) * c_inverse[:, None]
                tl.store(cell_hat + at, hat, mask=inside)
                squashed = (
                    hat * tl.load(ln_cw + n, mask=n_live, other=0.0)[None, :]
                    + tl.load(ln_cb + n, mask=n_live, other=0.0)[None, :]
                )
                output_gate = tl.load(
                    gates + rows[:, None] * width + 3 * size + n[None, :], mask=inside, other=0.0
                )
                r = output_gate * _tanh(squashed, small)
                if PROJECT:
                    tl.store(unprojected + at, r, mask=inside)
                else:
                    tl.store(out + rows[:, None] * hidden_size + n[None, :], r, mask=inside)

        tl.debug_barrier()
        for p0 in range(0, hidden_size, BLOCK_H):  # h'_t (projected), zoneout, the next state
            p, p_live, inside = _columns(p0, hidden_size, live, BLOCK_H)
            at = rows[:, None] * hidden_size + p[None, :]
            if PROJECT:
                h_new = _times(
                    unprojected, size, rows, live, unprojected, w_hr_t, hidden_size, p, p_live, size,
                    False, BLOCK_B, BLOCK_H, BLOCK_K,
                )  # fmt: skip
            else:
                h_new = tl.load(out + at, mask=inside, other=0.0)
            h_prev = tl.load(
                h_src + b[:, None] * hidden_size + p[None, :], mask=exists[:, None] & p_live[None, :]
            )
            if KEEP_H != 0:
                keep = _keep(keep_h, keep_h_value, at, inside, KEEP_H)
                h_new = keep * h_prev + (1.0 - keep) * h_new
            tl.store(out + at, h_new, mask=inside)
            tl.store(
                h_dst + b[:, None] * hidden_size + p[None, :],
                tl.where(live[:, None], h_new, h_prev),
                mask=exists[:, None] & p_live[None, :],
            )
        tl.debug_barrier()


@triton.jit
def lstm_backward(
    gates, cell_new, hh_hat, hh_rstd, cell_hat, cell_rstd, gate_inside, cell_prev,
    d_out, dh, dc, d_gates, d_recurrent, d_squashed, d_projected, d_hidden, carry_h, d_new_rows,
    w_hh, w_hr, p_i, p_f, p_o, ln_hh, ln_cw, ln_cb,
    recurrent, keep_c, keep_h, offsets, batch_sizes, steps, scalars, batch, size, hidden_size,
    REVERSE: tl.constexpr, PEEPHOLE_I: tl.constexpr, PEEPHOLE_F: tl.constexpr, PEEPHOLE_O: tl.constexpr,
    LAYER_NORM: tl.constexpr, PROJECT: tl.constexpr, RECURRENT: tl.constexpr,
    KEEP_C: tl.constexpr, KEEP_H: tl.constexpr, COUPLED: tl.constexpr, CLIPPING: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    # in ``_scalars``' order; the backward pass uses the clip flags, not the bound, and no eps
    small = tl.load(scalars + 1)
    keep_c_value, keep_h_value = tl.load(scalars + 3), tl.load(scalars + 4)
    b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    exists = b < batch
    width = 4 * size
    for s in range(steps):
        if REVERSE:  # the forward pass's order, reversed
            t = s
        else:
            t = steps - 1 - s
        start = tl.load(offsets + t)
        live = b < tl.load(batch_sizes + t)
        rows = start + b
        dh_src = dh + (s % 2) * batch * hidden_size
        dh_dst = dh + ((s + 1) % 2) * batch * hidden_size

        # dL/dh'_t: the carried gradient and the output's, less what zoneout passes to h_{t-1}
        for p0 in range(0, hidden_size, BLOCK_H):
            p, _, inside = _columns(p0, hidden_size, live, BLOCK_H)
            state_at = b[:, None] * hidden_size + p[None, :]
            at = rows[:, None] * hidden_size + p[None, :]
            d_h = tl.load(dh_src + state_at, mask=inside, other=0.0) + tl.load(
                d_out + at, mask=inside, other=0.0
            )
            if KEEP_H != 0:
                keep = _keep(keep_h, keep_h_value, at, inside, KEEP_H)
                tl.store(carry_h + state_at, d_h * keep, mask=inside)
                d_h *= 1.0 - keep
            if PROJECT:
                tl.store(d_projected + at, d_h, mask=inside)
            else:
                tl.store(d_hidden + state_at, d_h, mask=inside)
        tl.debug_barrier()

        # dL/do and dL/dc' through h = o * tanh(LN_c(c')), up to LN_c's backward
        sum_d = tl.zeros((BLOCK_B,), dtype=w_hh.dtype.element_ty)
        sum_dh = tl.zeros((BLOCK_B,), dtype=w_hh.dtype.element_ty)
        for n0 in range(0, size, BLOCK_H):
            n, n_live, inside = _columns(n0, size, live, BLOCK_H)
            at = rows[:, None] * size + n[None, :]
            if PROJECT:
                d_r = _times(
                    d_projected, hidden_size, rows, live, d_projected, w_hr, size, n, n_live, hidden_size,
                    False, BLOCK_B, BLOCK_H, BLOCK_K,
                )  # fmt: skip
            else:
                d_r = tl.load(d_hidden + b[:, None] * hidden_size + n[None, :], mask=inside, other=0.0)
            output_gate = tl.load(
                gates + rows[:, None] * width + 3 * size + n[None, :], mask=inside, other=0.0
            )
            if LAYER_NORM:
                hat = tl.load(cell_hat + at, mask=inside, other=0.0)
                squashed = (
                    hat * tl.load(ln_cw + n, mask=n_live, other=0.0)[None, :]
                    + tl.load(ln_cb + n, mask=n_live, other=0.0)[None, :]
                )
            else:
                squashed = tl.load(cell_new + at, mask=inside, other=0.0)
            tanh_squashed = _tanh(squashed, small)
            d_o = d_r * tanh_squashed * output_gate * (1.0 - output_gate)
            if CLIPPING:
                flag = tl.load(
                    gate_inside + rows[:, None] * width + 3 * size + n[None, :], mask=inside, other=0
                )
                d_o = tl.where(flag != 0, d_o, 0.0)
            tl.store(d_gates + rows[:, None] * width + 3 * size + n[None, :], d_o, mask=inside)
            d_new = d_r * output_gate * (1.0 - tanh_squashed * tanh_squashed)
            if LAYER_NORM:
                tl.store(d_squashed + at, d_new, mask=inside)
                d_new *= tl.load(ln_cw + n, mask=n_live, other=0.0)[None, :]
                sum_d += tl.sum(d_new, axis=1)
                sum_dh += tl.sum(d_new * hat, axis=1)
            tl.store(d_new_rows + b[:, None] * size + n[None, :], d_new, mask=inside)
        tl.debug_barrier()

        # the gates' gradients and dL/dc_{t-1}
        sum_s = tl.zeros((BLOCK_B,), dtype=w_hh.dtype.element_ty)
        sum_sh = tl.zeros((BLOCK_B,), dtype=w_hh.dtype.element_ty)
        for n0 in range(0, size, BLOCK_H):
            n, n_live, inside = _columns(n0, size, live, BLOCK_H)
            at = rows[:, None] * size + n[None, :]
            state_at = b[:, None] * size + n[None, :]
            gate_at = rows[:, None] * width + n[None, :]
            d_new = tl.load(d_new_rows + state_at, mask=inside, other=0.0)
            if LAYER_NORM:
                hat = tl.load(cell_hat + at, mask=inside, other=0.0)
                rstd = tl.load(cell_rstd + rows, mask=live, other=0.0)
                d_new = rstd[:, None] * (d_new - (sum_d / size)[:, None] - hat * (sum_dh / size)[:, None])
            d_c = tl.load(dc + state_at, mask=inside, other=0.0)
            if KEEP_C != 0:
                keep = _keep(keep_c, keep_c_value, at, inside, KEEP_C)
                carry_c = d_c * keep
                d_new += d_c * (1.0 - keep)
            else:
                carry_c = tl.zeros((BLOCK_B, BLOCK_H), dtype=w_hh.dtype.element_ty)
                d_new += d_c
            d_o = tl.load(d_gates + gate_at + 3 * size, mask=inside, other=0.0)
            if PEEPHOLE_O:
                d_new += d_o * tl.load(p_o + n, mask=n_live, other=0.0)[None, :]
            input_gate = tl.load(gates + gate_at, mask=inside, other=0.0)
            forget_gate = tl.load(gates + gate_at + size, mask=inside, other=0.0)
            candidate = tl.load(gates + gate_at + 2 * size, mask=inside, other=0.0)
            c_prev = tl.load(cell_prev + at, mask=inside, other=0.0)
            d_g = d_new * input_gate * (1.0 - candidate * candidate)
            d_f = d_new * c_prev
            if COUPLED:  # i = 1 - f: the forget gate takes the input gate's gradient, negated
                d_f -= d_new * candidate
                d_i = tl.zeros((BLOCK_B, BLOCK_H), dtype=w_hh.dtype.element_ty)
            else:
                d_i = d_new * candidate * input_gate * (1.0 - input_gate)
            d_f *= forget_gate * (1.0 - forget_gate)
            if CLIPPING:
                d_i = tl.where(tl.load(gate_inside + gate_at, mask=inside, other=0) != 0, d_i, 0.0)
                d_f = tl.where(tl.load(gate_inside + gate_at + size, mask=inside, other=0) != 0, d_f, 0.0)
                d_g = tl.where(tl.load(gate_inside + gate_at + 2 * size, mask=inside, other=0) != 0, d_g, 0.0)
            tl.store(d_gates + gate_at, d_i, mask=inside)
            tl.store(d_gates + gate_at + size, d_f, mask=inside)
            tl.store(d_gates + gate_at + 2 * size, d_g, mask=inside)
            d_c = d_new * forget_gate + carry_c
            if PEEPHOLE_I:
                d_c += d_i * tl.load(p_i + n, mask=n_live, other=0.0)[None, :]
            if PEEPHOLE_F:
                d_c += d_f * tl.load(p_f + n, mask=n_live, other=0.0)[None, :]
            tl.store(dc + state_at, d_c, mask=inside)
            if LAYER_NORM:  # the sums of LN(W_hh h)'s backward, over all four gates
                sum_s, sum_sh = _gain_sums(d_i, ln_hh, hh_hat + gate_at, n, n_live, inside, sum_s, sum_sh)
                sum_s, sum_sh = _gain_sums(
                    d_f, ln_hh + size, hh_hat + gate_at + size, n, n_live, inside, sum_s, sum_sh
                )
                sum_s, sum_sh = _gain_sums(
                    d_g, ln_hh + 2 * size, hh_hat + gate_at + 2 * size, n, n_live, inside, sum_s, sum_sh
                )
                sum_s, sum_sh = _gain_sums(
                    d_o, ln_hh + 3 * size, hh_hat + gate_at + 3 * size, n, n_live, inside, sum_s, sum_sh
                )
        tl.debug_barrier()

        if LAYER_NORM:  # dL/d(W_hh h) through LN over the 4H columns
            rstd = tl.load(hh_rstd + rows, mask=live, other=0.0)
            for n0 in range(0, width, BLOCK_H):
                n, n_live, inside = _columns(n0, width, live, BLOCK_H)
                at = rows[:, None] * width + n[None, :]
                scaled = (
                    tl.load(d_gates + at, mask=inside, other=0.0)
                    * tl.load(ln_hh + n, mask=n_live, other=0.0)[None, :]
                )
                hat = tl.load(hh_hat + at, mask=inside, other=0.0)
                d_z = rstd[:, None] * (scaled - (sum_s / width)[:, None] - hat * (sum_sh / width)[:, None])
                tl.store(d_recurrent + at, d_z, mask=inside)
            tl.debug_barrier()

        for p0 in range(0, hidden_size, BLOCK_H):  # dL/dh_{t-1}
            p, p_live, inside = _columns(p0, hidden_size, live, BLOCK_H)
            state_at = b[:, None] * hidden_size + p[None, :]
            d_prev = _times(
                d_recurrent, width, rows, live, d_recurrent, w_hh, hidden_size, p, p_live, width,
                False, BLOCK_B, BLOCK_H, BLOCK_K,
            )  # fmt: skip
            if RECURRENT:
                d_prev *= tl.load(recurrent + state_at, mask=inside, other=0.0)
            if KEEP_H != 0:
                d_prev += tl.load(carry_h + state_at, mask=inside, other=0.0)
            d_before = tl.load(dh_src + state_at, mask=exists[:, None] & p_live[None, :])
            tl.store(
                dh_dst + state_at,
                tl.where(live[:, None], d_prev, d_before),
                mask=exists[:, None] & p_live[None, :],
            )
        tl.debug_barrier()
