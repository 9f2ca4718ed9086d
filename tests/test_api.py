"""The torch.nn interface: the seed's example, parameter names, initialisation, conversions."""

import copy
import io

import pytest
import torch
from torch import nn

import lstmkit

PAIRS = [
    (lstmkit.LSTM, nn.LSTM, dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True, proj_size=2)),
    (
        lstmkit.LSTM,
        nn.LSTM,
        dict(input_size=3, hidden_size=5, bias=False, batch_first=True, dropout=0.25, num_layers=3),
    ),
    (
        lstmkit.RNN,
        nn.RNN,
        dict(input_size=3, hidden_size=5, num_layers=2, nonlinearity="relu", bidirectional=True),
    ),
    (lstmkit.LSTMCell, nn.LSTMCell, dict(input_size=3, hidden_size=5)),
    (lstmkit.RNNCell, nn.RNNCell, dict(input_size=3, hidden_size=5, bias=False, nonlinearity="relu")),
]


def test_seed_example():
    """SPEC.md §3, as written in the seed with lstmkit.LSTM in place of nn.LSTM."""
    rnn = lstmkit.LSTM(5, 6, 2)
    input = torch.randn(1, 3, 5)
    h0 = torch.randn(2, 3, 6)
    c0 = torch.randn(2, 3, 6)
    output, (hn, cn) = rnn(input, (h0, c0))
    assert output.shape == (1, 3, 6)
    assert hn.shape == cn.shape == (2, 3, 6)
    # the top layer's last hidden state is the last output, as in the seed's printout
    torch.testing.assert_close(hn[-1], output[-1])


@pytest.mark.parametrize(("ours", "theirs", "kwargs"), PAIRS)
def test_same_names_shapes_and_initialisation(ours, theirs, kwargs):
    torch.manual_seed(11)
    a = ours(**kwargs)
    torch.manual_seed(11)
    b = theirs(**kwargs)
    assert [(n, p.shape) for n, p in a.named_parameters()] == [(n, p.shape) for n, p in b.named_parameters()]
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name
    expected = repr(b)
    if ours is lstmkit.RNN:  # torch's RNN repr omits the nonlinearity that its RNNCell repr shows
        expected = expected[:-1] + ", nonlinearity=relu)"
    assert repr(a) == expected


@pytest.mark.parametrize(("ours", "theirs", "kwargs"), PAIRS)
def test_state_dict_both_ways(ours, theirs, kwargs):
    a, b = ours(**kwargs), theirs(**kwargs)
    a.load_state_dict(b.state_dict())
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name
    a.reset_parameters()
    b.load_state_dict(a.state_dict())
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.parametrize(("ours", "theirs", "kwargs"), PAIRS)
def test_from_torch_and_to_torch(ours, theirs, kwargs):
    b = theirs(**kwargs, dtype=torch.float64).eval()
    a = ours.from_torch(b)
    assert isinstance(a, ours) and not a.training
    assert next(a.parameters()).dtype == torch.float64
    back = a.to_torch()
    assert type(back) is theirs and not back.training
    for key, value in b.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)
        assert back.state_dict()[key].data_ptr() != value.data_ptr()  # copies, not aliases


def test_torch_module_api_works():
    model = lstmkit.LSTM(3, 4, 2, bidirectional=True)
    model.flatten_parameters()
    assert [len(w) for w in model.all_weights] == [4, 4, 4, 4]
    assert model.all_weights[1][0] is model.weight_ih_l0_reverse
    model = model.double()
    out, _ = model(torch.randn(2, 1, 3, dtype=torch.float64))
    assert out.dtype == torch.float64
    clone = copy.deepcopy(model)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(clone(x)[0], model(x)[0], rtol=0, atol=0)


def test_batch_first_and_unbatched_layouts():
    torch.manual_seed(0)
    model = lstmkit.LSTM(3, 4, 2, batch_first=True, bidirectional=True, proj_size=2)
    x = torch.randn(5, 7, 3)  # (B, T, I)
    out, (h, c) = model(x)
    assert out.shape == (5, 7, 4) and h.shape == (4, 5, 2) and c.shape == (4, 5, 4)
    single, (h1, c1) = model(x[1])  # unbatched (T, I)
    assert single.shape == (7, 4) and h1.shape == (4, 2) and c1.shape == (4, 4)
    torch.testing.assert_close(single, out[1])
    torch.testing.assert_close(h1, h[:, 1])


def test_non_finite_input_propagates_without_crashing():
    model = lstmkit.LSTM(3, 4, 2)
    x = torch.randn(4, 2, 3)
    x[1, 0, 0] = float("nan")
    x[2, 1, 1] = float("inf")
    out, (h, c) = model(x)
    assert torch.isnan(out[1:, 0]).all() and torch.isfinite(out[0]).all()
    out.sum().backward()  # no exception


