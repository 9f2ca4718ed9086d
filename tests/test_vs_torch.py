"""lstmkit.LSTM and lstmkit.RNN equal torch.nn.LSTM and torch.nn.RNN with the same weights:
outputs, final states and every gradient, over random configurations (hypothesis)."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import lstmkit
from lstmkit.kernels import cpu, mkl

from ._compare import TOLERANCE, Case, compare
from ._products import expand, selected, triton_examples

LSTM_BACKENDS = [b for b in lstmkit.functional.available("lstm") if b != "auto"]
RNN_BACKENDS = [b for b in lstmkit.functional.available("rnn") if b != "auto"]


@st.composite
def cases(draw, kind: str) -> Case:
    hidden = draw(st.integers(1, 5))
    batched = draw(st.booleans())
    batch = draw(st.integers(1, 4)) if batched else 1
    steps = draw(st.integers(1, 5))
    packed = batched and draw(st.booleans())
    lengths = tuple(draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))) if packed else None
    return Case(
        kind=kind,
        input_size=draw(st.integers(1, 4)),
        hidden_size=hidden,
        num_layers=draw(st.integers(1, 3)),
        bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bidirectional=draw(st.booleans()),
        proj_size=draw(st.integers(0, hidden - 1)) if kind == "LSTM" else 0,
        nonlinearity=draw(st.sampled_from(["tanh", "relu"])),
        steps=steps,
        batch=batch,
        batched=batched,
        with_state=draw(st.booleans()),
        lengths=lengths,
        dtype=draw(st.sampled_from([torch.float32, torch.float64])),
    )


def _pair(case: Case, backend: str, seed: int):
    torch.manual_seed(seed)
    reference = case.torch_module()
    cls = lstmkit.LSTM if case.kind == "LSTM" else lstmkit.RNN
    return cls.from_torch(reference, backend=backend), reference


@pytest.mark.parametrize("backend", expand([b for b in LSTM_BACKENDS if b != "triton"]))
@given(case=cases("LSTM"), seed=st.integers(0, 2**16))
def test_lstm_equals_torch(backend, case, seed):
    with selected(backend) as backend:
        compare(case, *_pair(case, backend, seed), seed=seed)


# a quarter of the examples (``triton_examples``); test_triton holds it to the reference where
# its tiling shows
@pytest.mark.skipif("triton" not in LSTM_BACKENDS, reason="Triton is not installed")
@triton_examples
@given(case=cases("LSTM"), seed=st.integers(0, 2**16))
def test_lstm_equals_torch_in_triton(case, seed):
    compare(case, *_pair(case, "triton", seed), seed=seed)


@pytest.mark.parametrize("backend", expand(RNN_BACKENDS))
@given(case=cases("RNN"), seed=st.integers(0, 2**16))
def test_rnn_equals_torch(backend, case, seed):
    with selected(backend) as backend:
        compare(case, *_pair(case, backend, seed), seed=seed)


# float32 only in Triton's interpreter (15 s a dtype): rounding is what builds up over long
# sequences, and test_triton checks its tiles in float64
@pytest.mark.parametrize(
    "backend, dtype",
    [
        (b, d)
        for b in expand(LSTM_BACKENDS)
        for d in (torch.float32, torch.float64)
        if b != "triton" or d == torch.float32
    ],
    ids=str,
)
def test_larger_lstm_equals_torch(backend, dtype):
    """Sizes where the gate blocks are wide and sequences long enough for errors to build up."""
    case = Case(
        input_size=16, hidden_size=32, num_layers=2, bidirectional=True, steps=30, batch=8, dtype=dtype
    )
    packed = Case(
        input_size=16,
        hidden_size=32,
        proj_size=12,
        steps=30,
        batch=5,
        lengths=(30, 7, 19, 1, 30),
        dtype=dtype,
    )
    with selected(backend) as backend:
        compare(case, *_pair(case, backend, 1), seed=1)
        compare(packed, *_pair(packed, backend, 2), seed=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", [b for b in expand(LSTM_BACKENDS) if b.startswith("cpu")])
def test_wide_lstm_equals_torch(backend, dtype, monkeypatch):
    """A hidden size whose W_hh the compiled kernels take in two column panels each way on
    OpenBLAS's small-matrix path."""
    monkeypatch.setattr(cpu, "small_path", lambda: True)
    monkeypatch.setattr(cpu, "MKL_PRODUCTS", False)  # for the panels; ``selected`` picks the library
    w_hh, like = torch.zeros(4 * 192, 192), np.zeros((1, 4 * 192), np.float32)
    assert [len(cpu._blocked(w_hh, like, 3, transpose)[0]) for transpose in (True, False)] == [2, 2]
    case = Case(input_size=8, hidden_size=192, steps=4, batch=3, dtype=dtype)
    with selected(backend) as backend:
        compare(case, *_pair(case, backend, 3), seed=3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", [b for b in expand(LSTM_BACKENDS) if b.startswith("cpu")])
def test_single_rows_equal_torch(backend, dtype):
    """Steps of one row, whose products by panels ``cpu.ROW_PRODUCT_WIDTH`` wide or wider run in
    the kernels' own loop (``cpu._row_product``): a batch of one, two layers of H = 64 (4H =
    256 columns), packed sequences whose longest runs on alone for its last steps, a projection
    from H = 320 to 256 (W_hr's products both ways), and the plain RNN's batch of one at H = 256."""
    assert 4 * 64 >= cpu.ROW_PRODUCT_WIDTH and 256 >= cpu.ROW_PRODUCT_WIDTH
    single = Case(input_size=8, hidden_size=64, num_layers=2, steps=12, batch=1, dtype=dtype)
    packed = Case(input_size=8, hidden_size=64, steps=12, batch=3, lengths=(12, 3, 5), dtype=dtype)
    projected = Case(input_size=8, hidden_size=320, proj_size=256, steps=3, batch=1, dtype=dtype)
    rnn = Case(kind="RNN", input_size=8, hidden_size=256, steps=6, batch=1, dtype=dtype)
    with selected(backend) as backend:
        compare(single, *_pair(single, backend, 4), seed=4)
        compare(packed, *_pair(packed, backend, 5), seed=5)
        compare(projected, *_pair(projected, backend, 7), seed=7)
        compare(rnn, *_pair(rnn, backend, 6), seed=6)


@pytest.mark.skipif(not cpu.available(), reason="the compiled kernel is not installed")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_input_side_step_by_step_equals_torch(dtype, monkeypatch, torch_threads):
    """A split recurrence whose W_ih is large enough at the thresholds as they are to be
    multiplied step by step in each part (``cpu._steps_input``): two bidirectional layers of H =
    64 on two threads, with autograd and under no_grad (``cpu.lstm_inference``)."""
    monkeypatch.setattr(cpu, "MIN_THREAD_WORK", 1)
    monkeypatch.setattr(cpu, "MKL_PRODUCTS", False)
    monkeypatch.setattr(cpu, "small_path", lambda: True)
    torch_threads(2)
    stepped = []
    monkeypatch.setattr(
        cpu, "_steps_input", lambda *a, real=cpu._steps_input: stepped.append(real(*a)) or stepped[-1]
    )
    case = Case(
        input_size=64, hidden_size=64, num_layers=2, bidirectional=True, steps=9, batch=6, dtype=dtype
    )
    lstm, reference = _pair(case, "cpu", 8)
    compare(case, lstm, reference, seed=8)
    x = torch.randn(case.input_shape(), dtype=dtype)
    with torch.no_grad():
        torch.testing.assert_close(lstm(x)[0], reference(x)[0], **TOLERANCE[dtype])
    assert stepped == [True] * 8  # the autograd pass's four layer directions, then inference's


@pytest.mark.skipif(not cpu.available(), reason="the compiled kernel is not installed")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_aligned_empty_starts_on_a_cache_line(dtype):
    """``cpu._aligned_empty``, the kernels' buffer for one row's products: the shape asked for,
    C-contiguous, on a cache line, across many allocations."""
    like = np.zeros(1, dtype)
    for rows, width in ((1, 256), (3, 100), (16, 512), (1, 1)) * 8:
        array = cpu._aligned_empty(rows, width, like)
        assert array.shape == (rows, width) and array.dtype == dtype and array.flags.c_contiguous
        assert array.ctypes.data % cpu.ALIGNMENT == 0


@pytest.mark.skipif(not cpu.available(), reason="Numba is not installed")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_products_without_openblas_small_path_equal_torch(dtype, monkeypatch):
    """Where OpenBLAS has no small-matrix path (``cpu.small_path``), W is one panel multiplied by
    every row at once; where MKL takes float32's products of several rows but not a single row's
    (``MKL_SINGLE_ROWS``), a batch of one multiplies on OpenBLAS and ``_row_product``, a batch of
    three on MKL's packed W: each against nn.LSTM, padded and packed."""
    monkeypatch.setattr(cpu, "small_path", lambda: False)
    monkeypatch.setattr(cpu, "MKL_PRODUCTS", mkl.available())
    monkeypatch.setattr(cpu, "MKL_SINGLE_ROWS", False)
    w_hh, like = torch.zeros(4 * 192, 192, dtype=dtype), torch.zeros(1, 4 * 192, dtype=dtype).numpy()
    for transpose in (True, False):
        panels, rows, packed = cpu._blocked(w_hh, like, 1, transpose)
        assert panels.shape == (1, *(w_hh.t() if transpose else w_hh).shape) and rows >= 2**62
        assert packed.size == 0
    assert cpu._mkl_addresses(like, 1) == (0, 0, 0)
    several = cpu._blocked(w_hh, like, 3, True)
    assert (several[2].size > 0) == (mkl.available() and dtype == torch.float32)
    for batch, lengths in ((1, None), (3, None), (3, (5, 1, 3))):
        case = Case(input_size=8, hidden_size=192, steps=5, batch=batch, lengths=lengths, dtype=dtype)
        compare(case, *_pair(case, "cpu", batch), seed=batch)


@pytest.mark.parametrize("transpose", [True, False], ids=["W.T", "W"])
def test_blocked_panels_start_on_a_cache_line(transpose, monkeypatch):
    """The panels that the compiled kernels multiply by on OpenBLAS start on a cache line
    (``cpu.ALIGNMENT``, 20-27% faster there) and hold W, or W.T, whatever the weight's own
    alignment: here a weight 4 bytes into its buffer, in four panels, and in one, which is copied
    too, where an aligned W is taken as it is."""
    monkeypatch.setattr(cpu, "MKL_PRODUCTS", False)
    monkeypatch.setattr(cpu, "small_path", lambda: True)
    weight, like = torch.randn(256 * 64 + 1)[1:].view(256, 64), np.zeros((1, 256), np.float32)
    assert weight.data_ptr() % cpu.ALIGNMENT != 0
    matrix = (weight.t() if transpose else weight).numpy()
    for small_product, count in ((2**15, 4), (cpu.SMALL_PRODUCT, 1)):
        monkeypatch.setattr(cpu, "SMALL_PRODUCT", small_product)
        panels = cpu._blocked(weight, like, 16, transpose)[0]
        assert len(panels) == count and panels.flags.c_contiguous
        assert panels.ctypes.data % cpu.ALIGNMENT == 0 and panels[0].nbytes % cpu.ALIGNMENT == 0
        np.testing.assert_array_equal(np.concatenate(list(panels), axis=1), matrix)
    aligned = weight.clone()
    assert aligned.data_ptr() % cpu.ALIGNMENT == 0
    assert cpu._blocked(aligned, like, 16)[0].ctypes.data == aligned.data_ptr()


def test_lengths_keyword_equals_packing():
    """lstm(x, lengths=...) is pack_padded_sequence -> lstm -> pad_packed_sequence."""
    torch.manual_seed(0)
    model = lstmkit.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64)
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    lengths = [2, 6, 1, 4]
    out, (h, c) = model(x, lengths=lengths)
    packed = nn.utils.rnn.pack_padded_sequence(
        x, torch.tensor(lengths), batch_first=True, enforce_sorted=False
    )
    out_p, (h_p, c_p) = model.to_torch()(packed)
    torch.testing.assert_close(
        out, nn.utils.rnn.pad_packed_sequence(out_p, batch_first=True, total_length=6)[0]
    )
    torch.testing.assert_close(h, h_p)
    torch.testing.assert_close(c, c_p)


