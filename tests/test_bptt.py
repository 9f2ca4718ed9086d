"""The production path (hand-written BPTT) against finite differences and against the reference."""

import pytest
import torch
from torch.autograd import gradcheck

import lstmkit
from lstmkit import functional, reference
from lstmkit.kernels import torch_ops
from lstmkit.kernels.contract import LSTMWeights

# Packed batch sizes with sequences ending at different steps, so that rows join and leave.
BATCH_SIZES = [4, 4, 3, 1, 1]


def _weights(gen, inputs, hidden, proj, gates, bias=True):
    out = proj or hidden

    def rand(*shape):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * 0.5).requires_grad_()

    weights = [rand(gates * hidden, inputs), rand(gates * hidden, out)]
    weights += [rand(gates * hidden), rand(gates * hidden)] if bias else [None, None]
    if gates == 4:
        weights.append(rand(proj, hidden) if proj else None)
    return weights


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("proj", [0, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_lstm_layer_gradcheck(reverse, proj, bias):
    gen = torch.Generator().manual_seed(0)
    rows, batch, hidden = sum(BATCH_SIZES), BATCH_SIZES[0], 3
    x = torch.randn(rows, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(batch, proj or hidden, generator=gen, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(batch, hidden, generator=gen, dtype=torch.float64, requires_grad=True)
    weights = _weights(gen, 2, hidden, proj, 4, bias)

    def run(*args):
        out, (h, c), _ = torch_ops.lstm_layer(
            args[0], args[1:3], LSTMWeights(*args[3:]), BATCH_SIZES, reverse
        )
        return out, h, c

    assert gradcheck(run, (x, h0, c0, *weights))


@pytest.mark.parametrize(
    "backend", [b for b in functional.available("rnn") if b not in ("auto", "reference")]
)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_layer_gradcheck(reverse, nonlinearity, backend):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(sum(BATCH_SIZES), 2, generator=gen, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(BATCH_SIZES[0], 3, generator=gen, dtype=torch.float64, requires_grad=True)
    weights = _weights(gen, 2, 3, 0, 1)
    layer = functional.RNN_BACKENDS[backend]

    def run(*args):
        out, (h,), _ = layer(args[0], args[1:2], args[2:], BATCH_SIZES, reverse, nonlinearity)
        return out, h

    assert gradcheck(run, (x, h0, *weights))


def test_module_gradcheck():
    """The whole stack: two bidirectional layers with projection, through the module."""
    torch.manual_seed(0)
    model = lstmkit.LSTM(2, 4, num_layers=2, bidirectional=True, proj_size=3, dtype=torch.float64)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True)
    params = list(model.parameters())

    def run(x, h0, c0, *values):
        state = dict(zip([n for n, _ in model.named_parameters()], values, strict=True))
        out, (h, c) = torch.func.functional_call(model, state, (x, (h0, c0)))
        return out, h, c

    assert gradcheck(run, (x, h0, c0, *params))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("proj", [0, 3])
def test_textbook_reference_agrees_with_production(proj, reverse):
    """lstmkit.reference.lstm_layer (SPEC.md §1, padded with lengths) equals the hand-written
    BPTT (packed rows) in outputs, final states and every gradient, float64."""
    gen = torch.Generator().manual_seed(5)
    steps, lengths, hidden = 7, torch.tensor([7, 5, 3, 1]), 5
    x = torch.randn(steps, 4, 3, generator=gen, dtype=torch.float64)
    h0 = torch.randn(4, proj or hidden, generator=gen, dtype=torch.float64)
    c0 = torch.randn(4, hidden, generator=gen, dtype=torch.float64)
    weights = _weights(gen, 3, hidden, proj, 4)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths)
    batch_sizes = packed.batch_sizes.tolist()
    results = []
    for textbook in (True, False):
        leaves = [
            t.detach().clone().requires_grad_() for t in (x, h0, c0, *[w for w in weights if w is not None])
        ]
        it = iter(leaves[3:])
        ws = [None if w is None else next(it) for w in weights]
        if textbook:
            out, (h, c) = reference.lstm_layer(leaves[0], (leaves[1], leaves[2]), ws, lengths, reverse)
            out = torch.nn.utils.rnn.pack_padded_sequence(out, lengths).data
        else:
            rows = torch.nn.utils.rnn.pack_padded_sequence(leaves[0], lengths).data
            out, (h, c), _ = torch_ops.lstm_layer(
                rows, (leaves[1], leaves[2]), LSTMWeights(*ws), batch_sizes, reverse
            )
        (out.square().sum() + h.sum() + (c * 2).sum()).backward()
        results.append([out, h, c, *[t.grad for t in leaves]])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_reference_cell_is_spec_section_1():
    """The reference cell's gates, computed here from SPEC.md's table with the seeds' single W
    over the concatenation [h_{t-1}, x_t]."""
    gen = torch.Generator().manual_seed(2)
    hidden, inputs = 3, 2
    x, h, c = (torch.randn(1, n, generator=gen, dtype=torch.float64) for n in (inputs, hidden, hidden))
    w_ih = torch.randn(4 * hidden, inputs, generator=gen, dtype=torch.float64)
    w_hh = torch.randn(4 * hidden, hidden, generator=gen, dtype=torch.float64)
    b = torch.randn(4 * hidden, generator=gen, dtype=torch.float64)
    W = torch.cat([w_hh, w_ih], 1)  # W·[h_{t-1}, x_t]
    concat = torch.cat([h, x], 1)
    i, f, g, o = (concat @ W.T + b).chunk(4, 1)
    cell = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    hidden_state = torch.sigmoid(o) * torch.tanh(cell)
    got_h, got_c = reference.lstm_cell(x, (h, c), w_ih, w_hh, b, torch.zeros_like(b))
    torch.testing.assert_close(got_c, cell, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(got_h, hidden_state, rtol=1e-14, atol=1e-14)
