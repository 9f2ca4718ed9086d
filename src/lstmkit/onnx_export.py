"""ONNX export: lstmkit's LSTM, RNN and their cells as ONNX graphs, and a trained run whole.

Where ONNX's own LSTM and RNN operators express the module, one operator runs each layer (both
directions in one), so that any ONNX runtime runs the recurrence with its fused kernel. The
weights are re-ordered from torch's gate order (i, f, g, o) to ONNX's (i, o, f, c); biases become
ONNX's [W_b, R_b]; peepholes its P in (i, o, f) order; ``cell_clip`` is ONNX's ``clip`` (both
clamp the gate pre-activations).

Coupled gates: lstmkit computes i = 1 - f, ONNX Runtime f = 1 - i for ``input_forget=1`` (the
operator's definition does not say which). Since 1 - σ(a) = σ(-a), the input-gate slots hold the
forget gate's weights, bias and peephole negated and the forget-gate slots hold them as they are,
so the graph computes lstmkit's gates under either reading.

What the operator cannot express (layer norm, projections, zoneout) runs as a Scan over a graph
of one step, written out from the formulas of docs/variants.md with ONNX's LayerNormalization,
MatMul and pointwise operators; a step past a sequence's length holds the state and outputs
zeros, and the reverse direction reads each sequence reversed within its length
(ReverseSequence), as packed sequences do. An LSTMCell is that step graph once; an RNNCell two
products and its nonlinearity.

The graph computes the module in evaluation mode: dropout of every kind is off, zoneout mixes
in its expected fraction. ``onnx`` is an optional dependency (``lstmkit[onnx]``).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .files import atomic_write
from .kernels.contract import LAYER_NORM_EPS
from .models import SequenceModel
from .nn import LSTM, RNN, LSTMCell, RNNCell

if TYPE_CHECKING:  # runs needs the command line's packages; export_onnx does not
    from .runs import Run

# ONNX 1.12 (2022), read by every maintained runtime: the first opset with LayerNormalization
OPSET = 17
_ONNX_GATES = (0, 3, 1, 2)  # ONNX's (i, o, f, c) as indices into torch's (i, f, g, o)


def _onnx():
    try:
        import onnx
    except ImportError as error:  # an optional dependency: say how to get it
        raise ImportError("ONNX export needs the onnx package: pip install 'lstmkit[onnx]'") from error
    return onnx


def _check(module: LSTM | RNN | LSTMCell | RNNCell) -> None:
    """Raise ValueError for a module whose dtype ONNX Runtime's recurrent operators do not run."""
    dtype = next(module.parameters()).dtype
    if dtype != torch.float32:
        raise ValueError(
            f"ONNX export writes float32 models (ONNX Runtime's LSTM and RNN run no other dtype), "
            f"got a {dtype} module; export a float32 copy: copy.deepcopy(module).float()"
        )


def _needs_scan(module: LSTM) -> bool:
    """Whether the module has what ONNX's LSTM operator cannot express."""
    return bool(module.proj_size or module.variants.layer_norm or any(module.variants.zoneout))


class _Graph:
    """Nodes and initializers of an ONNX graph under construction, with unique names."""

    def __init__(self, onnx, names: Iterator[int] | None = None, initializers: list | None = None) -> None:
        self.onnx = onnx
        self.nodes: list = []
        self.initializers: list = [] if initializers is None else initializers
        self._names = itertools.count(1) if names is None else names

    def name(self, stem: str) -> str:
        return f"{stem}_{next(self._names)}"

    def body(self) -> _Graph:
        """A subgraph's builder: nodes of its own; names and constants shared with this graph,
        whose values a subgraph reads."""
        return _Graph(self.onnx, self._names, self.initializers)

    def constant(self, stem: str, value: np.ndarray) -> str:
        name = self.name(stem)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], outputs: int | list[str] = 1, **attributes) -> list[str]:
        """Add a node; returns its output names (generated unless given)."""
        names = outputs if isinstance(outputs, list) else [self.name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, names, **attributes))
        return names


def _array(module: torch.nn.Module, name: str) -> np.ndarray:
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


def _index(graph: _Graph, values: list[int] | int) -> str:
    return graph.constant("index", np.array(values, np.int64))


