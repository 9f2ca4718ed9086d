"""Second derivatives (kernels/second_order.py): a backward with create_graph=True gives
gradients that autograd differentiates again, equal to torch.nn's (a gradient penalty through
every backend and module) and to finite differences of the first derivative (gradgradcheck, with
the variant options torch.nn lacks); a plain backward still runs the backend's own."""

import pytest
import torch
from torch import nn
from torch.autograd import gradgradcheck

import lstmkit
from lstmkit.kernels import second_order

LSTM_BACKENDS = [b for b in lstmkit.functional.available("lstm") if b != "reference"]
RNN_BACKENDS = [b for b in lstmkit.functional.available("rnn") if b != "reference"]
F64 = torch.float64


def _penalised(module: nn.Module, x: torch.Tensor, state) -> list:
    """The gradients of a gradient penalty, |d(sum of squared outputs)/dx|², for the input, the
    state and the parameters (WGAN-GP's shape of loss)."""
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    state = tuple(s.clone().requires_grad_() for s in state)
    hx = None if not state else state if len(state) == 2 else state[0]
    out = module(x, hx)
    outputs = [
        t for t in (out if isinstance(out, tuple) else (out,)) for t in (t if isinstance(t, tuple) else (t,))
    ]
    first = torch.autograd.grad(sum(o.square().sum() for o in outputs), (x, *state), create_graph=True)
    sum(g.square().sum() for g in first).backward()
    return [x.grad, *(s.grad for s in state), *(p.grad for p in module.parameters())]


def _assert_equal(ours: list, theirs: list) -> None:
    assert len(ours) == len(theirs)
    for k, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a is not None and b is not None, f"item {k}"
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=f"item {k}")


@pytest.mark.parametrize("backend", LSTM_BACKENDS)
@pytest.mark.parametrize("steps", [1, 4])
def test_lstm_second_derivatives_equal_torch(backend, steps):
    torch.manual_seed(0)
    theirs = nn.LSTM(3, 4, 2, bidirectional=True, dtype=F64)
    ours = lstmkit.LSTM.from_torch(theirs, backend=backend)
    x = torch.randn(steps, 2, 3, dtype=F64)
    state = tuple(torch.randn(4, 2, 4, dtype=F64) for _ in range(2))
    _assert_equal(_penalised(ours, x, state), _penalised(theirs, x, state))


@pytest.mark.parametrize("backend", LSTM_BACKENDS)
def test_lstm_second_derivatives_of_packed_sequences_equal_torch(backend):
    torch.manual_seed(1)
    theirs = nn.LSTM(3, 4, proj_size=2, dtype=F64)
    ours = lstmkit.LSTM.from_torch(theirs, backend=backend)
    x = torch.randn(5, 3, 3, dtype=F64)
    results = []
    for module in (ours, theirs):
        leaf = x.clone().requires_grad_()
        packed = nn.utils.rnn.pack_padded_sequence(leaf, [5, 2, 4], enforce_sorted=False)
        out, (h, c) = module(packed)
        (first,) = torch.autograd.grad(out.data.square().sum() + h.sum() + c.sum(), leaf, create_graph=True)
        module.zero_grad(set_to_none=True)
        first.square().sum().backward()
        results.append([leaf.grad, *(p.grad for p in module.parameters())])
    _assert_equal(*results)


@pytest.mark.parametrize("backend", LSTM_BACKENDS)
@pytest.mark.parametrize("kind", ["LSTMCell", "RNN", "RNNCell"])
def test_other_modules_second_derivatives_equal_torch(backend, kind):
    torch.manual_seed(2)
    theirs = getattr(nn, kind)(3, 4, dtype=F64)
    rnn_backend = backend if backend in RNN_BACKENDS else "torch"
    ours = getattr(lstmkit, kind).from_torch(theirs, backend=backend if kind == "LSTMCell" else rnn_backend)
    x = torch.randn(*((5,) if kind == "RNN" else ()), 2, 3, dtype=F64)
    state = tuple(
        torch.randn(*((1,) if kind == "RNN" else ()), 2, 4, dtype=F64)
        for _ in range(2 if kind == "LSTMCell" else 1)
    )
    _assert_equal(_penalised(ours, x, state), _penalised(theirs, x, state))


# "triton" shares LSTMLayer's recomputation with these, and its interpreter took 6-35 s a case here
@pytest.mark.parametrize("backend", [b for b in LSTM_BACKENDS if b in ("cpu", "torch")])
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize(
    "options",
    [dict(peephole=True), dict(coupled_input_forget=True, cell_clip=0.5), dict(layer_norm=True)],
    ids=["peephole", "cifg-clip", "layer_norm"],
)
def test_variant_second_derivatives_match_finite_differences(backend, steps, options):
    torch.manual_seed(3)
    model = lstmkit.LSTM(2, 3, dtype=F64, backend=backend, **options).eval()

    def run(x, h0, c0):
        out, (h, c) = model(x, (h0, c0))
        return out, h, c

    gen = torch.Generator().manual_seed(4)
    inputs = [
        torch.randn(*s, generator=gen, dtype=F64, requires_grad=True)
        for s in ((steps, 2, 2), (1, 2, 3), (1, 2, 3))
    ]
    assert gradgradcheck(run, inputs)


def test_a_plain_backward_runs_the_backend_not_the_reference(monkeypatch):
    """The recomputation is for create_graph=True only: with it broken, first-order gradients
    still come, from the backend's own backward."""

    def broken(*_):
        raise AssertionError("recomputed without create_graph")

    monkeypatch.setattr(second_order, "REFERENCES", {"lstm": broken, "rnn": broken})
    for module, x in (
        (lstmkit.LSTM(3, 4), torch.randn(5, 2, 3)),
        (lstmkit.LSTM(3, 4), torch.randn(1, 2, 3)),
        (lstmkit.LSTMCell(3, 4), torch.randn(2, 3)),
        (lstmkit.RNN(3, 4), torch.randn(5, 2, 3)),
    ):
        x.requires_grad_()
        out = module(x)
        (out[0] if isinstance(out, tuple) else out).sum().backward()
        assert x.grad is not None and all(p.grad is not None for p in module.parameters())
    with pytest.raises(AssertionError, match="recomputed without create_graph"):
        x = torch.randn(5, 2, 3, requires_grad=True)
        torch.autograd.grad(lstmkit.LSTM(3, 4)(x)[0].sum(), x, create_graph=True)
