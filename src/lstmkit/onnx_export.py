"""ONNX export: ``lstmkit.LSTM`` and ``lstmkit.RNN`` as ONNX's own LSTM and RNN operators.

One operator per layer (both directions in one), so that any ONNX runtime runs the recurrence
with its fused kernel rather than an unrolled graph. The weights are re-ordered from torch's gate
order (i, f, g, o) to ONNX's (i, o, f, c); biases become ONNX's [W_b, R_b]; peepholes its P in
(i, o, f) order. ``cell_clip`` is ONNX's ``clip`` (both clamp the gate pre-activations).

Coupled gates: lstmkit computes i = 1 - f, ONNX Runtime f = 1 - i for ``input_forget=1`` (the
operator's definition does not say which). Since 1 - σ(a) = σ(-a), the input-gate slots hold the
forget gate's weights, bias and peephole negated and the forget-gate slots hold them as they are,
so the graph computes lstmkit's gates under either reading.

The graph computes the module in evaluation mode: dropout of every kind is off. What ONNX's
operators cannot express (layer norm, projections, zoneout, which mixes states in evaluation too)
is refused before anything is written. ``onnx`` is an optional dependency (``lstmkit[onnx]``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .files import atomic_write
from .models import SequenceModel
from .nn import LSTM, RNN

if TYPE_CHECKING:  # runs needs the command line's packages; export_onnx does not
    from .runs import Run

# ONNX 1.12 (2022): read by every maintained runtime; its LSTM and RNN are the operators of opset 14
OPSET = 17
_ONNX_GATES = (0, 3, 1, 2)  # ONNX's (i, o, f, c) as indices into torch's (i, f, g, o)


def _onnx():
    try:
        import onnx
    except ImportError as error:  # an optional dependency: say how to get it
        raise ImportError("ONNX export needs the onnx package: pip install 'lstmkit[onnx]'") from error
    return onnx


def _check(module: LSTM | RNN, whose: str) -> None:
    """Raise ValueError for what ONNX's operators (as ONNX Runtime runs them) cannot express."""
    reasons = []
    if module.proj_size:
        reasons.append(f"proj_size={module.proj_size} (ONNX's LSTM has no projection)")
    if isinstance(module, LSTM):
        variants = module.variants
        if variants.layer_norm:
            reasons.append("layer_norm=True (ONNX's LSTM has no normalisation)")
        if any(variants.zoneout):
            reasons.append(f"zoneout={variants.zoneout} (it mixes states in evaluation too)")
    if reasons:
        raise ValueError(
            f"ONNX's {type(module).__name__} operator cannot express {whose} {', '.join(reasons)}"
        )
    dtype = module.weight_ih_l0.dtype
    if dtype != torch.float32:
        raise ValueError(
            f"ONNX export writes float32 models (ONNX Runtime's LSTM and RNN run no other dtype), "
            f"got a {dtype} module; export a float32 copy: copy.deepcopy(module).float()"
        )


class _Graph:
    """Nodes and initializers of an ONNX graph under construction, with unique names."""

    def __init__(self, onnx) -> None:
        self.onnx = onnx
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def _name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def constant(self, stem: str, value: np.ndarray) -> str:
        name = self._name(stem)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], outputs: int | list[str] = 1, **attributes) -> list[str]:
        """Add a node; returns its output names (generated unless given)."""
        names = (
            outputs if isinstance(outputs, list) else [self._name(op_type.lower()) for _ in range(outputs)]
        )
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, names, **attributes))
        return names


def _array(module: LSTM | RNN, name: str) -> np.ndarray:
    """A parameter (or a weight-dropped module's plain tensor) as a float32 array."""
    return getattr(module, name).detach().cpu().numpy()


def _lstm_weights(module: LSTM, suffix: str) -> tuple[np.ndarray, ...]:
    """One direction's (W (4H, I), R (4H, H), B (8H,) or None, P (3H,) or None) in ONNX's layout."""
    coupled = module.variants.coupled_input_forget

    def gates(vector_or_matrix: np.ndarray) -> np.ndarray:
        parts = np.split(vector_or_matrix, 4)  # torch's (i, f, g, o)
        if coupled:  # ONNX's input slot holds the forget gate negated (module docstring)
            parts[0] = -parts[1]
        return np.concatenate([parts[k] for k in _ONNX_GATES])

    w, r = (gates(_array(module, name + suffix)) for name in ("weight_ih", "weight_hh"))
    bias = None
    if module.bias:
        bias = np.concatenate([gates(_array(module, name + suffix)) for name in ("bias_ih", "bias_hh")])
    peephole = None
    if module.variants.peephole:
        p_f = _array(module, "peephole_f" + suffix)
        p_i = -p_f if coupled else _array(module, "peephole_i" + suffix)
        p_o = _array(module, "peephole_o" + suffix)
        peephole = np.concatenate([p_i, p_o, p_f])
    return w, r, bias, peephole


