"""Dropout between layers (torch.nn.LSTM semantics): off in eval, the right mask in training."""

import math

import pytest
import torch

import lstmkit
from lstmkit import functional


def test_off_in_eval():
    torch.manual_seed(0)
    model = lstmkit.LSTM(3, 6, num_layers=3, dropout=0.7).eval()
    plain = lstmkit.LSTM(3, 6, num_layers=3)
    plain.load_state_dict(model.state_dict())
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(model(x)[0], plain(x)[0], rtol=0, atol=0)
    assert torch.equal(model(x)[0], model(x)[0])


def test_mask_statistics():
    """Each element between layers is zeroed with probability p and the rest scaled by 1/(1-p);
    after the last layer nothing is dropped."""
    seen = []

    def ones_layer(x, state, k, reverse):
        seen.append(x)
        return torch.ones(x.shape[0], 100), state, None

    p, rows = 0.3, 200
    torch.manual_seed(0)
    out, _, _ = functional.stack(
        ones_layer,
        torch.ones(rows, 100),
        (torch.zeros(3, 10, 1),),
        num_layers=3,
        bidirectional=False,
        dropout=p,
        training=True,
    )
    assert torch.equal(out, torch.ones(rows, 100))
    for x in seen[1:]:
        kept = x != 0
        n = x.numel()
        zeros = n - int(kept.sum())
        # within 5 binomial standard deviations of the expected count
        assert abs(zeros - p * n) < 5 * math.sqrt(n * p * (1 - p))
        torch.testing.assert_close(x[kept], torch.full_like(x[kept], 1 / (1 - p)))
    assert not torch.equal(seen[1] != 0, seen[2] != 0)  # a fresh mask per layer


def test_train_mode_matches_torch_and_gradients_flow():
    """Under the same seed lstmkit draws torch's masks: same outputs and gradients."""
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(3, 4, 3, dropout=0.5, bidirectional=True, dtype=torch.float64)
    ours = lstmkit.LSTM.from_torch(theirs)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    outputs = []
    for module in (ours, theirs):
        torch.manual_seed(7)
        out, _ = module(x)
        out.sum().backward()
        outputs.append(out.detach())
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-10, atol=1e-10)
    assert not torch.equal(outputs[0], ours.eval()(x)[0])  # dropout did act in training
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert a.grad.abs().sum() > 0, name
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-10)


def test_single_layer_warns_like_torch():
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        lstmkit.LSTM(3, 4, dropout=0.5)
