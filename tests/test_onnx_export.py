"""export_onnx: the exported graph, run by ONNX Runtime, returns what the module returns."""

import copy

import numpy as np
import pytest
import torch

import lstmkit
from lstmkit.onnx_export import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

LSTM_CASES = [
    dict(),
    dict(num_layers=2, bidirectional=True),
    dict(bias=False, batch_first=True),
    dict(peephole=True, cell_clip=0.5),
    dict(coupled_input_forget=True, peephole=True, num_layers=2, bidirectional=True),
    dict(cell_clip=0.3, coupled_input_forget=True, batch_first=True),
    # evaluation mode: none of these changes the output, and the graph has none of them
    dict(num_layers=3, dropout=0.5, recurrent_dropout=0.3, weight_dropout=0.4),
]
RNN_CASES = [
    dict(),
    dict(nonlinearity="relu", num_layers=2, bidirectional=True),
    dict(bias=False, batch_first=True),
]


def _session(model) -> "ort.InferenceSession":
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _run_both(module, steps: int, batch: int, initial_state: bool, lengths: bool, exact: bool = False):
    """(ONNX Runtime's outputs, the module's) for one random input, both as NumPy arrays; with
    ``exact``, the module's in float64 (a copy, on the same inputs)."""
    module.eval()
    generator = torch.Generator().manual_seed(steps * 31 + batch)
    shape = (batch, steps, module.input_size) if module.batch_first else (steps, batch, module.input_size)
    feeds = {"input": torch.randn(shape, generator=generator)}
    rows = module.num_layers * (2 if module.bidirectional else 1)
    state = None
    if initial_state:
        state = tuple(torch.randn(rows, batch, size, generator=generator) for size in module._state_sizes())
        feeds |= dict(zip(("h0", "c0"), state, strict=False))
    steps_each = None
    if lengths:
        steps_each = torch.randint(1, steps + 1, (batch,), generator=generator)
        steps_each[0] = steps  # at least one sequence fills the padded length
        feeds["lengths"] = steps_each
    model = export_onnx(module, initial_state=initial_state, lengths=lengths)
    theirs = _session(model).run(None, {name: t.numpy() for name, t in feeds.items()})
    hx = state if state is None or len(state) == 2 else state[0]  # an RNN's h0 is one tensor
    x = feeds["input"]
    if exact:
        module, x = copy.deepcopy(module).double(), x.double()
        hx = None if hx is None else tuple(t.double() for t in hx)
    with torch.no_grad():
        output, final = module(x, hx, lengths=steps_each)
    return theirs, [output.numpy(), *(t.numpy() for t in (final if isinstance(final, tuple) else (final,)))]


def _assert_equal(theirs, ours):
    assert len(theirs) == len(ours)
    for k, (a, b) in enumerate(zip(theirs, ours, strict=True)):
        assert a.shape == b.shape, f"output {k}: {a.shape} against {b.shape}"
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"output {k}")


@pytest.mark.parametrize("lengths", [False, True], ids=["padded", "lengths"])
@pytest.mark.parametrize("initial_state", [False, True], ids=["zero state", "given state"])
@pytest.mark.parametrize("options", LSTM_CASES, ids=lambda o: ",".join(o) or "plain")
def test_lstm_equals_onnx_runtime(options, initial_state, lengths):
    torch.manual_seed(0)
    module = lstmkit.LSTM(3, 5, **options)
    with torch.no_grad():  # weights large enough for the clip to bite
        for p in module.parameters():
            p.mul_(3)
    _assert_equal(*_run_both(module, 7, 4, initial_state, lengths))


@pytest.mark.parametrize("lengths", [False, True], ids=["padded", "lengths"])
@pytest.mark.parametrize("options", RNN_CASES, ids=lambda o: ",".join(o) or "plain")
def test_rnn_equals_onnx_runtime(options, lengths):
    torch.manual_seed(0)
    _assert_equal(*_run_both(lstmkit.RNN(3, 5, **options), 6, 3, True, lengths))


def test_time_and_batch_are_free_dimensions():
    """One exported graph runs any length and batch; and equals torch.nn.LSTM with the same weights."""
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(4, 6, num_layers=2, bidirectional=True).eval()
    session = _session(export_onnx(lstmkit.LSTM.from_torch(theirs)))
    for steps, batch in ((1, 1), (9, 5), (30, 2)):
        x = torch.randn(steps, batch, 4)
        with torch.no_grad():
            output, (h_n, c_n) = theirs(x)
        _assert_equal(session.run(None, {"input": x.numpy()}), [output.numpy(), h_n.numpy(), c_n.numpy()])