def _rnn_weights(module: RNN, suffix: str) -> tuple[np.ndarray, ...]:
    """One direction's (W (H, I), R (H, H), B (2H,) or None, None)."""
    w, r = (_array(module, name + suffix) for name in ("weight_ih", "weight_hh"))
    bias = None
    if module.bias:
        bias = np.concatenate([_array(module, name + suffix) for name in ("bias_ih", "bias_hh")])
    return w, r, bias, None


def _recurrent_nodes(
    graph: _Graph, module: LSTM | RNN, x: str, state: tuple[str, ...] | None, lengths: str | None
) -> tuple[str, tuple[str, ...]]:
    """The module's layers over x (T, B, I), time-major: (output (T, B, D*H), (h_n[, c_n]) each
    (L*D, B, H)); ``state`` names h0[, c0] (L*D, B, H), ``lengths`` (B,) int32 steps."""
    directions = 2 if module.bidirectional else 1
    lstm = isinstance(module, LSTM)
    direction = "bidirectional" if module.bidirectional else "forward"
    finals: list[list[str]] = [[] for _ in module._state_names]
    for layer in range(module.num_layers):
        suffixes = module._suffixes()[layer * directions : (layer + 1) * directions]
        read = _lstm_weights if lstm else _rnn_weights
        parts = [read(module, suffix) for suffix in suffixes]
        w, r, b, p = (None if parts[0][k] is None else np.stack([q[k] for q in parts]) for k in range(4))
        initial = ["", ""]
        if state is not None:
            bounds = [
                graph.constant("bounds", np.array([k * directions], np.int64)) for k in (layer, layer + 1)
            ]
            initial = [graph.op("Slice", [s, *bounds])[0] for s in state]
        inputs = [
            x,
            graph.constant("W", w),
            graph.constant("R", r),
            "" if b is None else graph.constant("B", b),
            lengths or "",
            *initial[: len(module._state_names)],
        ]
        attributes = dict(hidden_size=module.hidden_size, direction=direction)
        if lstm:
            inputs.append("" if p is None else graph.constant("P", p))
            variants = module.variants
            attributes["input_forget"] = int(variants.coupled_input_forget)
            if variants.cell_clip is not None:
                attributes["clip"] = float(variants.cell_clip)
        else:
            activation = "Tanh" if module.nonlinearity == "tanh" else "Relu"
            attributes["activations"] = [activation] * directions
        while inputs[-1] == "":  # ONNX: trailing optional inputs are left out
            inputs.pop()
        y, *final = graph.op("LSTM" if lstm else "RNN", inputs, 1 + len(module._state_names), **attributes)
        for collected, name in zip(finals, final, strict=True):
            collected.append(name)
        # Y (T, D, B, H) -> (T, B, D * H), the next layer's input
        y = graph.op("Transpose", [y], perm=[0, 2, 1, 3])[0]
        x = graph.op("Reshape", [y, graph.constant("shape", np.array([0, 0, -1], np.int64))])[0]
    return x, tuple(graph.op("Concat", names, axis=0)[0] for names in finals)


