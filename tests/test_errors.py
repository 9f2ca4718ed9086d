"""Every malformed call raises a clear error naming what was expected and what was given,
before any computation (the kernels are replaced by a tripwire here)."""

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import lstmkit
from lstmkit import functional

X = torch.randn(1, 3, 5)
H = torch.randn(2, 3, 6)
C = torch.randn(2, 3, 6)

CONSTRUCTION = [
    (lambda: lstmkit.LSTM(5.0, 6), TypeError, r"input_size should be of type int, got: float"),
    (lambda: lstmkit.LSTM(0, 6), ValueError, r"input_size must be greater than zero, got 0"),
    (lambda: lstmkit.LSTM(5, -1), ValueError, r"hidden_size must be greater than zero, got -1"),
    (lambda: lstmkit.LSTM(5, 6, 0), ValueError, r"num_layers must be greater than zero, got 0"),
    (
        lambda: lstmkit.LSTM(5, 6, 2, dropout=1.5),
        ValueError,
        r"dropout should be a number in range \[0, 1\].*1.5",
    ),
    (
        lambda: lstmkit.LSTM(5, 6, proj_size=6),
        ValueError,
        r"proj_size has to be smaller than hidden_size.*6.*6",
    ),
    (lambda: lstmkit.LSTM(5, 6, proj_size=-1), ValueError, r"proj_size should be a positive integer or zero"),
    (lambda: lstmkit.LSTM(5, 6, bias=1), TypeError, r"bias should be of type bool, got: int"),
    (
        lambda: lstmkit.LSTM(5, 6, backend="magic"),
        ValueError,
        r"backend 'magic' is not available here; available",
    ),
    (lambda: lstmkit.RNN(5, 6, nonlinearity="sigmoid"), ValueError, r"Unknown nonlinearity 'sigmoid'"),
    (lambda: lstmkit.LSTMCell(5, 0), ValueError, r"LSTMCell: hidden_size must be greater than zero"),
]


@pytest.mark.parametrize(("make", "error", "match"), CONSTRUCTION)
def test_construction_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.fixture
def tripwire(monkeypatch):
    """Any kernel call fails the test: errors must come before any computation."""

    def kernel(*args, **kwargs):
        raise AssertionError("a kernel ran before the input was checked")

    for table in (functional.LSTM_BACKENDS, functional.RNN_BACKENDS):
        for name in list(table):
            monkeypatch.setitem(table, name, kernel)


def _lstm():
    torch.manual_seed(0)
    return lstmkit.LSTM(5, 6, 2)


def _packed_bad_sizes():
    return PackedSequence(torch.randn(3, 5), torch.tensor([1, 2]))


