"""The kernels' support modules: whole-sequence products (``kernels.matmul``) against float64
products, and the thread runner (``kernels.pool``) on torch's OpenMP threads and its fallback."""

import platform
import threading

import pytest
import torch

from lstmkit.kernels import matmul, pool

ON_TORCH_WHEEL = platform.system() == "Linux" and platform.machine() == "x86_64"


@pytest.mark.skipif(not ON_TORCH_WHEEL, reason="the x86-64 Linux wheel of torch carries oneDNN and libgomp")
def test_this_torch_offers_onednn_products_and_its_openmp_runtime():
    """Fail loudly rather than fall back silently to the slower paths on the machines measured."""
    assert matmul._onednn_available()
    assert pool._openmp() is not None


def _operands(dtype: torch.dtype, strided: bool) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    x, weight, d = (
        torch.randn(size, generator=generator, dtype=dtype) for size in ((53, 17), (24, 17), (53, 24))
    )
    bias = torch.randn(24, generator=generator, dtype=dtype)
    if strided:  # the same values through transposed views, as the backward pass hands them
        x, weight, d = (t.t().contiguous().t() for t in (x, weight, d))
    return x, weight, d, bias


@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "transposed views"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_products_equal_float64_products(dtype, strided):
    x, weight, d, bias = _operands(dtype, strided)
    exact = [t.double() for t in (x, weight, d, bias)]
    xe, we, de, be = exact
    results = {
        "linear": (matmul.linear(x, weight), xe @ we.t()),
        "linear + bias": (matmul.linear(x, weight, bias), xe @ we.t() + be),
        "times": (matmul.times(d, weight), de @ we),
        "weight_gradient": (matmul.weight_gradient(d, x), de.t() @ xe),
    }
    bound = 1e-5 if dtype == torch.float32 else 1e-12
    for name, (result, expected) in results.items():
        assert result.dtype == dtype and result.shape == expected.shape, name
        error = float((result.double() - expected).abs().max())
        assert error <= bound * float(expected.abs().max()), f"{name}: {error}"


def test_float64_and_empty_products_take_torch_matmul_exactly():
    x, weight, d, _ = _operands(torch.float64, strided=False)
    assert torch.equal(matmul.linear(x, weight), x @ weight.t())
    assert torch.equal(matmul.weight_gradient(d, x), d.t() @ x)
    empty = torch.zeros(0, 17)
    assert matmul.linear(empty, weight.float()).shape == (0, 24)
    assert torch.equal(matmul.weight_gradient(torch.zeros(0, 24), empty), torch.zeros(24, 17))


@pytest.fixture(params=["torch's OpenMP", "thread pool"])
def runtime(request, monkeypatch):
    if request.param == "thread pool":
        monkeypatch.setattr(pool, "_openmp", lambda: None)
    return request.param


def test_run_calls_every_part_once_on_as_many_threads(runtime):
    calls = []
    barrier = threading.Barrier(3, timeout=10)  # every part must run at once, each on its own thread

    def kernel(tag, first, last, scale):
        calls.append((tag, first, last, scale, threading.get_ident()))
        barrier.wait()

    pool.run(kernel, ("k",), [(0, 2), (2, 5), (5, 6)], (1.5,))
    assert sorted(call[:4] for call in calls) == [("k", 0, 2, 1.5), ("k", 2, 5, 1.5), ("k", 5, 6, 1.5)]
    assert len({call[4] for call in calls}) == 3


def test_run_reraises_an_error_after_every_part_ended(runtime):
    finished = []

    def kernel(first, last):
        if first == 1:
            raise ValueError("part 1 failed")
        finished.append(first)

    with pytest.raises(ValueError, match="part 1 failed"):
        pool.run(kernel, (), [(0, 1), (1, 2), (2, 3)], ())
    assert sorted(finished) == [0, 2]


def test_run_with_one_part_calls_on_this_thread():
    here = []
    pool.run(lambda first, last: here.append(threading.get_ident()), (), [(0, 4)], ())
    assert here == [threading.get_ident()]
