"""The batch-1 inference recurrence split by cell units over two cores (``kernels.cpu_split``)
equals torch.nn.LSTM and the reference cell, takes the split where it should, is deterministic,
and runs alone where the OpenMP runtime gives it no second thread."""

import numpy as np
import pytest
import torch
from torch import nn

import lstmkit
from lstmkit.kernels import cpu, pool

from ._compare import TOLERANCE

pytestmark = pytest.mark.skipif(not cpu.available(), reason="the compiled kernel is not installed")
if cpu.available():
    from lstmkit.kernels import cpu_split


@pytest.fixture
def split_calls(monkeypatch, torch_threads):
    """Two torch threads, the least split W_hh of a machine without AVX-512 whatever this one
    has, and the number of ``cpu_split._split`` calls from here on."""
    torch_threads(2)
    monkeypatch.setattr(cpu_split, "_least_bytes", lambda: cpu_split.MIN_SPLIT_BYTES)
    calls = []
    real = cpu_split._split
    monkeypatch.setattr(cpu_split, "_split", lambda *a: calls.append(1) or real(*a))
    return calls


def _pair(input_size, hidden_size, dtype, seed, **options):
    torch.manual_seed(seed)
    reference = nn.LSTM(input_size, hidden_size, dtype=dtype, **options)
    return lstmkit.LSTM.from_torch(reference, backend="cpu"), reference