def _steps_and_keep(graph: _Graph, x: str, lengths: str | None) -> tuple[str, str, str]:
    """(lengths (B,) int64, every sequence T steps if None; keep (T, B, 1) bool: t < length;
    the batch size (1,) int64) for x (T, B, F)."""
    shape = graph.op("Shape", [x])[0]
    steps = graph.op("Gather", [shape, _index(graph, 0)])[0]
    batch = graph.op("Gather", [shape, _index(graph, [1])])[0]
    if lengths is None:
        lengths = graph.op("Expand", [steps, batch])[0]
    positions = graph.op("Range", [_index(graph, 0), steps, _index(graph, 1)])[0]
    positions = graph.op("Unsqueeze", [positions, _index(graph, [1])])[0]
    keep = graph.op("Less", [positions, lengths])[0]
    return lengths, graph.op("Unsqueeze", [keep, _index(graph, [2])])[0], batch


def _initial(graph: _Graph, state: str | None, row: int, size: int, batch: str) -> str:
    """Row ``row`` of a given (L*D, B, size) state, or zeros (B, size) for ``batch`` (1,) = [B]."""
    if state is not None:
        picked = graph.op("Slice", [state, _index(graph, [row]), _index(graph, [row + 1])])[0]
        return graph.op("Squeeze", [picked, _index(graph, [0])])[0]
    shape = graph.op("Concat", [batch, _index(graph, [size])], axis=0)[0]
    zero = graph.onnx.helper.make_tensor("zero", graph.onnx.TensorProto.FLOAT, [1], [0.0])
    return graph.op("ConstantOfShape", [shape], value=zero)[0]


def _scan_step(
    body: _Graph, module: LSTM | LSTMCell, suffix: str, masked: bool = True
) -> tuple[list, list[str]]:
    """One step of one direction as the nodes of ``body``, formulas as docs/variants.md and the
    kernels: (the body's inputs h (B, P), c (B, H), a (B, 4H) the input side and, if ``masked``,
    keep (B, 1); its outputs h', c' and, if ``masked``, y, with state held and y zero where keep
    is false)."""
    onnx, v = body.onnx, module.variants
    size, projection = module.hidden_size, getattr(module, "proj_size", 0)  # cells have none
    h, c, a_in, keep = (body.name(stem) for stem in ("h", "c", "a", "keep"))
    real, boolean = onnx.TensorProto.FLOAT, onnx.TensorProto.BOOL
    inputs = [
        onnx.helper.make_tensor_value_info(h, real, ["batch", projection or size]),
        onnx.helper.make_tensor_value_info(c, real, ["batch", size]),
        onnx.helper.make_tensor_value_info(a_in, real, ["batch", 4 * size]),
    ]
    if masked:
        inputs.append(onnx.helper.make_tensor_value_info(keep, boolean, ["batch", 1]))

    def vector(stem: str) -> str:
        return body.constant(stem, _array(module, stem + suffix))

    def times(a: str, b: str) -> str:
        return body.op("Mul", [a, b])[0]

    def plus(a: str, b: str) -> str:
        return body.op("Add", [a, b])[0]

    def clipped(a: str) -> str:
        if v.cell_clip is None:
            return a
        bounds = (body.constant("clip", np.array(bound, np.float32)) for bound in (-v.cell_clip, v.cell_clip))
        return body.op("Clip", [a, *bounds])[0]

    def mixed(keep_fraction: float, old: str, new: str) -> str:  # zoneout in evaluation
        if not keep_fraction:
            return new
        z, rest = (
            body.constant("zoneout", np.array(p, np.float32)) for p in (keep_fraction, 1 - keep_fraction)
        )
        return plus(times(z, old), times(rest, new))

    z = body.op("MatMul", [h, body.constant("W_hh", _array(module, "weight_hh" + suffix).T)])[0]
    if v.layer_norm:
        z = body.op("LayerNormalization", [z, vector("layer_norm_hh")], epsilon=LAYER_NORM_EPS)[0]
    a_i, a_f, a_g, a_o = body.op("Split", [plus(a_in, z), _index(body, [size] * 4)], 4, axis=1)
    if v.peephole:
        if not v.coupled_input_forget:
            a_i = plus(a_i, times(vector("peephole_i"), c))
        a_f = plus(a_f, times(vector("peephole_f"), c))
    forget_gate = body.op("Sigmoid", [clipped(a_f)])[0]
    if v.coupled_input_forget:
        input_gate = body.op("Sub", [body.constant("one", np.array(1.0, np.float32)), forget_gate])[0]
    else:
        input_gate = body.op("Sigmoid", [clipped(a_i)])[0]
    candidate = body.op("Tanh", [clipped(a_g)])[0]
    cell = plus(times(forget_gate, c), times(input_gate, candidate))
    if v.peephole:
        a_o = plus(a_o, times(vector("peephole_o"), cell))
    output_gate = body.op("Sigmoid", [clipped(a_o)])[0]
    squashed = cell
    if v.layer_norm:
        gains = (vector("layer_norm_cell_weight"), vector("layer_norm_cell_bias"))
        squashed = body.op("LayerNormalization", [cell, *gains], epsilon=LAYER_NORM_EPS)[0]
    hidden = times(output_gate, body.op("Tanh", [squashed])[0])
    if projection:
        hidden = body.op("MatMul", [hidden, body.constant("W_hr", _array(module, "weight_hr" + suffix).T)])[0]
    hidden, cell = mixed(v.zoneout[1], h, hidden), mixed(v.zoneout[0], c, cell)
    if not masked:
        return inputs, [hidden, cell]
    outputs = [
        body.op("Where", [keep, hidden, h])[0],
        body.op("Where", [keep, cell, c])[0],
        body.op("Where", [keep, hidden, body.constant("zero", np.array(0.0, np.float32))])[0],
    ]
    return inputs, outputs