def export_onnx(
    module: LSTM | RNN,
    path: str | os.PathLike | None = None,
    *,
    initial_state: bool = False,
    lengths: bool = False,
    opset: int = OPSET,
):
    """``module`` as an ONNX model (``onnx.ModelProto``), written to ``path`` if given.

    Graph inputs: ``input`` (T, B, I), or (B, T, I) with ``batch_first``; with ``initial_state``,
    ``h0`` (L*D, B, H) (and ``c0`` for an LSTM); with ``lengths``, ``lengths`` (B,) int64, each
    sequence's steps, as the module's ``lengths=``. Outputs ``output`` (T, B, D*H) (or batch
    first), ``h_n`` and for an LSTM ``c_n``, (L*D, B, H): what the module returns in evaluation
    mode, zeros at padding. T and B are free dimensions. The file is written whole or not at all.

    Raises ValueError, before writing, for layer norm, projections, zoneout and modules other
    than float32 ones; TypeError for other modules.
    """
    if not isinstance(module, (LSTM, RNN)):
        raise TypeError(f"export_onnx takes an lstmkit.LSTM or lstmkit.RNN, got {type(module).__name__}")
    _check(module, "this module's")
    onnx = _onnx()
    element = onnx.TensorProto.FLOAT
    graph = _Graph(onnx)
    directions = 2 if module.bidirectional else 1
    rows = module.num_layers * directions
    sequence = ["batch", "time"] if module.batch_first else ["time", "batch"]
    inputs = [onnx.helper.make_tensor_value_info("input", element, [*sequence, module.input_size])]
    x = graph.op("Transpose", ["input"], perm=[1, 0, 2])[0] if module.batch_first else "input"
    state = None
    if initial_state:
        state = ("h0", "c0")[: len(module._state_names)]
        inputs += [
            onnx.helper.make_tensor_value_info(name, element, [rows, "batch", module.hidden_size])
            for name in state
        ]
    steps = None
    if lengths:
        inputs.append(onnx.helper.make_tensor_value_info("lengths", onnx.TensorProto.INT64, ["batch"]))
        steps = graph.op("Cast", ["lengths"], to=onnx.TensorProto.INT32)[0]
    out, finals = _recurrent_nodes(graph, module, x, state, steps)
    graph.op("Transpose" if module.batch_first else "Identity", [out], ["output"], **(
        {"perm": [1, 0, 2]} if module.batch_first else {}
    ))  # fmt: skip
    final_names = ("h_n", "c_n")[: len(finals)]
    for name, final in zip(final_names, finals, strict=True):
        graph.op("Identity", [final], [name])
    outputs = [
        onnx.helper.make_tensor_value_info("output", element, [*sequence, directions * module.hidden_size]),
        *(
            onnx.helper.make_tensor_value_info(name, element, [rows, "batch", module.hidden_size])
            for name in final_names
        ),
    ]
    return _finish(onnx, graph, f"lstmkit.{type(module).__name__}", inputs, outputs, path, opset)


def _finish(onnx, graph: _Graph, name: str, inputs: list, outputs: list, path, opset: int, metadata=None):
    """The checked model of ``graph``, written whole to ``path`` if given."""
    model = onnx.helper.make_model(
        onnx.helper.make_graph(graph.nodes, name, inputs, outputs, graph.initializers),
        opset_imports=[onnx.helper.make_opsetid("", opset)],
        producer_name="lstmkit",
    )
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    if path is not None:
        atomic_write(Path(path), model.SerializeToString())
    return model


def _network(graph: _Graph, model: SequenceModel, x: str, state: tuple[str, ...] | None) -> tuple[str, tuple]:
    """``model`` over x: (B, T, F) features, or (B, T) ids where it has an embedding. Returns the
    head's output, (B, O) from the top layer's final states or (B, T, O) for every step with an
    embedding (as ``SequenceModel.forward``), and the final states (h_n, c_n)."""
    if model.embedding is not None:
        x = graph.op("Gather", [graph.constant("embedding", _array(model.embedding, "weight")), x])[0]
    x = graph.op("Transpose", [x], perm=[1, 0, 2])[0]  # time-major
    out, finals = _recurrent_nodes(graph, model.lstm, x, state, None)
    weight, bias = _array(model.head, "weight"), graph.constant("bias", _array(model.head, "bias"))
    if model.embedding is not None:
        out = graph.op("Transpose", [out], perm=[1, 0, 2])[0]
        logits = graph.op("MatMul", [out, graph.constant("head", weight.T)])[0]
        return graph.op("Add", [logits, bias])[0], finals
    lstm = model.lstm
    directions = 2 if lstm.bidirectional else 1
    rows = lstm.num_layers * directions
    bounds = [graph.constant("bounds", np.array([k], np.int64)) for k in (rows - directions, rows)]
    top = graph.op("Slice", [finals[0], *bounds])[0]  # (D, B, H): the top layer's final h
    top = graph.op("Transpose", [top], perm=[1, 0, 2])[0]
    top = graph.op("Reshape", [top, graph.constant("shape", np.array([0, -1], np.int64))])[0]
    return graph.op("Gemm", [top, graph.constant("head", weight), bias], transB=1)[0], finals


