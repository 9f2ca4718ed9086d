"""The kernels' support modules: whole-sequence products (``kernels.matmul``) against float64
products, and the thread runner (``kernels.pool``) on torch's OpenMP threads and its fallback."""

import functools
import platform
import threading

import numpy as np
import pytest
import torch

from lstmkit.kernels import cpu, masks, matmul, mkl, pool

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
@pytest.mark.parametrize("least_work", [1, 2**62], ids=["oneDNN where it can", "torch.matmul"])
def test_products_equal_float64_products(dtype, strided, least_work, monkeypatch):
    monkeypatch.setattr(matmul, "ONEDNN_PRODUCTS", True)  # which an Intel processor turns off
    monkeypatch.setattr(matmul, "MIN_ONEDNN_WORK", least_work)
    monkeypatch.setattr(matmul, "MIN_ONEDNN_GRADIENT_WORK", least_work)
    x, weight, d, bias = _operands(dtype, strided)
    expected_path = least_work == 1 and dtype == torch.float32 and matmul._onednn_available()
    assert matmul._on_onednn(x, weight, matmul.MIN_ONEDNN_WORK) == expected_path
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


def test_float64_and_empty_products_take_torch_matmul_exactly(monkeypatch):
    monkeypatch.setattr(matmul, "ONEDNN_PRODUCTS", True)
    monkeypatch.setattr(matmul, "MIN_ONEDNN_WORK", 1)
    x, weight, d, _ = _operands(torch.float64, strided=False)
    assert torch.equal(matmul.linear(x, weight), x @ weight.t())
    assert torch.equal(matmul.weight_gradient(d, x), d.t() @ x)
    empty = torch.zeros(0, 17)
    assert matmul.linear(empty, weight.float()).shape == (0, 24)
    assert torch.equal(matmul.weight_gradient(torch.zeros(0, 24), empty), torch.zeros(24, 17))


def test_intel_processors_multiply_on_mkl(monkeypatch):
    """On Intel processors MKL takes its AVX-512 code and was the faster: whole-sequence products
    on torch's matmul, the kernel's float32 steps on MKL's packed gemm, single rows too; elsewhere
    oneDNN, and OpenBLAS's small-matrix path where it has one, else MKL but for single rows (as
    measured on AMD)."""
    assert matmul.ONEDNN_PRODUCTS == (not mkl.preferred())
    if cpu.available():
        assert cpu.MKL_PRODUCTS == (mkl.available() and (mkl.preferred() or not cpu.small_path()))
        assert cpu.MKL_SINGLE_ROWS == mkl.preferred()
    assert mkl.preferred() == (mkl.intel() and torch.backends.mkl.is_available())
    x, weight = torch.randn(64, 128), torch.randn(256, 128)
    monkeypatch.setattr(matmul, "ONEDNN_PRODUCTS", False)
    assert not matmul._on_onednn(x, weight, 1)
    monkeypatch.setattr(matmul, "ONEDNN_PRODUCTS", True)
    assert matmul._on_onednn(x, weight, 1) == matmul._onednn_available()


@pytest.mark.skipif(not cpu.available(), reason="Numba is not installed")
def test_openblas_small_path_comes_with_its_avx512_kernels(monkeypatch):
    """``cpu.small_path``: every OpenBLAS in the process reports an AVX-512 core type (other
    libraries do not count); none, or one with Haswell's kernels, and there is no small path."""
    from types import SimpleNamespace

    mkl_library = SimpleNamespace(internal_api="mkl", architecture="")
    for cores, expected in (
        (("SkylakeX", "SkylakeX"), True),
        (("SapphireRapids", "Cooperlake"), True),
        (("Haswell",), False),
        (("SkylakeX", "Haswell"), False),
        ((), False),
    ):
        libraries = [SimpleNamespace(internal_api="openblas", architecture=core) for core in cores]
        monkeypatch.setattr(cpu, "_blas_libraries", lambda libraries=libraries: [*libraries, mkl_library])
        assert cpu.small_path.__wrapped__() is expected, cores


@pytest.mark.skipif(not cpu.available(), reason="Numba is not installed")
def test_padded_and_packed_batches_share_one_compiled_forward():
    """A padded batch's sizes and row offsets are cached per shape and shared by its calls, so
    read-only; a packed batch's are made read-only too, so the two reach one compiled kernel."""
    import numba

    import lstmkit

    def float32_signatures() -> set:
        return {s for s in cpu._forward.signatures if s[2].dtype == numba.float32}

    lstm = lstmkit.LSTM(8, 8, backend="cpu")
    x = torch.randn(5, 3, 8)
    with torch.no_grad():
        padded, _ = lstm(x)
        after_padded = float32_signatures()
        lstm(x, lengths=[5, 3, 2])
        again, _ = lstm(x)
    assert float32_signatures() == after_padded  # the packed call compiled nothing new
    assert torch.equal(padded, again)
    sizes, offsets = cpu._padded_rows(5, 3)
    assert not sizes.flags.writeable and not offsets.flags.writeable
    assert sizes.tolist() == [3] * 5 and offsets.tolist() == [0, 3, 6, 9, 12]


@functools.cache
def _packed_product():
    """The kernel's packed product (callable from compiled code only), compiled for Python."""
    import numba

    return numba.njit(lambda address, a, packed, out: cpu._packed_product(address, a, packed, out))