def _input_side(graph: _Graph, module: LSTM | LSTMCell, suffix: str, x: str) -> str:
    """W_ih x (with layer norm's gain if on) + b_ih + b_hh, over x's last dimension."""
    pre = graph.op("MatMul", [x, graph.constant("W_ih", _array(module, "weight_ih" + suffix).T)])[0]
    if module.variants.layer_norm:
        gain = graph.constant("gain", _array(module, "layer_norm_ih" + suffix))
        pre = graph.op("LayerNormalization", [pre, gain], epsilon=LAYER_NORM_EPS)[0]
    if module.bias:
        bias = _array(module, "bias_ih" + suffix) + _array(module, "bias_hh" + suffix)
        pre = graph.op("Add", [pre, graph.constant("bias", bias)])[0]
    return pre


def _cell_nodes(graph: _Graph, cell: LSTMCell | RNNCell, x: str, state: tuple[str, ...]) -> list[str]:
    """One step of a cell over x (B, I) from h (B, H)[, c (B, H)]: the new state's names."""
    if isinstance(cell, LSTMCell):
        pre = _input_side(graph, cell, "", x)
        start = len(graph.nodes)
        inputs, outputs = _scan_step(graph, cell, "", masked=False)
        # the step's nodes read their own input names: feed them, ahead of those nodes
        make_node = graph.onnx.helper.make_node
        feeds = [
            make_node("Identity", [value], [slot.name])
            for value, slot in zip((*state, pre), inputs, strict=True)
        ]
        graph.nodes[start:start] = feeds
        return outputs
    a = graph.op("MatMul", [x, graph.constant("W_ih", _array(cell, "weight_ih").T)])[0]
    recurrent = graph.op("MatMul", [state[0], graph.constant("W_hh", _array(cell, "weight_hh").T)])[0]
    a = graph.op("Add", [a, recurrent])[0]
    if cell.bias:
        a = graph.op("Add", [a, graph.constant("bias", _array(cell, "bias_ih") + _array(cell, "bias_hh"))])[0]
    return [graph.op("Tanh" if cell.nonlinearity == "tanh" else "Relu", [a])[0]]


