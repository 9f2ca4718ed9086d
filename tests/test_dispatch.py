"""Which kernel "auto" runs, and that every backend is deterministic run to run."""

import ctypes
import threading

import pytest
import torch

import lstmkit
from lstmkit import functional
from lstmkit.kernels import cpu, mkl, torch_ops

from ._products import expand, layers_for, selected

needs_cpu = pytest.mark.skipif(not cpu.available(), reason="the compiled kernel is not installed")


@needs_cpu
def test_auto_takes_the_compiled_kernel_for_sequences_of_float_cpu_tensors():
    from lstmkit.kernels import cpu_rnn, cpu_step  # Numba's kernels: importable only where Numba is

    x32, x16 = torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float16)
    assert functional.kernel("auto", "lstm", x32, 100) is cpu_step.lstm_layer
    assert functional.kernel("auto", "lstm", x32.double(), 2) is cpu_step.lstm_layer
    # one step: the one-step kernels where the configuration has them, else the PyTorch ops
    assert functional.kernel("auto", "lstm", x32, 1, compiled_step=True) is cpu_step.lstm_layer
    assert functional.kernel("auto", "lstm", x32, 1) is torch_ops.lstm_layer
    assert functional.kernel("auto", "lstm", x16, 100).__qualname__ == "_in_float32.<locals>.run"
    assert functional.kernel("auto", "lstm", x32.to(torch.complex64), 100) is torch_ops.lstm_layer
    assert functional.kernel("auto", "rnn", x32, 100) is cpu_rnn.rnn_layer
    assert functional.kernel("auto", "rnn", x32, 1) is torch_ops.rnn_layer
    assert functional.kernel("auto", "rnn", x16, 100).__qualname__ == "_in_float32.<locals>.run"


@pytest.mark.parametrize("backend", expand([b for b in functional.available("lstm") if b != "auto"]))
def test_deterministic_run_to_run(backend):
    """Same seed, same everything: bitwise equal outputs and gradients, stochastic options included."""
    with selected(backend) as backend:
        runs = [_run_once(backend) for _ in range(2)]
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def _run_once(backend: str) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = lstmkit.LSTM(
        4, 6, layers_for(backend), bidirectional=True, zoneout=0.2, recurrent_dropout=0.2, backend=backend
    )
    x = torch.randn(9, 3, 4, requires_grad=True)
    out, (h, c) = model(x, lengths=[9, 4, 7])
    (out.sum() + h.sum() + c.sum()).backward()
    return [out, h, c, x.grad, *(p.grad for p in model.parameters())]


@needs_cpu
def test_deterministic_run_to_run_with_the_batch_split_over_threads(monkeypatch, torch_threads):
    monkeypatch.setattr(cpu, "MIN_THREAD_WORK", 1)
    torch_threads(2)
    for backend in expand(["cpu"]):
        test_deterministic_run_to_run(backend)


@needs_cpu
def test_kernel_runs_blas_on_one_thread_and_restores_the_settings(monkeypatch):
    """While a recurrence runs, every BLAS library in the process is at one thread (its spinning
    workers would take the cores from torch's and the kernel's threads); after it, each is back at
    its own setting, and torch's thread count is untouched."""
    monkeypatch.setattr(cpu, "MKL_PRODUCTS", False)
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
def test_kernel_called_from_another_python_thread_runs_blas_on_one_thread(monkeypatch):
    """threadpoolctl lets only the first Python thread that limits OpenBLAS change its count (its
    "controlling thread"); a kernel called from another thread still runs every BLAS library at
    one thread, and puts the settings back (``cpu._blas_threads_controls``)."""
    monkeypatch.setattr(cpu, "MKL_PRODUCTS", False)
    libraries = cpu._blas_libraries()
    before = [library.get_num_threads() for library in libraries]
    for library, threads in zip(libraries, before, strict=True):
        library.set_num_threads(threads)  # this thread takes the control
    seen = []
    real = cpu._forward
    monkeypatch.setattr(
        cpu, "_forward", lambda *a: seen.append([lib.get_num_threads() for lib in libraries]) or real(*a)
    )
    model = lstmkit.LSTM(4, 6, backend="cpu")
    worker = threading.Thread(target=lambda: model(torch.randn(5, 3, 4)))
    worker.start()
    worker.join()
    assert seen == [[1] * len(libraries)]
    assert [library.get_num_threads() for library in libraries] == before