@pytest.mark.skipif(not (cpu.available() and mkl.available()), reason="torch exports no MKL here")
@pytest.mark.parametrize("transposed", [False, True], ids=["contiguous", "transposed view"])
@pytest.mark.parametrize(
    "shape", [(1, 3, 5), (7, 12, 128), (16, 128, 512), (5, 32, 12), (3, 1, 8), (2, 8, 1)]
)
def test_mkl_packed_product_equals_float64_product(shape, transposed, capfd):
    """The compiled kernel's packed product: out = a @ W for every row count up to the one packed
    for, W given as a matrix or as the transpose of one (the forward pass's W_hh.T), writing
    nothing outside ``out``. A matrix of one row has no meaningful row stride (NumPy's is the
    item size there): MKL, given it as the leading dimension, refuses to pack and says so on
    stdout, and a buffer reused from an earlier pack can still give the right products."""
    rows, depth, width = shape
    generator = torch.Generator().manual_seed(0)
    weight = (
        torch.randn(width, depth, generator=generator).t()
        if transposed
        else torch.randn(depth, width, generator=generator)
    )
    packed = cpu._mkl_pack(weight.numpy(), rows)
    assert "ERROR" not in "".join(capfd.readouterr())
    for m in range(1, rows + 1):
        a = torch.randn(m, depth, generator=generator).numpy()
        guarded = np.full((m + 2, width), 7.0, dtype=np.float32)
        _packed_product()(mkl.addresses()[0], a, packed, guarded[1:-1])
        expected = a.astype(np.float64) @ weight.double().numpy()
        assert np.abs(guarded[1:-1] - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())
        assert (guarded[0] == 7.0).all() and (guarded[-1] == 7.0).all()


@functools.cache
def _times_transposed():
    """The input side's product (callable from compiled code only), compiled for Python."""
    import numba

    return numba.njit(lambda address, a, w, out: cpu._times_transposed(address, a, w, out))


@pytest.mark.skipif(not cpu.available(), reason="the compiled kernel is not installed")
@pytest.mark.parametrize("library", ["mkl", "openblas"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 3, 20), (8, 128, 512), (37, 5, 12)])
def test_input_side_product_equals_float64_product(shape, dtype, library):
    """out = a @ W.T for W (N, K) as the module holds W_ih: MKL's Fortran sgemm by address for
    float32 (rows of a larger array, as the helper's ranges are), OpenBLAS otherwise; nothing
    written outside ``out``."""
    if library == "mkl" and not mkl.available():
        pytest.skip("torch exports no MKL here")
    rows, depth, width = shape
    generator = np.random.default_rng(0)
    weight = generator.standard_normal((width, depth)).astype(dtype)
    x = generator.standard_normal((rows + 4, depth)).astype(dtype)
    guarded = np.full((rows + 6, width), 7.0, dtype=dtype)
    address = mkl.addresses()[2] if library == "mkl" and dtype == np.float32 else 0
    _times_transposed()(address, x[2 : rows + 2], weight, guarded[3 : rows + 3])
    expected = x[2 : rows + 2].astype(np.float64) @ weight.astype(np.float64).T
    bound = 1e-5 if dtype == np.float32 else 1e-12
    assert np.abs(guarded[3 : rows + 3] - expected).max() <= bound * max(1.0, np.abs(expected).max())
    assert (guarded[:3] == 7.0).all() and (guarded[rows + 3 :] == 7.0).all()


@pytest.fixture(params=["torch's OpenMP", "thread pool"])
def runtime(request, monkeypatch):
    if request.param == "thread pool":
        monkeypatch.setattr(pool, "_openmp", lambda: None)
    return request.param


def test_run_calls_every_call_once_on_as_many_threads(runtime):
    calls = []
    barrier = threading.Barrier(3, timeout=10)  # every call must run at once, each on its own thread

    def kernel(first, last):
        calls.append((first, last, threading.get_ident()))
        barrier.wait()

    pool.run([functools.partial(kernel, *part) for part in [(0, 2), (2, 5), (5, 6)]])
    assert sorted(call[:2] for call in calls) == [(0, 2), (2, 5), (5, 6)]
    assert len({call[2] for call in calls}) == 3


def test_run_reraises_an_error_after_every_call_ended(runtime):
    finished = []

    def kernel(first):
        if first == 1:
            raise ValueError("call 1 failed")
        finished.append(first)

    with pytest.raises(ValueError, match="call 1 failed"):
        pool.run([functools.partial(kernel, first) for first in range(3)])
    assert sorted(finished) == [0, 2]


def test_run_with_one_call_calls_on_this_thread():
    here = []
    pool.run([lambda: here.append(threading.get_ident())])
    assert here == [threading.get_ident()]


def test_masks_hash_is_splitmix64():
    """Element i is SplitMix64's output i + 1 from the seed: the published first outputs from
    seed 0 (0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F), top 24 bits."""
    published = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    for index, value in enumerate(published):
        top = value >> 40
        for p, expected in ((top / 2**24, 0.0), ((top + 1) / 2**24, 1.0)):  # just at and just above
            drawn = masks.bernoulli((3,), p, seed=0)
            assert float(drawn[index]) == expected, (index, p)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.97, 1.0])
def test_masks_compiled_equal_numpy_and_have_the_probability(p):
    seed = 2**61 + 12345
    drawn = masks.bernoulli((300, 200), p, seed)
    twin = np.empty(60000, dtype=np.float32)
    masks._fill_numpy(twin, seed, masks.threshold(p))
    assert drawn.dtype == torch.float32 and drawn.shape == (300, 200)
    assert torch.equal(drawn.flatten(), torch.from_numpy(twin))
    # 6 standard deviations of a mean of 60,000 draws; neighbours uncorrelated likewise
    assert abs(float(drawn.mean()) - p) <= 6 * (p * (1 - p) / 60000) ** 0.5
    flat = drawn.flatten().double() - p
    assert abs(float((flat[1:] * flat[:-1]).mean())) <= 6 * p * (1 - p) / 60000**0.5 + 1e-12


def test_masks_differ_by_seed_and_repeat_under_one():
    a, b, c = (masks.bernoulli((50, 40), 0.5, seed) for seed in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