@pytest.mark.parametrize("backend", LSTM_BACKENDS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
def test_cells_equal_torch(backend, bias, batched, with_state):
    gen = torch.Generator().manual_seed(3)
    for kind, nonlinearity in (("LSTM", None), ("RNN", "tanh"), ("RNN", "relu")):
        torch.manual_seed(4)
        if kind == "LSTM":
            theirs = nn.LSTMCell(3, 5, bias=bias, dtype=torch.float64)
            ours = lstmkit.LSTMCell.from_torch(theirs, backend=backend)
        else:
            theirs = nn.RNNCell(3, 5, bias=bias, nonlinearity=nonlinearity, dtype=torch.float64)
            ours = lstmkit.RNNCell.from_torch(theirs, backend=backend if backend in RNN_BACKENDS else "torch")
        batch = (4,) if batched else ()
        x = torch.randn(*batch, 3, generator=gen, dtype=torch.float64)
        states = [
            torch.randn(*batch, 5, generator=gen, dtype=torch.float64)
            for _ in range(2 if kind == "LSTM" else 1)
        ]
        grads = []
        for module in (ours, theirs):
            leaves = [t.clone().requires_grad_() for t in [x, *states]]
            hx = None if not with_state else (tuple(leaves[1:]) if kind == "LSTM" else leaves[1])
            out = module(leaves[0], hx)
            out = out if isinstance(out, tuple) else (out,)
            sum(
                (o * (k + 1.5) * torch.arange(o.numel()).view(o.shape)).sum() for k, o in enumerate(out)
            ).backward()
            grads.append(
                [o.detach() for o in out] + [t.grad for t in leaves] + [p.grad for p in module.parameters()]
            )
        for a, b in zip(*grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", [b for b in lstmkit.functional.available("lstm") if b != "auto"])
@pytest.mark.parametrize("used", ["output", "h_n", "c_n"])
@pytest.mark.parametrize("steps", [1, 5])
def test_gradients_when_one_output_alone_reaches_the_loss(backend, used, steps):
    """Outputs that the loss never reads get no gradient from autograd (None, not zeros); one
    step runs the one-step kernels' own Function on "cpu"."""
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(3, 4, 2, bidirectional=True, dtype=torch.float64)
    ours = lstmkit.LSTM.from_torch(theirs, backend=backend)
    x = torch.randn(steps, 2, 3, dtype=torch.float64)
    grads = []
    for model in (theirs, ours):
        leaf = x.clone().requires_grad_()
        out, (h, c) = model(leaf)
        {"output": out, "h_n": h, "c_n": c}[used].square().sum().backward()
        grads.append([leaf.grad, *(p.grad for p in model.parameters())])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", LSTM_BACKENDS)
@pytest.mark.parametrize("trained", ["inputs", "weights", "weight_hh", "c_0"])
def test_cells_with_frozen_parts_equal_torch(backend, trained):
    """An LSTMCell where only some leaves require grad (a frozen cell fed by a trained encoder,
    a trained cell on fixed inputs): the same gradients as nn.LSTMCell's, None for the rest."""
    torch.manual_seed(5)
    theirs = nn.LSTMCell(3, 5, dtype=torch.float64)
    ours = lstmkit.LSTMCell.from_torch(theirs, backend=backend)
    gen = torch.Generator().manual_seed(6)
    x, h, c = (torch.randn(4, n, generator=gen, dtype=torch.float64) for n in (3, 5, 5))
    grads = []
    for module in (ours, theirs):
        module.requires_grad_(trained == "weights")
        module.weight_hh.requires_grad_(trained in ("weights", "weight_hh"))
        leaves = [
            t.clone().requires_grad_(trained == "inputs" or (trained == "c_0" and k == 2))
            for k, t in enumerate((x, h, c))
        ]
        hidden, cell = module(leaves[0], tuple(leaves[1:]))
        (hidden * torch.arange(20.0, dtype=torch.float64).view(4, 5) + cell.square()).sum().backward()
        grads.append([t.grad for t in leaves] + [p.grad for p in module.parameters()])
    for a, b in zip(*grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