def _scan_layers(
    graph: _Graph, module: LSTM, x: str, state: tuple[str, ...] | None, lengths: str | None
) -> tuple[str, tuple[str, ...]]:
    """``_recurrent_nodes`` for what ONNX's LSTM cannot express: each direction a Scan over a
    one-step graph, reversed within each sequence's length for the reverse direction."""
    onnx = graph.onnx
    lengths, keep, batch = _steps_and_keep(graph, x, lengths)
    directions = module._directions
    finals: tuple[list[str], list[str]] = ([], [])
    for layer in range(module.num_layers):
        ys = []
        for direction in range(directions):
            row = layer * directions + direction
            suffix = module._suffixes()[row]
            pre = _input_side(graph, module, suffix, x)
            if direction:
                pre = graph.op("ReverseSequence", [pre, lengths], batch_axis=1, time_axis=0)[0]
            initial = [
                _initial(graph, None if state is None else state[k], row, size, batch)
                for k, size in enumerate(module._state_sizes())
            ]
            body = graph.body()
            inputs, outputs = _scan_step(body, module, suffix)
            step = onnx.helper.make_graph(body.nodes, f"step_{suffix}", inputs, [
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in outputs
            ])  # fmt: skip
            h_n, c_n, y = graph.op("Scan", [*initial, pre, keep], 3, body=step, num_scan_inputs=2)
            if direction:
                y = graph.op("ReverseSequence", [y, lengths], batch_axis=1, time_axis=0)[0]
            ys.append(y)
            for collected, final in zip(finals, (h_n, c_n), strict=True):
                collected.append(graph.op("Unsqueeze", [final, _index(graph, [0])])[0])
        x = ys[0] if directions == 1 else graph.op("Concat", ys, axis=2)[0]
    return x, tuple(graph.op("Concat", names, axis=0)[0] for names in finals)


def _recurrent_nodes(
    graph: _Graph, module: LSTM | RNN, x: str, state: tuple[str, ...] | None, lengths: str | None
) -> tuple[str, tuple[str, ...]]:
    """The module's layers over x (T, B, I), time-major: (output (T, B, D*P), (h_n (L*D, B, P)
    [, c_n (L*D, B, H)])); ``state`` names h0[, c0] as those, ``lengths`` (B,) int64 steps."""
    if isinstance(module, LSTM) and _needs_scan(module):
        return _scan_layers(graph, module, x, state, lengths)
    if lengths is not None:  # the operators read int32
        lengths = graph.op("Cast", [lengths], to=graph.onnx.TensorProto.INT32)[0]
    directions = module._directions
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
    module: LSTM | RNN | LSTMCell | RNNCell,
    path: str | os.PathLike | None = None,
    *,
    initial_state: bool = False,
    lengths: bool = False,
):
    """``module`` as an ONNX model (``onnx.ModelProto``), written to ``path`` if given.

    A cell: inputs ``input`` (B, I), ``h0`` (B, H) (and ``c0`` for an LSTMCell), outputs ``h_1``
    (and ``c_1``), one step; ``initial_state`` and ``lengths`` concern sequences only. A sequence
    module: graph inputs ``input`` (T, B, I), or (B, T, I) with ``batch_first``; with ``initial_state``,
    ``h0`` (L*D, B, H) (and ``c0`` for an LSTM); with ``lengths``, ``lengths`` (B,) int64, each
    sequence's steps, as the module's ``lengths=``. Outputs ``output`` (T, B, D*H) (or batch
    first), ``h_n`` and for an LSTM ``c_n``, (L*D, B, H): what the module returns in evaluation
    mode, zeros at padding. T and B are free dimensions. The file is written whole or not at all.

    Every option exports (see the module docstring for how). Raises ValueError, before writing,
    for modules other than float32 ones; TypeError for other modules.
    """
    if not isinstance(module, (LSTM, RNN, LSTMCell, RNNCell)):
        raise TypeError(
            f"export_onnx takes an lstmkit LSTM, RNN, LSTMCell or RNNCell, got {type(module).__name__}"
        )
    _check(module)
    onnx = _onnx()
    element = onnx.TensorProto.FLOAT
    graph = _Graph(onnx)
    if isinstance(module, (LSTMCell, RNNCell)):
        state = ("h0", "c0")[: len(module._state_names)]
        inputs = [onnx.helper.make_tensor_value_info("input", element, ["batch", module.input_size])]
        inputs += [
            onnx.helper.make_tensor_value_info(name, element, ["batch", module.hidden_size]) for name in state
        ]
        names = ("h_1", "c_1")[: len(state)]
        for name, value in zip(names, _cell_nodes(graph, module, "input", state), strict=True):
            graph.op("Identity", [value], [name])
        outputs = [
            onnx.helper.make_tensor_value_info(name, element, ["batch", module.hidden_size]) for name in names
        ]
        return _finish(onnx, graph, f"lstmkit.{type(module).__name__}", inputs, outputs, path)
    directions = module._directions
    rows = module.num_layers * directions
    sequence = ["batch", "time"] if module.batch_first else ["time", "batch"]
    inputs = [onnx.helper.make_tensor_value_info("input", element, [*sequence, module.input_size])]
    x = graph.op("Transpose", ["input"], perm=[1, 0, 2])[0] if module.batch_first else "input"
    state = None
    sizes = module._state_sizes()  # (P, H) for an LSTM, (H,) for an RNN
    if initial_state:
        state = ("h0", "c0")[: len(sizes)]
        inputs += [
            onnx.helper.make_tensor_value_info(name, element, [rows, "batch", size])
            for name, size in zip(state, sizes, strict=True)
        ]
    if lengths:
        inputs.append(onnx.helper.make_tensor_value_info("lengths", onnx.TensorProto.INT64, ["batch"]))
    out, finals = _recurrent_nodes(graph, module, x, state, "lengths" if lengths else None)
    graph.op("Transpose" if module.batch_first else "Identity", [out], ["output"], **(
        {"perm": [1, 0, 2]} if module.batch_first else {}
    ))  # fmt: skip
    final_names = ("h_n", "c_n")[: len(finals)]
    for name, final in zip(final_names, finals, strict=True):
        graph.op("Identity", [final], [name])
    outputs = [
        onnx.helper.make_tensor_value_info("output", element, [*sequence, directions * sizes[0]]),
        *(
            onnx.helper.make_tensor_value_info(name, element, [rows, "batch", size])
            for name, size in zip(final_names, sizes, strict=True)
        ),
    ]
    return _finish(onnx, graph, f"lstmkit.{type(module).__name__}", inputs, outputs, path)