def export_run(run: Run, path: str | os.PathLike | None = None, *, opset: int = OPSET):
    """A trained run's model, its input scaling and its output decoding, as one ONNX model
    (``onnx.ModelProto``), written to ``path`` if given. By task:

    - forecast: ``window`` (B, W, C) float32, the last W rows of the target columns then the
      feature columns, in the data's units -> ``forecast`` (B, horizon, targets) in the data's
      units, what ``lstmkit predict`` prints;
    - classify: ``values`` (B, steps * features) float32, rows of the feature columns ->
      ``probabilities`` (B, classes), classes in the order of the metadata's ``labels``;
    - language-model: ``ids`` (B, T) int64 (indices into the metadata's ``vocabulary``), ``h0``
      and ``c0`` (L*D, B, P) (zeros to start; the previous call's to continue) -> ``logits``
      (B, T, vocabulary), ``h_n``, ``c_n``.

    Metadata (``metadata_props``) names the columns, labels or vocabulary. The same refusals as
    ``export_onnx`` for what ONNX's LSTM cannot express, before anything is written.
    """
    model, task = run.model, run.task
    _check(model.lstm, "this run's")
    onnx = _onnx()
    graph = _Graph(onnx)
    real = onnx.TensorProto.FLOAT
    spec = task.spec
    value_info = onnx.helper.make_tensor_value_info

    def scaled(name: str, mean, std) -> str:
        centred = graph.op("Sub", [name, graph.constant("mean", np.asarray(mean, np.float32))])[0]
        return graph.op("Div", [centred, graph.constant("std", np.asarray(std, np.float32))])[0]

    if task.name == "forecast":
        k, columns = len(spec.targets), [*spec.targets, *spec.features]
        inputs = [value_info("window", real, ["batch", spec.window, len(columns)])]
        out, _ = _network(graph, model, scaled("window", spec.mean, spec.std), None)
        shape = graph.constant("shape", np.array([0, spec.horizon, k], np.int64))
        scale = graph.constant("scale", np.asarray(spec.target_scale, np.float32))
        out = graph.op("Mul", [graph.op("Reshape", [out, shape])[0], scale])[0]
        if spec.transform == "delta":  # changes from each window's last row
            corners = [
                graph.constant("corner", np.array(v, np.int64)) for v in ([-1, 0], [spec.window, k], [1, 2])
            ]
            base = graph.op("Slice", ["window", *corners])[0]
        else:
            base = graph.constant("level", np.asarray(spec.mean[:k], np.float32))
        graph.op("Add", [out, base], ["forecast"])
        outputs = [value_info("forecast", real, ["batch", spec.horizon, k])]
        metadata = {"targets": json.dumps(spec.targets), "columns": json.dumps(columns)}
    elif task.name == "classify":
        inputs = [value_info("values", real, ["batch", len(spec.features)])]
        shape = graph.constant("shape", np.array([0, spec.steps, -1], np.int64))
        x = graph.op("Reshape", [scaled("values", spec.mean, spec.std), shape])[0]
        graph.op("Softmax", [_network(graph, model, x, None)[0]], ["probabilities"], axis=-1)
        outputs = [value_info("probabilities", real, ["batch", len(spec.labels)])]
        metadata = {"labels": json.dumps(spec.labels), "features": json.dumps(spec.features)}
    else:
        lstm = model.lstm
        state_shape = [lstm.num_layers * (2 if lstm.bidirectional else 1), "batch", lstm.hidden_size]
        inputs = [value_info("ids", onnx.TensorProto.INT64, ["batch", "time"])]
        inputs += [value_info(name, real, state_shape) for name in ("h0", "c0")]
        logits, finals = _network(graph, model, "ids", ("h0", "c0"))
        for name, value in zip(("logits", "h_n", "c_n"), (logits, *finals), strict=True):
            graph.op("Identity", [value], [name])
        vocabulary = len(spec.vocabulary)
        outputs = [value_info("logits", real, ["batch", "time", vocabulary])]
        outputs += [value_info(name, real, state_shape) for name in ("h_n", "c_n")]
        metadata = {"vocabulary": spec.vocabulary}
    return _finish(onnx, graph, f"lstmkit {task.name} run", inputs, outputs, path, opset, metadata)