def test_training_reduces_loss():
    """Trainable: a few Adam steps on a fixed batch lower the loss."""
    torch.manual_seed(0)
    model = lstmkit.LSTM(2, 8, 2)
    head = nn.Linear(8, 1)
    x, y = torch.randn(20, 4, 2), torch.randn(4, 1)
    optimiser = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=0.05)
    losses = []
    for _ in range(30):
        optimiser.zero_grad()
        loss = nn.functional.mse_loss(head(model(x)[0][-1]), y)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


@pytest.mark.parametrize("module", [lstmkit.LSTM, lstmkit.LSTMCell])
def test_parametrized_weights_are_used_and_trained(module):
    """torch.nn.utils.parametrize turns a parameter into a property of the module's class: the
    module must compute with the parametrized weight and hand gradients to its parts."""
    torch.manual_seed(0)
    model = module(3, 4)
    plain = copy.deepcopy(model)
    name = "weight_hh" if module is lstmkit.LSTMCell else "weight_hh_l0"
    nn.utils.parametrizations.weight_norm(model, name)
    with torch.no_grad():
        getattr(plain, name).copy_(getattr(model, name))
    if module is lstmkit.LSTMCell:  # a state to multiply W_hh with: from zeros its gradient is 0
        inputs = (torch.randn(2, 3), (torch.randn(2, 4), torch.randn(2, 4)))
    else:
        inputs = (torch.randn(5, 2, 3),)
    out, expected = model(*inputs)[0], plain(*inputs)[0]
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    out.sum().backward()
    parts = model.parametrizations[name]
    assert parts.original0.grad is not None and parts.original1.grad is not None
    assert float(parts.original1.grad.abs().sum()) > 0


@pytest.mark.parametrize("registered", [True, False], ids=["registered names", "pickled before them"])
def test_a_weight_set_as_a_plain_tensor_attribute_is_used(registered):
    """AWD-LSTM's weight drop deletes W_hh's parameter and sets a plain tensor in its place; a
    module pickled before ``_registered`` existed looks every weight up as it used to."""
    torch.manual_seed(0)
    model = lstmkit.LSTM(3, 4)
    raw = model.weight_hh_l0.detach().clone()
    del model.weight_hh_l0
    model.weight_hh_l0 = raw * 0.5
    if not registered:
        del model.__dict__["_registered"]
    reference = lstmkit.LSTM(3, 4)
    reference.load_state_dict({**model.state_dict(), "weight_hh_l0": raw * 0.5})
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(model(x)[0], reference(x)[0], rtol=0, atol=0)


def _leaves(value):
    """The tensors in a module's result: tensors, PackedSequence data, nested tuples."""
    if isinstance(value, nn.utils.rnn.PackedSequence):
        return [value.data]
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for item in value for t in _leaves(item)]


@pytest.mark.parametrize("ours, theirs, kwargs", PAIRS, ids=lambda p: getattr(p, "__name__", ""))
@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
def test_under_autocast_answers_in_torch_nn_dtype_and_trains_the_float32_weights(
    ours, theirs, kwargs, input_dtype
):
    """Under torch.autocast("cpu", bfloat16), float32 weights: each output in the dtype torch.nn's
    namesake gives there (autocast's; LSTMCell's input's; torch.nn.LSTM with a projection leaves
    c_n in float32 for a float32 input, which is not copied), its values our float32 module's on
    the widened input rounded to that dtype, near torch.nn's own result, and float32 gradients
    for every parameter."""
    torch.manual_seed(0)
    reference = theirs(**kwargs).eval()
    module = ours.from_torch(reference).eval()
    cell = ours in (lstmkit.LSTMCell, lstmkit.RNNCell)
    x = torch.randn((2, 3) if cell else (4, 2, 3)).to(input_dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = module(x)
        try:
            expected = _leaves(reference(x))
        except RuntimeError as error:
            # oneDNN, under torch.nn.LSTM, has no bfloat16 LSTM on processors without AVX-512
            # ("could not create a primitive descriptor", seen on an AMD `znver3`)
            if "primitive descriptor" not in str(error):
                raise
            expected = [None] * len(_leaves(result))
    float32 = module(x.float())
    dtype = input_dtype if ours is lstmkit.LSTMCell else torch.bfloat16
    for theirs_, ours_, exact in zip(expected, _leaves(result), _leaves(float32), strict=True):
        assert ours_.dtype == dtype
        assert torch.equal(ours_, exact.to(ours_.dtype))
        if theirs_ is not None:
            torch.testing.assert_close(ours_.float(), theirs_.float(), atol=5e-2, rtol=5e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sum(t.float().sum() for t in _leaves(module(x))).backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in module.parameters())


def test_under_autocast_a_packed_sequence_keeps_its_batch_sizes():
    torch.manual_seed(0)
    module = lstmkit.LSTM(3, 5)
    packed = nn.utils.rnn.pack_padded_sequence(torch.randn(4, 2, 3), [4, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, (h, c) = module(packed)
    assert output.data.dtype == h.dtype == c.dtype == torch.bfloat16
    assert torch.equal(output.batch_sizes, packed.batch_sizes)
    assert torch.equal(output.data, module(packed)[0].data.bfloat16())
