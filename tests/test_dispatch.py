"""Which kernel "auto" runs, and that every backend is deterministic run to run."""

import pytest
import torch

import lstmkit
from lstmkit import functional
from lstmkit.kernels import cpu, torch_ops

needs_cpu = pytest.mark.skipif(not cpu.available(), reason="the compiled kernel is not installed")


@needs_cpu
def test_auto_takes_the_compiled_kernel_for_sequences_of_float_cpu_tensors():
    x32, x16 = torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float16)
    assert functional.kernel("auto", "lstm", x32, 100) is cpu.lstm_layer
    assert functional.kernel("auto", "lstm", x32.double(), 2) is cpu.lstm_layer
    assert functional.kernel("auto", "lstm", x32, 1) is torch_ops.lstm_layer  # a cell's one step
    assert functional.kernel("auto", "lstm", x16, 100).__qualname__ == "_in_float32.<locals>.run"
    assert functional.kernel("auto", "lstm", x32.to(torch.complex64), 100) is torch_ops.lstm_layer
    assert functional.kernel("auto", "rnn", x32, 100) is torch_ops.rnn_layer


@pytest.mark.parametrize("backend", [b for b in functional.available("lstm") if b != "auto"])
def test_deterministic_run_to_run(backend):
    """Same seed, same everything: bitwise equal outputs and gradients, stochastic options included."""
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = lstmkit.LSTM(4, 6, 2, bidirectional=True, zoneout=0.2, recurrent_dropout=0.2, backend=backend)
        x = torch.randn(9, 3, 4, requires_grad=True)
        out, (h, c) = model(x, lengths=[9, 4, 7])
        (out.sum() + h.sum() + c.sum()).backward()
        runs.append([out, h, c, x.grad, *(p.grad for p in model.parameters())])
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


@needs_cpu
def test_deterministic_run_to_run_with_the_batch_split_over_threads(monkeypatch, torch_threads):
    monkeypatch.setattr(cpu, "MIN_THREAD_WORK", 1)
    torch_threads(2)
    test_deterministic_run_to_run("cpu")


@needs_cpu
def test_kernel_runs_blas_on_one_thread_and_restores_the_settings(monkeypatch):
    """While a recurrence runs, every BLAS library in the process is at one thread (its spinning
    workers would take the cores from torch's and the kernel's threads); after it, each is back at
    its own setting, and torch's thread count is untouched."""
    libraries = cpu._blas_libraries()
    assert libraries, "threadpoolctl found no BLAS library"
    seen = []
    for name in ("_forward", "_backward"):
        real = getattr(cpu, name)

        def spy(*args, real=real):
            seen.append([library.get_num_threads() for library in libraries])
            return real(*args)

        monkeypatch.setattr(cpu, name, spy)
    before = [library.get_num_threads() for library in libraries]
    torch_threads = torch.get_num_threads()
    model = lstmkit.LSTM(4, 6, backend="cpu")
    out, _ = model(torch.randn(5, 3, 4, requires_grad=True))
    out.sum().backward()
    assert len(seen) == 2 and all(counts == [1] * len(libraries) for counts in seen)
    assert [library.get_num_threads() for library in libraries] == before
    assert torch.get_num_threads() == torch_threads


@needs_cpu
def test_calls_from_several_python_threads_agree_and_restore_blas():
    """Models called from four Python threads at once give their serial results, and the BLAS
    thread settings come back whatever order the calls end in."""
    from concurrent.futures import ThreadPoolExecutor

    before = [library.get_num_threads() for library in cpu._blas_libraries()]
    torch.manual_seed(0)
    model = lstmkit.LSTM(4, 6, 2, bidirectional=True, backend="cpu")
    inputs = [torch.randn(30, 3, 4) for _ in range(8)]
    with torch.no_grad():
        serial = [model(x)[0] for x in inputs]
        with ThreadPoolExecutor(4) as pool:
            threaded = list(pool.map(lambda x: model(x)[0], inputs))
    for a, b in zip(serial, threaded, strict=True):
        assert torch.equal(a, b)
    assert [library.get_num_threads() for library in cpu._blas_libraries()] == before


@pytest.mark.parametrize(
    "backend", [b for b in functional.available("lstm") if b not in ("auto", "reference")]
)
@pytest.mark.parametrize("options", [{}, dict(layer_norm=True, peephole=True, proj_size=3, zoneout=0.3)])
def test_inference_without_autograd_equals_the_autograd_pass(backend, options):
    """Under no_grad (or with nothing requiring grad) the kernels run without the autograd Function:
    the same results, bit for bit, and no graph."""
    torch.manual_seed(0)
    model = lstmkit.LSTM(4, 6, 2, bidirectional=True, backend=backend, **options).eval()
    x = torch.randn(9, 3, 4)
    out, (h, c), gates = model(x.requires_grad_(), lengths=[9, 4, 7], return_gates=True)
    assert out.grad_fn is not None
    with torch.no_grad():
        plain = model(x, lengths=[9, 4, 7], return_gates=True)
    frozen = model.requires_grad_(False)(x.detach(), lengths=[9, 4, 7], return_gates=True)
    for result in (plain, frozen):
        assert result[0].grad_fn is None
        for a, b in zip((out, h, c, *gates), (result[0], *result[1], *result[2]), strict=True):
            assert torch.equal(a, b)