def test_coupled_gates_hold_for_either_reading_of_input_forget():
    """ONNX's input_forget does not say which gate is derived: the input-gate slots hold the forget
    gate negated (ONNX Runtime: f = 1 - σ(a_i)) and the forget-gate slots hold it as it is (i = 1 -
    σ(a_f), lstmkit's reading), so both readings compute lstmkit's gates."""
    torch.manual_seed(0)
    module = lstmkit.LSTM(3, 5, coupled_input_forget=True, peephole=True)
    graph = export_onnx(module).graph
    values = {t.name.split("_")[0]: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    size = 5
    for stem, weight in (("W", module.weight_ih_l0), ("R", module.weight_hh_l0)):
        forget = weight.detach()[size : 2 * size].numpy()
        onnx_input, onnx_forget = (
            values[stem][0][:size],
            values[stem][0][2 * size : 3 * size],
        )  # ONNX: i, o, f, c
        np.testing.assert_array_equal(onnx_input, -forget)
        np.testing.assert_array_equal(onnx_forget, forget)
    p_f = module.peephole_f_l0.detach().numpy()
    np.testing.assert_array_equal(
        values["P"][0], np.concatenate([-p_f, module.peephole_o_l0.detach().numpy(), p_f])
    )


# what ONNX's LSTM operator cannot express: a Scan over a one-step graph
SCAN_CASES = [
    dict(layer_norm=True),
    dict(proj_size=3),
    dict(zoneout=(0.3, 0.2)),
    dict(layer_norm=True, proj_size=2, num_layers=2, bidirectional=True),
    dict(
        layer_norm=True,
        peephole=True,
        cell_clip=0.5,
        coupled_input_forget=True,
        zoneout=0.1,
        bidirectional=True,
    ),
    dict(peephole=True, proj_size=4, zoneout=(0.0, 0.4), batch_first=True, bias=False, num_layers=2),
]


@pytest.mark.parametrize("lengths", [False, True], ids=["padded", "lengths"])
@pytest.mark.parametrize("initial_state", [False, True], ids=["zero state", "given state"])
@pytest.mark.parametrize("options", SCAN_CASES, ids=lambda o: ",".join(o))
def test_variants_beyond_the_lstm_operator_equal_onnx_runtime(options, initial_state, lengths):
    """Layer norm, projections and zoneout export as a Scan of one step (ONNX's LayerNormalization,
    MatMul, the gates' pointwise operators), reversed within each sequence's length for the
    reverse direction. Against the module in float64: layer norm over few units amplifies float32
    rounding (lstmkit's own float32 result is about 1e-5 from float64 here)."""
    torch.manual_seed(0)
    module = lstmkit.LSTM(3, 6, **options)
    with torch.no_grad():  # layer norm's gains start at 1 and its biases at 0: move them all
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    theirs, exact = _run_both(module, 7, 4, initial_state, lengths, exact=True)
    for k, (a, b) in enumerate(zip(theirs, exact, strict=True)):
        assert a.shape == b.shape, f"output {k}: {a.shape} against {b.shape}"
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=f"output {k}")


@pytest.mark.parametrize(
    "module, message",
    [
        (lstmkit.LSTM(3, 4, dtype=torch.float64), "got a torch.float64 module"),
        (torch.nn.LSTM(3, 4), "got LSTM"),
    ],
)
def test_refuses_what_it_cannot_write_before_writing(module, message, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"a model saved earlier")
    with pytest.raises((ValueError, TypeError), match=message):
        export_onnx(module, path)
    assert path.read_bytes() == b"a model saved earlier"


def test_writes_a_loadable_file(tmp_path):
    torch.manual_seed(0)
    module = lstmkit.LSTM(3, 5, num_layers=2, batch_first=True)
    path = tmp_path / "sub" / "lstm.onnx"
    returned = export_onnx(module, path, initial_state=True)
    loaded = onnx.load(path)
    assert loaded == returned
    assert [i.name for i in loaded.graph.input] == ["input", "h0", "c0"]
    assert [o.name for o in loaded.graph.output] == ["output", "h_n", "c_n"]
    assert [n.op_type for n in loaded.graph.node].count("LSTM") == 2
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["lstm.onnx"]  # no temporary left
    assert module.training  # the export reads the module and leaves its mode alone


CELL_CASES = [
    (lstmkit.LSTMCell, dict()),
    (lstmkit.LSTMCell, dict(layer_norm=True, peephole=True, cell_clip=0.5)),
    (lstmkit.LSTMCell, dict(coupled_input_forget=True, peephole=True, zoneout=(0.3, 0.1), bias=False)),
    (lstmkit.RNNCell, dict()),
    (lstmkit.RNNCell, dict(nonlinearity="relu", bias=False)),
]


@pytest.mark.parametrize(
    "cls, options", CELL_CASES, ids=lambda c: c.__name__ if isinstance(c, type) else ",".join(c)
)
def test_cells_equal_onnx_runtime(cls, options):
    """A cell's one step, against the cell in float64 (parameters moved off their initial values)."""
    torch.manual_seed(0)
    cell = cls(3, 6, **options).eval()
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(5, 3)
    state = tuple(torch.randn(5, 6) for _ in cell._state_names)
    feeds = {"input": x, **dict(zip(("h0", "c0"), state, strict=False))}
    theirs = _session(export_onnx(cell)).run(None, {name: t.numpy() for name, t in feeds.items()})
    exact = copy.deepcopy(cell).double()
    with torch.no_grad():
        ours = exact(x.double(), tuple(t.double() for t in state) if len(state) == 2 else state[0].double())
    ours = ours if isinstance(ours, tuple) else (ours,)
    assert len(theirs) == len(ours)
    for k, (a, b) in enumerate(zip(theirs, ours, strict=True)):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-4, atol=1e-5, err_msg=f"output {k}")