def _finish(onnx, graph: _Graph, name: str, inputs: list, outputs: list, path, metadata=None):
    """The checked model of ``graph``, written whole to ``path`` if given."""
    model = onnx.helper.make_model(
        onnx.helper.make_graph(graph.nodes, name, inputs, outputs, graph.initializers),
        opset_imports=[onnx.helper.make_opsetid("", OPSET)],
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
    directions = lstm._directions
    rows = lstm.num_layers * directions
    bounds = [graph.constant("bounds", np.array([k], np.int64)) for k in (rows - directions, rows)]
    top = graph.op("Slice", [finals[0], *bounds])[0]  # (D, B, H): the top layer's final h
    top = graph.op("Transpose", [top], perm=[1, 0, 2])[0]
    top = graph.op("Reshape", [top, graph.constant("shape", np.array([0, -1], np.int64))])[0]
    return graph.op("Gemm", [top, graph.constant("head", weight), bias], transB=1)[0], finals


def export_run(run: Run, path: str | os.PathLike | None = None):
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

    Metadata (``metadata_props``) names the columns, labels or vocabulary.
    """
    model, task = run.model, run.task
    _check(model.lstm)
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
        rows = lstm.num_layers * lstm._directions
        state_shapes = [[rows, "batch", size] for size in lstm._state_sizes()]
        inputs = [value_info("ids", onnx.TensorProto.INT64, ["batch", "time"])]
        inputs += [
            value_info(name, real, shape) for name, shape in zip(("h0", "c0"), state_shapes, strict=True)
        ]
        logits, finals = _network(graph, model, "ids", ("h0", "c0"))
        for name, value in zip(("logits", "h_n", "c_n"), (logits, *finals), strict=True):
            graph.op("Identity", [value], [name])
        vocabulary = len(spec.vocabulary)
        outputs = [value_info("logits", real, ["batch", "time", vocabulary])]
        outputs += [
            value_info(name, real, shape) for name, shape in zip(("h_n", "c_n"), state_shapes, strict=True)
        ]
        metadata = {"vocabulary": spec.vocabulary}
    return _finish(onnx, graph, f"lstmkit {task.name} run", inputs, outputs, path, metadata)