# (T, I, H): a chunk of input side and a short rest (T = 70); H whose halves end off a cache line
# of h (33, 100) or on one (64, 128); the least size split; one of T = 2. The members multiply
# by ``_add_rows`` at H = 128 and, in float64, at H = 100; by ``_add_blocks`` at the others
# (``BLOCKED_BYTES``)
SHAPES = [(70, 16, 64), (200, 64, 128), (9, 5, 33), (130, 100, 100), (2, 3, 32)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_split_equals_torch(shape, dtype, split_calls):
    """Outputs and final states of two bidirectional layers at batch 1, from a given state and
    from zeros, against nn.LSTM: every layer direction on the split kernel."""
    steps, input_size, hidden_size = shape
    lstm, reference = _pair(input_size, hidden_size, dtype, 1, num_layers=2, bidirectional=True)
    x = torch.randn(steps, 1, input_size, dtype=dtype)
    state = tuple(torch.randn(4, 1, hidden_size, dtype=dtype) for _ in range(2))
    with torch.no_grad():
        for given in (state, None):
            ours, (h, c) = lstm(x, given)
            theirs, (h_ref, c_ref) = reference(x, given)
            for a, b in ((ours, theirs), (h, h_ref), (c, c_ref)):
                torch.testing.assert_close(a, b, **TOLERANCE[dtype])
    assert len(split_calls) == 2 * 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_split_options_equal_reference(dtype, split_calls):
    """Cell clipping and the coupled input gate, whose arithmetic stays within a unit, split
    like the plain cell: against the reference backend with the same weights."""
    options = dict(cell_clip=0.5, coupled_input_forget=True)
    lstm = lstmkit.LSTM(24, 64, dtype=dtype, backend="cpu", **options)
    reference = lstmkit.LSTM(24, 64, dtype=dtype, backend="reference", **options)
    reference.load_state_dict(lstm.state_dict())
    x = 3 * torch.randn(80, 1, 24, dtype=dtype)  # large enough for the clip to act
    with torch.no_grad():
        ours, (h, c) = lstm(x)
        theirs, (h_ref, c_ref) = reference(x)
    for a, b in ((ours, theirs), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(a, b, **TOLERANCE[dtype])
    assert len(split_calls) == 1


def test_split_is_deterministic(split_calls):
    """The members' waits fix the order of every sum, however their threads run: the same bits."""
    lstm, _ = _pair(128, 128, torch.float32, 2)
    x = torch.randn(300, 1, 128)
    with torch.no_grad():
        first = lstm(x)[0]
        for _ in range(5):
            assert torch.equal(lstm(x)[0], first)
    assert len(split_calls) == 6


@pytest.mark.parametrize(
    "change",
    ["batch of two", "projection", "one thread", "cell of 31"],
)
def test_not_split_where_it_does_not_apply(change, split_calls, torch_threads):
    """A batch of two, a projection, one torch thread, or a W_hh below ``MIN_SPLIT_BYTES`` (H =
    31 in float32) take the sequence kernels, with nn.LSTM's numbers all the same."""
    assert 4 * 32 * 32 * 4 == cpu_split.MIN_SPLIT_BYTES  # W_hh (4H, H) of float32 at H = 32
    hidden_size = 31 if change == "cell of 31" else 64
    extra = {"proj_size": 16} if change == "projection" else {}
    lstm, reference = _pair(8, hidden_size, torch.float32, 3, **extra)
    x = torch.randn(20, 2 if change == "batch of two" else 1, 8)
    if change == "one thread":
        torch_threads(1)
    with torch.no_grad():
        torch.testing.assert_close(lstm(x)[0], reference(x)[0], **TOLERANCE[torch.float32])
    assert split_calls == []


def test_split_within_a_region_runs_alone(split_calls):
    """Called from the members of a parallel region of torch's OpenMP (``pool.run``), where a
    region of its own has one thread: each call runs every unit itself, without waiting for a
    second member, and still equals nn.LSTM."""
    lstm, reference = _pair(16, 64, torch.float32, 4)
    inputs = [torch.randn(50, 1, 16) for _ in range(2)]
    outputs = [None, None]

    def call(k):
        with torch.no_grad():
            outputs[k] = lstm(inputs[k])[0]

    pool.run([lambda: call(0), lambda: call(1)])
    with torch.no_grad():
        for x, out in zip(inputs, outputs, strict=True):
            torch.testing.assert_close(out, reference(x)[0], **TOLERANCE[torch.float32])
    assert len(split_calls) == 2


@pytest.mark.parametrize(
    ("size", "itemsize", "cut"),
    [(128, 4, 64), (100, 4, 48), (33, 4, 16), (40, 4, 20), (24, 8, 12), (64, 8, 32)],
)
def test_cut_keeps_the_members_on_lines_of_their_own(size, itemsize, cut):
    """The second member's first unit: half, moved onto a cache line of h where that is near."""
    assert cpu_split._cut(size, itemsize) == cut


@pytest.mark.parametrize(
    ("features", "least"), [("+avx2,-avx512f", 2**14), ("+avx2,+avx512f,+avx512bw", 2**18)]
)
def test_least_split_follows_avx512(features, least, monkeypatch):
    """The least W_hh split: 256 KB where LLVM compiles for AVX-512, 16 KB elsewhere."""
    monkeypatch.setattr(cpu, "target_machine", lambda: ("x86_64-unknown-linux-gnu", "core", features))
    assert cpu_split._least_bytes.__wrapped__() == least


# (K, N): every size of column block in one panel (8 + 4 + 2 + 1 vectors of float32 and three
# columns more), fewer columns than a vector, no rows, and the member panels of H = 48 and 64
@pytest.mark.parametrize("shape", [(5, 123), (3, 7), (0, 16), (48, 96), (64, 128)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocks_multiply_as_the_row_passes(shape, dtype):
    """``_add_blocks`` (the members' product for panels under ``BLOCKED_BYTES``) and
    ``_add_rows`` (for larger ones) both add a @ panel to out: against NumPy in float64, and on
    a panel whose rows are a slice of wider ones and an a with a stride, as the members pass
    their halves of h_{t-1}."""
    rows, width = shape
    rng = np.random.default_rng(rows * width)
    a = rng.standard_normal(2 * rows).astype(dtype)[::2]
    wide = rng.standard_normal((rows, width + 9)).astype(dtype)
    panel = wide[:, 5 : 5 + width]
    out = rng.standard_normal(width).astype(dtype)
    expected = out.astype(np.float64) + a.astype(np.float64) @ panel.astype(np.float64)
    tolerance = TOLERANCE[torch.float32 if dtype == np.float32 else torch.float64]
    for add in (cpu_split._add_blocks, cpu_split._add_rows):
        result = out.copy()
        add(a, panel, result)
        np.testing.assert_allclose(result, expected, rtol=tolerance["rtol"], atol=tolerance["atol"])
