"""Peepholes, clipping and coupled gates equal the ONNX LSTM operator, as ONNX Runtime computes it.

Each case builds a one-layer ONNX LSTM node with lstmkit's weights re-ordered to ONNX's gate order
(i, o, f, c) and runs it in onnxruntime. ONNX Runtime couples gates as f = 1 - i (input_forget=1);
lstmkit's CIFG is i = 1 - f. Since 1 - σ(a) = σ(-a), they are the same model when ONNX's input-gate
slots hold lstmkit's forget-gate weights, biases and peephole negated.
"""

import numpy as np
import pytest
import torch

import lstmkit

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402


def _onnx_lstm(x, h0, c0, W, R, B, P, hidden, clip, input_forget, direction):
    """Run ONNX's LSTM on numpy float32 arrays; returns (Y (T, D, B, H), Y_h, Y_c)."""
    names = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]
    attributes = {"hidden_size": hidden, "input_forget": int(input_forget), "direction": direction}
    if clip is not None:
        attributes["clip"] = clip
    node = helper.make_node("LSTM", names, ["Y", "Y_h", "Y_c"], **attributes)
    steps, batch = x.shape[:2]
    lengths = np.full(batch, steps, dtype=np.int32)
    feeds = dict(zip(names, [x, W, R, B, lengths, h0, c0, P], strict=True))
    inputs = [
        helper.make_tensor_value_info(
            n, TensorProto.INT32 if n == "sequence_lens" else TensorProto.FLOAT, v.shape
        )
        for n, v in feeds.items()
    ]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Y_h", "Y_c")]
    graph = helper.make_graph([node], "lstm", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _to_onnx_order(tensor: torch.Tensor, coupled: bool) -> np.ndarray:
    """(4H, ...) in lstmkit's (i, f, g, o) -> ONNX's (i, o, f, c); see the module docstring."""
    i, f, g, o = tensor.detach().chunk(4)
    if coupled:
        i = -f
    return torch.cat([i, o, f, g]).numpy()


CASES = [
    dict(peephole=True),
    dict(cell_clip=0.5),
    dict(coupled_input_forget=True),
    dict(peephole=True, cell_clip=0.8, coupled_input_forget=True),
    dict(peephole=True, cell_clip=0.3),
]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("options", CASES, ids=lambda o: ",".join(o))
def test_equals_onnx_runtime(options, reverse):
    torch.manual_seed(0)
    hidden, inputs, steps, batch = 4, 3, 6, 2
    model = lstmkit.LSTM(inputs, hidden, bidirectional=reverse, **options)
    with torch.no_grad():  # weights large enough for clipping to bite
        for p in model.parameters():
            p.mul_(3)
    k = 1 if reverse else 0  # ONNX's direction="reverse" is lstmkit's reverse direction
    suffix = "_l0_reverse" if reverse else "_l0"
    coupled = options.get("coupled_input_forget", False)
    x = torch.randn(steps, batch, inputs)
    h0, c0 = torch.randn(2 if reverse else 1, batch, hidden), torch.randn(2 if reverse else 1, batch, hidden)
    with torch.no_grad():
        out, (h_n, c_n) = model(x, (h0, c0))

    def param(stem):
        return getattr(model, stem + suffix)

    W = _to_onnx_order(param("weight_ih"), coupled)[None]
    R = _to_onnx_order(param("weight_hh"), coupled)[None]
    B = np.concatenate(
        [_to_onnx_order(param("bias_ih"), coupled), _to_onnx_order(param("bias_hh"), coupled)]
    )[None]
    zeros = torch.zeros(hidden)
    peep = {g: getattr(model, f"peephole_{g}{suffix}", zeros).detach() for g in "ifo"}
    if coupled:  # ONNX's input gate is lstmkit's forget gate negated; ONNX ignores P_f when coupled
        peep = {"i": -peep["f"], "f": zeros, "o": peep["o"]}
    P = torch.cat([peep["i"], peep["o"], peep["f"]]).numpy()[None]
    Y, Y_h, Y_c = _onnx_lstm(
        x.numpy(), h0[k : k + 1].numpy(), c0[k : k + 1].numpy(), W, R, B, P, hidden,
        options.get("cell_clip"), coupled, "reverse" if reverse else "forward",
    )  # fmt: skip
    ours = out[..., hidden * k : hidden * (k + 1)]
    torch.testing.assert_close(ours, torch.from_numpy(Y[:, 0]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h_n[k], torch.from_numpy(Y_h[0]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c_n[k], torch.from_numpy(Y_c[0]), rtol=1e-5, atol=1e-5)
    if options.get("cell_clip"):  # the clip did act: without it the result differs
        with torch.no_grad():
            unclipped = lstmkit.LSTM(inputs, hidden, bidirectional=reverse, **{**options, "cell_clip": None})
            unclipped.load_state_dict(model.state_dict())
            assert not torch.allclose(unclipped(x, (h0, c0))[0], out, atol=1e-3)