@pytest.mark.skipif(not (cpu.available() and mkl.available()), reason="torch exports no MKL here")
def test_kernel_on_mkl_sets_mkl_to_one_thread_and_restores_it(monkeypatch):
    """A kernel call that multiplies on MKL sets MKL's thread count for its own thread to one
    (MKL_Set_Num_Threads_Local) and puts the previous setting back, forward and backward, and
    OpenBLAS's settings are left alone; so does each pack of W_hh. The kernel calls the function
    by address, so a ctypes callback stands in for MKL's to record the calls (and forward them)."""
    threads = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)
    real = threads(mkl._mkl().threads_address)
    calls = []
    recorder = threads(lambda n: calls.append(n) or real(n))
    address = ctypes.cast(recorder, ctypes.c_void_p).value
    monkeypatch.setattr(cpu, "MKL_PRODUCTS", True)
    monkeypatch.setattr(
        mkl, "addresses", lambda: (mkl._mkl().compute_address, address, mkl._mkl().gemm_address)
    )
    monkeypatch.setattr(mkl, "pack_addresses", lambda: (mkl._mkl().pack_address, address))
    before = real(0)
    real(before)
    blas = [library.get_num_threads() for library in cpu._blas_libraries()]
    model = lstmkit.LSTM(4, 6, backend="cpu")
    out, _ = model(torch.randn(5, 3, 4, requires_grad=True))
    out.sum().backward()
    assert calls == [1, before] * 4  # forward: the pack, the kernel; backward: the same
    assert real(before) == before  # restored
    assert [library.get_num_threads() for library in cpu._blas_libraries()] == blas
    # float64 multiplies on OpenBLAS: MKL untouched
    calls.clear()
    lstmkit.LSTM(4, 6, backend="cpu", dtype=torch.float64)(torch.randn(5, 3, 4, dtype=torch.float64))
    assert calls == []


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
    model = lstmkit.LSTM(4, 6, layers_for(backend), bidirectional=True, backend=backend, **options).eval()
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