CALLS = [
    (lambda m: m([[1.0] * 5]), TypeError, r"input must be a Tensor or a PackedSequence, got list"),
    (
        lambda m: m(torch.randn(1, 1, 3, 5)),
        ValueError,
        r"Expected input to be 2D .* or 3D .*got 4D with shape \(1, 1, 3, 5\)",
    ),
    (
        lambda m: m(torch.randn(1, 3, 4)),
        ValueError,
        r"input.size\(-1\) must be equal to input_size. Expected 5, got 4",
    ),
    (
        lambda m: m(X.double()),
        ValueError,
        r"input dtype \(torch.float64\) does not match weight dtype \(torch.float32\)",
    ),
    (
        lambda m: m(torch.randn(1, 3, 5, device="meta")),
        ValueError,
        r"input is on device meta but the weights are on cpu",
    ),
    (
        lambda m: m(torch.randn(0, 3, 5)),
        ValueError,
        r"input of shape \(0, 3, 5\) is empty; expected at least one time step",
    ),
    (lambda m: m(torch.randn(1, 0, 5)), ValueError, r"input of shape \(1, 0, 5\) is empty"),
    (
        lambda m: m(X, (torch.randn(2, 3, 7), C)),
        ValueError,
        r"Expected h_0 of size \(2, 3, 6\), got \(2, 3, 7\)",
    ),
    (
        lambda m: m(X, (H, torch.randn(1, 3, 6))),
        ValueError,
        r"Expected c_0 of size \(2, 3, 6\), got \(1, 3, 6\)",
    ),
    (lambda m: m(X, H), TypeError, r"hx must be a tuple \(h_0, c_0\) of 2 tensors, got Tensor"),
    (lambda m: m(X, (H,)), ValueError, r"hx must be a tuple \(h_0, c_0\), got 1 item"),
    (lambda m: m(X, (H, None)), ValueError, r"c_0 is None; pass all of \(h_0, c_0\), or hx=None for zeros"),
    (lambda m: m(X, (H.double(), C)), ValueError, r"h_0 dtype \(torch.float64\) does not match weight dtype"),
    (lambda m: m(X[0], (H, C)), ValueError, r"Expected h_0 of size \(2, 6\), got \(2, 3, 6\)"),
    (
        lambda m: m(X, lengths=[1, 1]),
        ValueError,
        r"lengths must have one entry per sequence: expected 3, got 2",
    ),
    (lambda m: m(X, lengths=[1, 2, 1]), ValueError, r"lengths must lie in \[1, 1\].*got min 1, max 2"),
    (lambda m: m(X, lengths=[0, 1, 1]), ValueError, r"lengths must lie in \[1, 1\].*got min 0, max 1"),
    (
        lambda m: m(X, lengths=torch.ones(3)),
        TypeError,
        r"lengths must be integers, got a tensor of dtype torch.float32",
    ),
    (lambda m: m(X[0], lengths=[1]), ValueError, r"lengths= needs a batched 3-D input"),
    (
        lambda m: m(pack_padded_sequence(X, torch.tensor([1, 1, 1])), lengths=[1, 1, 1]),
        ValueError,
        r"lengths= is for padded tensors",
    ),
    (
        lambda m: m(_packed_bad_sizes()),
        ValueError,
        r"batch_sizes must be positive and non-increasing, got \[1, 2\]",
    ),
    (
        lambda m: m(PackedSequence(torch.randn(4, 5), torch.tensor([2, 1]))),
        ValueError,
        r"batch_sizes sum to 3 but data has 4 rows",
    ),
    (
        lambda m: m(PackedSequence(torch.randn(3, 4), torch.tensor([2, 1]))),
        ValueError,
        r"data must be \(sum of lengths, input_size=5\), got shape \(3, 4\)",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), CALLS)
def test_lstm_call_errors(tripwire, call, error, match):
    model = _lstm()
    with pytest.raises(error, match=match):
        call(model)


CELL_AND_RNN_CALLS = [
    (lambda: lstmkit.RNN(5, 6, 2)(X, (H,)), TypeError, r"RNN: hx must be a Tensor \(h_0\), got tuple"),
    (
        lambda: lstmkit.RNN(5, 6, 2)(X, torch.randn(2, 3)),
        ValueError,
        r"RNN: Expected h_0 of size \(2, 3, 6\), got \(2, 3\)",
    ),
    (lambda: lstmkit.LSTMCell(5, 6)(X), ValueError, r"LSTMCell: Expected input to be 1D .* or 2D .*got 3D"),
    (
        lambda: lstmkit.LSTMCell(5, 6)(X[0], (H[0], C[0, :2])),
        ValueError,
        r"Expected c_0 of size \(3, 6\), got \(2, 6\)",
    ),
    (lambda: lstmkit.LSTMCell(5, 6)(torch.randn(0, 5)), ValueError, r"empty; expected at least one sample"),
    (
        lambda: lstmkit.RNNCell(5, 6)(X[0], H[0].double()),
        ValueError,
        r"h_0 dtype \(torch.float64\) does not match",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), CELL_AND_RNN_CALLS)
def test_other_module_errors(tripwire, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_from_torch_wrong_class():
    with pytest.raises(TypeError, match=r"LSTM.from_torch expects a torch.nn.LSTM, got GRU"):
        lstmkit.LSTM.from_torch(torch.nn.GRU(3, 4))


def test_backend_errors_name_the_choices():
    from lstmkit.kernels import cpu

    if not cpu.available():
        pytest.skip("the compiled kernel is not installed")
    with pytest.raises(
        ValueError,
        match=r"backend 'triton' is not available here; available: \['auto', 'torch', 'reference', 'cpu'\]",
    ):
        lstmkit.RNN(5, 6, backend="triton")
    model = lstmkit.LSTM(5, 6, backend="cpu", dtype=torch.complex64)
    with pytest.raises(
        ValueError,
        match=r"backend 'cpu' runs float16, bfloat16 \(in float32\), float32 and float64 tensors on the CPU, "
        r"got torch.complex64 on cpu",
    ):
        model(X.to(torch.complex64))
