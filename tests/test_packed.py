"""Variable-length batches: padding never leaks, and the reverse direction starts at each
sequence's true end (pytorch#3662). The oracle is each sequence run alone, unpadded."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit

LENGTHS = [4, 7, 1, 6]
PAIRS = [("LSTM", b) for b in lstmkit.functional.available("lstm")[1:]] + [
    ("RNN", b) for b in lstmkit.functional.available("rnn")[1:]
]


def _model(kind, backend):
    torch.manual_seed(0)
    if kind == "LSTM":
        return lstmkit.LSTM(3, 5, 2, bidirectional=True, proj_size=4, dtype=torch.float64, backend=backend)
    return lstmkit.RNN(3, 5, 2, bidirectional=True, dtype=torch.float64, backend=backend)


def _states(final):
    return final if isinstance(final, tuple) else (final,)


@pytest.mark.parametrize(("kind", "backend"), PAIRS)
def test_each_sequence_as_if_alone(kind, backend):
    model = _model(kind, backend)
    x = torch.randn(7, len(LENGTHS), 3, dtype=torch.float64)
    out, final = model(x, lengths=LENGTHS)
    for b, length in enumerate(LENGTHS):
        alone_out, alone_final = model(x[:length, b])  # unbatched, exactly `length` steps
        torch.testing.assert_close(out[:length, b], alone_out, rtol=1e-12, atol=1e-12)
        assert torch.all(out[length:, b] == 0)
        for state, alone in zip(_states(final), _states(alone_final), strict=True):
            torch.testing.assert_close(state[:, b], alone, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("kind", "backend"), PAIRS)
def test_padding_does_not_leak(kind, backend):
    """Values in padded steps change nothing, and receive zero gradient."""
    model = _model(kind, backend)
    x = torch.randn(7, len(LENGTHS), 3, dtype=torch.float64)
    noisy = x.clone()
    for b, length in enumerate(LENGTHS):
        noisy[length:, b] = torch.randn(7 - length, 3, dtype=torch.float64) * 1e3
    results = []
    for data in (x, noisy):
        leaf = data.clone().requires_grad_()
        out, final = model(leaf, lengths=LENGTHS)
        (out.sum() + sum(s.square().sum() for s in _states(final))).backward()
        results.append((out, _states(final), leaf.grad))
    (out_a, fin_a, grad_a), (out_b, fin_b, grad_b) = results
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)
    for a, b in zip(fin_a, fin_b, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(grad_a, grad_b, rtol=0, atol=0)
    for b, length in enumerate(LENGTHS):
        assert torch.all(grad_a[length:, b] == 0)


def test_sorted_and_unsorted_packing_agree():
    model = _model("LSTM", "torch")
    x = torch.randn(7, 4, 3, dtype=torch.float64)
    order = torch.tensor(LENGTHS).argsort(descending=True)
    sorted_x, sorted_lengths = x[:, order], torch.tensor(LENGTHS)[order]
    h0 = torch.randn(4, 4, 4, dtype=torch.float64)
    c0 = torch.randn(4, 4, 5, dtype=torch.float64)
    _, (h_u, c_u) = model(pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False), (h0, c0))
    _, (h_s, c_s) = model(pack_padded_sequence(sorted_x, sorted_lengths), (h0[:, order], c0[:, order]))
    torch.testing.assert_close(h_u[:, order], h_s)
    torch.testing.assert_close(c_u[:, order], c_s)