@needs_cpu
@pytest.mark.parametrize(
    "options, one_step",
    [({}, True), (dict(peephole=True, zoneout=0.2), True), (dict(layer_norm=True), False)],
)
def test_cells_take_the_one_step_kernels_unless_layer_norm(options, one_step, monkeypatch):
    """An LSTMCell on "auto" runs ``cpu_step``'s kernels (forward and backward) where it has them;
    with layer norm, the PyTorch ops, whose single step costs less than the sequence kernel's."""
    from lstmkit.kernels import cpu_step

    calls = []
    for name in ("_forward", "_backward"):
        real = getattr(cpu_step, name)
        monkeypatch.setattr(cpu_step, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    torch_calls = []
    real_torch = torch_ops.TorchLoops.forward
    monkeypatch.setattr(torch_ops.TorchLoops, "forward", lambda *a: torch_calls.append(1) or real_torch(*a))
    cell = lstmkit.LSTMCell(3, 4, **options).train()
    h, c = cell(torch.randn(2, 3, requires_grad=True))
    (h.sum() + c.sum()).backward()
    assert calls == (["_forward", "_backward"] if one_step else [])
    assert len(torch_calls) == (0 if one_step else 1)


@needs_cpu
def test_one_step_deterministic_run_to_run():
    """The one-step kernels, as ``test_deterministic_run_to_run``: an LSTMCell with stochastic
    options, same seed, bitwise equal states and gradients."""

    def run() -> list[torch.Tensor]:
        torch.manual_seed(0)
        cell = lstmkit.LSTMCell(4, 6, zoneout=0.2, recurrent_dropout=0.2, peephole=True)
        x = torch.randn(3, 4, requires_grad=True)
        h, c = cell(x)
        h, c = cell(x, (h, c))  # a second step from the first's states
        (h.sum() + c.sum()).backward()
        return [h, c, x.grad, *(p.grad for p in cell.parameters())]

    for a, b in zip(run(), run(), strict=True):
        assert torch.equal(a, b)


def _count_inference(monkeypatch) -> list[int]:
    """Calls of ``functional.lstm_inference``, the compiled inference path, from here on."""
    calls = []
    real = functional.lstm_inference
    monkeypatch.setattr(functional, "lstm_inference", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


@needs_cpu
@pytest.mark.parametrize("backend", ["auto", *expand(["cpu"])])
@pytest.mark.parametrize(
    "config",
    [
        {},
        dict(num_layers=2, bidirectional=True),
        dict(proj_size=3),
        dict(batch_first=True, bias=False),
        dict(cell_clip=0.5, coupled_input_forget=True),
        dict(dtype=torch.float64, num_layers=2),
    ],
)
@pytest.mark.parametrize("given_state", [False, True])
@pytest.mark.parametrize("steps", [5, 1])
def test_padded_inference_runs_the_compiled_path_and_equals_the_autograd_pass(
    backend, config, given_state, steps, monkeypatch
):
    """A padded forward with nothing to differentiate goes through ``functional.lstm_inference``
    (NumPy arrays from end to end; for one step the one-step kernels, layer by layer): bit for
    bit what the autograd pass computes, which matches torch.nn.LSTM; the caller's states are
    read, never written. One step with a projection, which the one-step kernels lack, takes
    the general path."""
    calls = _count_inference(monkeypatch)
    torch.manual_seed(0)
    with selected(backend) as name:
        model = lstmkit.LSTM(4, 6, backend=name, **config).eval()
        dtype = config.get("dtype", torch.float32)
        x = torch.randn(steps, 3, 4, dtype=dtype)  # (T, B, I)
        if model.batch_first:
            x = x.transpose(0, 1).contiguous()
        depth = model.num_layers * model._directions
        state = None
        if given_state:
            state = (
                torch.randn(depth, 3, model.proj_size or 6, dtype=dtype),
                torch.randn(depth, 3, 6, dtype=dtype),
            )
        copies = None if state is None else [s.clone() for s in state]
        out, (h, c) = model(x.clone().requires_grad_(), state)
        assert out.grad_fn is not None and calls == []
        with torch.no_grad():
            fast, (fast_h, fast_c) = model(x, state)
    assert calls == ([] if steps == 1 and "proj_size" in config else [1]) and fast.grad_fn is None
    for a, b in ((out, fast), (h, fast_h), (c, fast_c)):
        assert a.shape == b.shape and torch.equal(a.detach(), b)
    if state is not None:
        assert all(torch.equal(s, copy) for s, copy in zip(state, copies, strict=True))
    if not {"cell_clip", "coupled_input_forget"} & set(config):
        theirs, (their_h, their_c) = model.to_torch()(x, state)
        tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
        for a, b in ((theirs, fast), (their_h, fast_h), (their_c, fast_c)):
            torch.testing.assert_close(b, a.detach(), **tolerance)


@needs_cpu
def test_padded_inference_of_an_unbatched_input_and_frozen_weights(monkeypatch):
    """(T, I) input with (L*D, P) states, and grad mode on with nothing requiring grad: the
    compiled path, shaped as the general one."""
    calls = _count_inference(monkeypatch)
    torch.manual_seed(0)
    model = lstmkit.LSTM(4, 6, 2, bidirectional=True).eval()
    x, state = torch.randn(5, 4), (torch.randn(4, 6), torch.randn(4, 6))
    out, (h, c) = model(x.requires_grad_(), state)
    model.requires_grad_(False)
    fast, (fast_h, fast_c) = model(x.detach(), state)
    assert calls == [1]
    for a, b in ((out, fast), (h, fast_h), (c, fast_c)):
        assert a.shape == b.shape and torch.equal(a.detach(), b)


@needs_cpu
@pytest.mark.parametrize(
    "options, call",
    [
        (dict(layer_norm=True), {}),
        (dict(peephole=True), {}),
        (dict(zoneout=0.1), {}),
        ({}, dict(return_gates=True)),
        ({}, dict(lengths=[5, 3, 4])),
        (dict(proj_size=3), dict(steps=1)),
        ({}, dict(dtype=torch.float16)),
        (dict(backend="torch"), {}),
    ],
)
def test_padded_inference_leaves_the_rest_to_the_general_path(options, call, monkeypatch):
    """Options with masks or passes of their own, gates asked for, lengths, a single step with a
    projection (which the one-step kernels lack), half precision (widened by
    ``functional.kernel``), another backend: the general path, whatever the grad mode."""
    calls = _count_inference(monkeypatch)
    call = dict(call)
    steps, dtype = call.pop("steps", 5), call.pop("dtype", torch.float32)
    model = lstmkit.LSTM(4, 6, dtype=dtype, **options).eval()
    with torch.no_grad():
        model(torch.randn(steps, 3, 4, dtype=dtype), **call)
    assert calls == []


@needs_cpu
def test_padded_inference_in_training_mode_only_without_dropouts(monkeypatch):
    """Training mode under no_grad: dropout between layers and recurrent dropout draw masks, so
    only a configuration without them takes the compiled path."""
    calls = _count_inference(monkeypatch)
    x = torch.randn(5, 3, 4)
    with torch.no_grad(), pytest.warns(UserWarning, match="dropout"):
        lstmkit.LSTM(4, 6, 1, dropout=0.5).train()(x)  # one layer: no dropout between layers
    assert calls == [1]
    with torch.no_grad():
        lstmkit.LSTM(4, 6, 2, dropout=0.5).train()(x)
        lstmkit.LSTM(4, 6, recurrent_dropout=0.5).train()(x)
        lstmkit.LSTM(4, 6, weight_dropout=0.5).train()(x)
    assert calls == [1]


@needs_cpu
@pytest.mark.parametrize("options", [{}, dict(cell_clip=0.2, coupled_input_forget=True, proj_size=3)])
@pytest.mark.parametrize("batch, input_side", [(1, "beside"), (4, "before"), (4, "step by step")])
def test_padded_inference_with_the_batch_split_or_the_input_side_beside(
    batch, input_side, options, monkeypatch, torch_threads
):
    """On two threads, with the thresholds at their least: a batch of 4 splits over the threads,
    its input side one product before the recurrence or step by step in each part
    (``cpu._steps_input``, whose gates, c' and clipping flags take one row a sequence), a batch
    of one computes its input side on the second (``cpu._project``); bit for bit the autograd
    pass, which does the same with N rows of each."""
    torch_threads(2)
    monkeypatch.setattr(cpu, "MIN_THREAD_WORK", 1)
    monkeypatch.setattr(cpu, "MIN_PROJECT_WORK", 1)
    monkeypatch.setattr(cpu, "LEAST_STEP_INPUT", 1 if input_side == "step by step" else 2**40)
    monkeypatch.setattr(cpu, "small_path", lambda: True)
    calls = _count_inference(monkeypatch)
    for backend in expand(["cpu"]):
        with selected(backend) as name:
            torch.manual_seed(0)
            model = lstmkit.LSTM(4, 6, 2, bidirectional=True, backend=name, **options)
            x = torch.randn(40, batch, 4)
            out, (h, c) = model(x)
            with torch.no_grad():
                fast, (fast_h, fast_c) = model(x)
            for a, b in ((out, fast), (h, fast_h), (c, fast_c)):
                assert torch.equal(a.detach(), b)
    assert len(calls) == len(expand(["cpu"]))


@needs_cpu
@pytest.mark.parametrize(
    "options",
    [{}, dict(peephole=True), dict(coupled_input_forget=True, cell_clip=0.5), dict(dtype=torch.float64)],
)
@pytest.mark.parametrize("given_state", [False, True])
@pytest.mark.parametrize("batched", [True, False])
def test_cell_inference_runs_the_one_step_kernels_and_equals_the_autograd_pass(
    options, given_state, batched, monkeypatch
):
    """An LSTMCell with nothing to differentiate goes through ``functional.lstm_step_inference``:
    bit for bit the autograd pass (states and every gate), which matches torch.nn.LSTMCell."""
    from lstmkit.kernels import cpu_step

    calls = []
    real = cpu_step.step_inference
    monkeypatch.setattr(cpu_step, "step_inference", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    cell = lstmkit.LSTMCell(4, 6, **options).eval()
    dtype = options.get("dtype", torch.float32)
    shape = (3, 4) if batched else (4,)
    x = torch.randn(shape, dtype=dtype)
    state = tuple(torch.randn(shape[:-1] + (6,), dtype=dtype) for _ in range(2)) if given_state else None
    copies = None if state is None else [s.clone() for s in state]
    (h, c), gates = cell(x.clone().requires_grad_(), state, return_gates=True)
    assert h.grad_fn is not None and calls == []
    with torch.no_grad():
        (fast_h, fast_c), fast_gates = cell(x, state, return_gates=True)
        plain = cell(x, state)
    assert calls == [1, 1]
    for a, b in zip((h, c, *gates), (fast_h, fast_c, *fast_gates), strict=True):
        assert a.shape == b.shape and torch.equal(a.detach(), b)
    assert all(torch.equal(a, b) for a, b in zip(plain, (fast_h, fast_c), strict=True))
    if state is not None:
        assert all(torch.equal(s, copy) for s, copy in zip(state, copies, strict=True))
    if not options.keys() - {"dtype"}:
        theirs = cell.to_torch()(x, state)
        tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
        for a, b in zip(theirs, (fast_h, fast_c), strict=True):
            torch.testing.assert_close(b, a.detach(), **tolerance)


@needs_cpu
@pytest.mark.parametrize(
    "options, training",
    [
        (dict(layer_norm=True), False),
        (dict(zoneout=0.1), False),
        (dict(recurrent_dropout=0.3), True),
        (dict(weight_dropout=0.3), True),
        (dict(backend="torch"), False),
        (dict(dtype=torch.float16), False),
    ],
)
def test_cell_inference_leaves_masks_layer_norm_and_the_rest_to_the_general_path(
    options, training, monkeypatch
):
    from lstmkit.kernels import cpu_step

    calls = []
    real = cpu_step.step_inference
    monkeypatch.setattr(cpu_step, "step_inference", lambda *a: calls.append(1) or real(*a))
    cell = lstmkit.LSTMCell(4, 6, **options).train(training)
    with torch.no_grad():
        cell(torch.randn(3, 4, dtype=options.get("dtype", torch.float32)))
    assert calls == []
