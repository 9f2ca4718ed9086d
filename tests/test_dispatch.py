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
