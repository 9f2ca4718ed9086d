"""Backend "cpu" for the plain RNN (``kernels.cpu_rnn``) against the reference: its batch split
over threads, both product libraries, half precision, and run-to-run determinism. Its agreement
with torch.nn.RNN and with finite differences is in test_vs_torch, test_packed and test_bptt."""

import pytest
import torch

import lstmkit
from lstmkit.kernels import cpu, pool

from ._compare import TOLERANCE
from ._products import LIBRARIES

pytestmark = pytest.mark.skipif(not cpu.available(), reason="the compiled kernel is not installed")

LENGTHS = [6, 2, 5, 1, 6, 6, 3, 4, 1, 2, 5]


def _results(model, x, h0):
    """Output, final state and every gradient, under a fixed cotangent."""
    x, h0 = x.clone().requires_grad_(), h0.clone().requires_grad_()
    out, h = model(x, h0, lengths=LENGTHS)
    cotangent = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out).to(out.dtype)
    ((out * cotangent).sum() + h.square().sum()).backward()
    return [t.detach() for t in (out, h, x.grad, h0.grad, *(p.grad for p in model.parameters()))]


def _run_both(dtype, nonlinearity, *, bias=True, oracle=None):
    """A 2-layer bidirectional RNN over packed lengths on backend "cpu" in ``dtype``, and the
    reference backend on the same weights and inputs in ``oracle`` (``dtype`` if None)."""
    torch.manual_seed(0)
    kwargs = dict(bias=bias, nonlinearity=nonlinearity, bidirectional=True)
    model = lstmkit.RNN(3, 5, 2, **kwargs, dtype=dtype, backend="cpu")
    reference = lstmkit.RNN(3, 5, 2, **kwargs, dtype=oracle or dtype, backend="reference")
    reference.load_state_dict({k: v.to(oracle or dtype) for k, v in model.state_dict().items()})
    gen = torch.Generator().manual_seed(1)
    x, h0 = torch.randn(6, len(LENGTHS), 3, generator=gen), torch.randn(4, len(LENGTHS), 5, generator=gen)
    return (
        _results(model, x.to(dtype), h0.to(dtype)),
        _results(reference, x.to(dtype).to(oracle or dtype), h0.to(dtype).to(oracle or dtype)),
    )


def _assert_close(results, expected):
    for k, (a, b) in enumerate(zip(results, expected, strict=True)):
        torch.testing.assert_close(a, b, **TOLERANCE[a.dtype], msg=lambda m, k=k: f"item {k}: {m}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("runtime", ["torch's OpenMP", "thread pool"])
@pytest.mark.parametrize("library", LIBRARIES)
def test_cpu_rnn_split_over_threads_equals_reference(
    dtype, nonlinearity, runtime, library, monkeypatch, torch_threads
):
    """11 sequences split over 2 threads in both passes, on torch's threads and on the fallback."""
    if runtime == "thread pool":
        monkeypatch.setattr(pool, "_openmp", lambda: None)
    monkeypatch.setattr(cpu, "MIN_THREAD_WORK", 1)
    monkeypatch.setattr(cpu, "MKL_PRODUCTS", library == "mkl")
    splits = []
    from lstmkit.kernels import cpu_rnn

    monkeypatch.setattr(
        cpu_rnn, "_parts", lambda *a, parts=cpu._parts: splits.append(parts(*a)) or splits[-1]
    )
    torch_threads(2)
    results, expected = _run_both(dtype, nonlinearity)
    assert len(splits) == 8 and all(len(parts) == 2 for parts in splits)  # 4 layer directions x 2 passes
    _assert_close(results, expected)


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("bias", [True, False])
def test_cpu_rnn_on_one_thread_equals_reference(library, bias, monkeypatch):
    monkeypatch.setattr(cpu, "MKL_PRODUCTS", library == "mkl")
    for dtype in (torch.float64, torch.float32):
        _assert_close(*_run_both(dtype, "tanh", bias=bias))


@pytest.mark.parametrize("dtype, bound", [(torch.bfloat16, 1e-2), (torch.float16, 1.5e-3)])
def test_cpu_rnn_computes_half_precision_in_float32(dtype, bound):
    """Outputs and gradients are the float64 reference's up to the rounding of the half type,
    relative to each tensor's scale (measured: 5.2e-3 and 6.2e-4)."""
    results, expected = _run_both(dtype, "tanh", oracle=torch.float64)
    for k, (a, b) in enumerate(zip(results, expected, strict=True)):
        assert a.dtype == dtype, f"item {k}: {a.dtype}"
        error = float((a.double() - b).abs().max())
        assert error <= bound * max(1.0, float(b.abs().max())), f"item {k}: error {error}"


def test_cpu_rnn_is_deterministic_run_to_run(torch_threads):
    torch_threads(2)
    first = _run_both(torch.float32, "relu")[0]
    for _ in range(3):
        for a, b in zip(_run_both(torch.float32, "relu")[0], first, strict=True):
            assert torch.equal(a, b)
