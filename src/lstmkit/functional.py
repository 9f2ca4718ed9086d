"""Stacked, optionally bidirectional recurrent networks over packed rows, with backend dispatch.

``lstm`` and ``rnn`` take the packed-row layout of ``lstmkit.kernels`` and run ``num_layers``
layers of one or two directions (SPEC.md §3): each layer reads the concatenated outputs of the
layer below; dropout, when training, acts between layers, never after the last (as torch.nn.LSTM).
``lstm`` also draws the random masks of the variant options (docs/variants.md) with torch's
global generator, so a seed fixes them. The modules of ``lstmkit.nn`` validate arguments and
convert tensors and PackedSequences to this layout; these functions trust their input.

A backend provides one layer function per cell type:
``lstm_layer(x, state, weights, batch_sizes, reverse, options, masks) -> (out, state, (gates, cells))``
and ``rnn_layer(x, state, weights, batch_sizes, reverse, nonlinearity) -> (out, state, None)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import compilation, reference, reference_variants
from .kernels import cpu, gpu, second_order, torch_ops
from .kernels import masks as random_masks
from .kernels.contract import NO_MASKS, PLAIN, LSTMMasks, LSTMOptions, LSTMWeights

LayerFn = Callable[..., tuple[Tensor, tuple[Tensor, ...], tuple[Tensor, Tensor] | None]]


def padded(x: Tensor, batch_sizes: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Packed rows (N, F) -> padded (T, B, F), in the rows' batch order, and lengths (B,)."""
    return pad_packed_sequence(PackedSequence(x, torch.tensor(batch_sizes)))


def _packed(padded: Tensor, lengths: Tensor) -> Tensor:
    return pack_padded_sequence(padded, lengths).data


def _reference_lstm(x, state, weights, batch_sizes, reverse, options=PLAIN, masks=NO_MASKS):
    padded_x, lengths = padded(x, batch_sizes)
    keep = [m if m is None or m.dim() == 0 else padded(m, batch_sizes)[0] for m in masks[1:]]
    masks = LSTMMasks(masks.recurrent, *keep)
    out, final, (gates, cells) = reference_variants.lstm_layer(
        padded_x, state, weights, lengths, reverse, options, masks
    )
    return _packed(out, lengths), final, (_packed(gates, lengths), _packed(cells, lengths))


def _reference_rnn(x, state, weights, batch_sizes, reverse, nonlinearity="tanh"):
    padded_x, lengths = padded(x, batch_sizes)
    out, hidden = reference.rnn_layer(padded_x, *state, weights, lengths, reverse, nonlinearity)
    return _packed(out, lengths), (hidden,), None


second_order.REFERENCES.update(lstm=_reference_lstm, rnn=_reference_rnn)

LSTM_BACKENDS: dict[str, LayerFn] = {
    "torch": torch_ops.lstm_layer,
    "reference": _reference_lstm,
}
RNN_BACKENDS: dict[str, LayerFn] = {
    "torch": torch_ops.rnn_layer,
    "reference": _reference_rnn,
}
if cpu.available():
    # their kernels are Numba's: only where Numba is installed
    from .kernels import cpu_rnn, cpu_split, cpu_step

    LSTM_BACKENDS["cpu"] = cpu_step.lstm_layer
    RNN_BACKENDS["cpu"] = cpu_rnn.rnn_layer
if gpu.available():
    LSTM_BACKENDS["triton"] = gpu.lstm_layer
TABLES = {"lstm": LSTM_BACKENDS, "rnn": RNN_BACKENDS}


def available(kind: str = "lstm") -> list[str]:
    """The backend names a module of ``kind`` ("lstm" or "rnn") accepts on this machine."""
    return ["auto", *TABLES[kind]]


def check_backend(backend: str, kind: str = "lstm") -> None:
    """Raise ValueError, naming the choices, for a backend this machine cannot run for ``kind``."""
    if backend != "auto" and backend not in TABLES[kind]:
        raise ValueError(f"backend {backend!r} is not available here; available: {available(kind)}")


# Half-precision types the compiled kernel takes by computing in float32 (inputs, weights and
# masks widened, outputs narrowed back): the cell state and every sum stay in float32 within a layer.
HALF = (torch.float16, torch.bfloat16)


def map_floating(value: Any, f: Callable[[Tensor], Tensor]) -> Any:
    """``value`` with ``f`` applied to each floating tensor in it: a tensor, the data of a
    PackedSequence, the items of tuples (NamedTuples kept) and lists; anything else as it is."""
    if isinstance(value, PackedSequence):
        return value._replace(data=map_floating(value.data, f))
    if isinstance(value, Tensor):
        return f(value) if value.is_floating_point() else value
    if isinstance(value, tuple):
        items = [map_floating(item, f) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [map_floating(item, f) for item in value]
    return value


def _in_float32(layer: LayerFn) -> LayerFn:
    """A ``layer`` run in float32 on half-precision tensors (the tensors of its tuple arguments
    widened: state, weights, masks; the batch sizes' list is left alone, T items); autograd casts
    the gradients."""

    def run(x, *arguments):
        widened = (map_floating(a, Tensor.float) if isinstance(a, tuple) else a for a in arguments)
        out, final, extras = layer(x.float(), *widened)
        narrow = x.dtype
        extras = None if extras is None else tuple(t.to(narrow) for t in extras)
        return out.to(narrow), tuple(t.to(narrow) for t in final), extras

    return run


# The compiled backends: their kernels' dtypes (half types are computed in float32), whether they
# run on a device, and how their error names those devices.
COMPILED: dict[str, tuple[tuple[torch.dtype, ...], Callable[[torch.device], bool], str]] = {
    "cpu": (cpu.DTYPES, lambda device: device.type == "cpu", "on the CPU"),
    "triton": (gpu.DTYPES, gpu.runs_on, "on CUDA (on the CPU only under TRITON_INTERPRET=1)"),
}


def _fits(backend: str, like: Tensor) -> bool:
    """Whether compiled ``backend`` takes tensors like ``like``."""
    dtypes, runs_on, _ = COMPILED[backend]
    return runs_on(like.device) and like.dtype in (*dtypes, *HALF)


def kernel(backend: str, kind: str, like: Tensor, steps: int, *, compiled_step: bool = False) -> LayerFn:
    """The layer function for tensors like ``like`` over ``steps`` time steps.

    "auto" takes the compiled CPU kernel for float CPU tensors (float16 and bfloat16 computed in
    float32) when it is installed and compiled (``compilation.ready``: it compiles in the
    background meanwhile), else the hand-written PyTorch one: it was measured faster at every
    benchmark shape (BENCHMARKS.md). A single step takes it only with ``compiled_step``,
    for configurations that have one-step kernels (``kernels.cpu_step``: an LSTM without layer
    norm or projection); on the sequence kernel a step costs its set-up without a recurrence to
    repay it (LSTMCell, batch 32, H = 128: 330 µs, against 250 µs on the PyTorch one).
    """
    check_backend(backend, kind)
    if backend == "auto":
        compiled = _fits("cpu", like) and "cpu" in TABLES[kind] and (steps > 1 or compiled_step)
        ready = compiled and compilation.ready(_computed(like.dtype), _family(kind, steps))
        backend = "cpu" if ready else "torch"
    if backend in COMPILED:
        if not _fits(backend, like):
            raise ValueError(
                f"backend {backend!r} runs float16, bfloat16 (in float32), float32 and float64 tensors "
                f"{COMPILED[backend][2]}, got {like.dtype} on {like.device}; use backend='auto' or 'torch'"
            )
        if like.dtype in HALF:
            return _in_float32(TABLES[kind][backend])
    return TABLES[kind][backend]


def compiled_inference(backend: str, x: Tensor, steps: int) -> bool:
    """Whether ``backend`` runs tensors like ``x`` over ``steps`` time steps on the compiled CPU
    kernels as ``kernel`` would, so that ``lstm_inference`` or ``lstm_step_inference`` may take
    them: float32 or float64 CPU tensors (the half types go through ``kernel``'s widening); for
    "auto", once they are compiled (``compilation.ready``)."""
    if (
        backend not in ("auto", "cpu")
        or "cpu" not in LSTM_BACKENDS
        or x.dtype not in cpu.DTYPES
        or not x.is_cpu
    ):
        return False
    return backend == "cpu" or compilation.ready(x.dtype, _family("lstm", steps))


def _family(kind: str, steps: int) -> str:
    """The family of compiled kernels (``compilation.FAMILIES``) that runs ``kind`` over ``steps``."""
    return "rnn" if kind == "rnn" else "lstm" if steps > 1 else "step"


def _computed(dtype: torch.dtype) -> torch.dtype:
    """The dtype the compiled CPU kernels compute ``dtype`` in."""
    return torch.float32 if dtype in HALF else dtype


def lstm_inference(
    x: Tensor,
    state: tuple[Tensor, Tensor] | None,
    weights: Sequence[LSTMWeights],
    *,
    bidirectional: bool = False,
    options: LSTMOptions = PLAIN,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """``lstm`` over a padded batch when nothing is to be differentiated and no option draws masks
    or has a pass of its own (peepholes, layer norm; ``compiled_inference`` says which backends):
    x (T, B, I), state (h0 (L*D, B, P), c0 (L*D, B, H)) or None for zeros -> out (T, B, D*P),
    (h_n, c_n). The same numbers as ``lstm`` on the "cpu" backend, without its autograd-ready
    buffers and per-layer tensor bookkeeping: the sequence kernels on NumPy arrays
    (``cpu.lstm_inference``; a layer direction of one sequence split by cell units over two cores,
    ``cpu_split``), or for one step, without a projection, the one-step kernels
    (``cpu_step.step_inference``, layer by layer)."""
    if x.shape[0] > 1:
        return cpu.lstm_inference(
            x, state, weights, bidirectional=bidirectional, options=options, layer=cpu_split.layer_inference
        )

    zero = state is None  # then each step skips its W_hh h_0

    def layer(rows: Tensor, state_k: tuple[Tensor, ...], k: int, reverse: bool):
        hidden, cell, _ = cpu_step.step_inference(rows, None if zero else state_k, weights[k], options)
        return hidden, (hidden.clone(), cell), None  # h_n a tensor of its own, as torch's

    depth, batch = len(weights), x.shape[1]
    if zero:  # for ``stack`` to index
        sizes = (weights[0].w_hh.shape[1], weights[0].w_hh.shape[0] // 4)
        state = tuple(x.new_zeros(depth, batch, size) for size in sizes)
    out, final, _ = stack(
        layer, x.reshape(batch, x.shape[2]), state, num_layers=depth // (2 if bidirectional else 1),
        bidirectional=bidirectional,
    )  # fmt: skip
    return out.unsqueeze(0), final


def lstm_step_inference(
    x: Tensor, state: tuple[Tensor, Tensor] | None, weights: LSTMWeights, options: LSTMOptions = PLAIN
) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM step (a cell) with nothing to differentiate and no masks, without layer norm
    (``compiled_inference`` says which backends): x (B, I), state (h_0, c_0) (B, H) or None for
    zeros -> h_1, c_1 (B, H) and the gate activations (B, 4H); the numbers of ``kernel``'s
    one-step kernels (``cpu_step.step_inference``)."""
    return cpu_step.step_inference(x, state, weights, options)


def stack(
    layer: Callable[[Tensor, tuple[Tensor, ...], int, bool], tuple],
    x: Tensor,
    state: tuple[Tensor, ...],
    *,
    num_layers: int,
    bidirectional: bool,
    dropout: float = 0.0,
    training: bool = False,
) -> tuple[Tensor, tuple[Tensor, ...], list]:
    """Run ``num_layers`` layers of ``layer(x, state_k, k, reverse)`` over packed rows.

    x (N, I); each state tensor (L*D, B, .) with row k = ``layer * D + direction``, as torch's
    h0/c0. Returns out (N, D*P), the final state shaped as ``state``, and each layer call's extras.
    """
    directions = 2 if bidirectional else 1
    finals, extras = [], []
    for index in range(num_layers):
        outs = []
        for direction in range(directions):
            k = index * directions + direction
            out, final, extra = layer(x, tuple(s[k] for s in state), k, direction == 1)
            outs.append(out)
            finals.append(final)
            extras.append(extra)
        x = outs[0] if directions == 1 else torch.cat(outs, 1)
        if dropout > 0 and training and index < num_layers - 1:
            x = F.dropout(x, dropout, training=True)
    if len(finals) == 1:  # a view, not a copy (torch.stack costs 3 µs a tensor)
        return x, tuple(part.unsqueeze(0) for part in finals[0]), extras
    return x, tuple(torch.stack(parts) for parts in zip(*finals, strict=True)), extras


def bernoulli(shape: tuple[int, ...], probability: float, like: Tensor) -> Tensor:
    """0/1 draws with P(1) = probability, in ``like``'s dtype and device.

    ``kernels.masks`` hashes one seed, drawn from torch's global generator, into the whole mask:
    a seed fixes the masks, and a float32 model and its float64 twin (the tests' oracle) get the
    same ones. 0.05 ms for 3200 x 128 draws, against 1.4 ms for ``torch.rand(...) < p`` (measured).
    """
    seed = int(torch.randint(2**62, ()))
    return random_masks.bernoulli(shape, probability, seed).to(device=like.device, dtype=like.dtype)


def draw_masks(
    rows: int,
    batch: int,
    sizes: tuple[int, int],
    like: Tensor,
    *,
    zoneout: tuple[float, float],
    recurrent_dropout: float,
    training: bool,
) -> LSTMMasks:
    """The masks of one layer and direction; sizes = (H, P).

    Training: recurrent dropout keeps each unit of h_{t-1} for the whole sequence with
    probability 1 - p, scaled by 1 / (1 - p); zoneout keeps each unit's previous value at each
    step with probability z. Evaluation: no recurrent dropout; zoneout keeps the fraction z,
    its expectation.
    """
    cell_size, hidden_size = sizes
    recurrent = None
    if training and recurrent_dropout > 0:
        keep = 1 - recurrent_dropout
        recurrent = bernoulli((batch, hidden_size), keep, like) / keep
    keeps = []
    for z, size in zip(zoneout, (cell_size, hidden_size), strict=True):
        if z == 0:
            keeps.append(None)
        elif training:
            keeps.append(bernoulli((rows, size), z, like))
        else:
            keeps.append(like.new_tensor(z))
    return LSTMMasks(recurrent, *keeps)


def lstm(
    x: Tensor,
    batch_sizes: Sequence[int],
    state: tuple[Tensor, Tensor],
    weights: Sequence[LSTMWeights],
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    training: bool = False,
    backend: str = "auto",
    options: LSTMOptions = PLAIN,
    zoneout: tuple[float, float] = (0.0, 0.0),
    recurrent_dropout: float = 0.0,
    weight_dropout: float = 0.0,
) -> tuple[Tensor, tuple[Tensor, ...], list[tuple[Tensor, Tensor]]]:
    """Stacked LSTM. x (N, I), state = (h0 (L*D, B, P), c0 (L*D, B, H)), one ``LSTMWeights`` per
    layer and direction; zoneout = (z_cell, z_hidden).

    Returns out (N, D*P), (h_n, c_n), and per layer and direction (gates (N, 4H), cells (N, H)).
    """
    sizes = (state[1].shape[-1], state[0].shape[-1])
    compiled_step = weights[0].layer_norm_ih is None and weights[0].w_hr is None
    layer_fn = kernel(backend, "lstm", x, len(batch_sizes), compiled_step=compiled_step)

    def layer(x: Tensor, state_k: tuple[Tensor, ...], k: int, reverse: bool):
        w = weights[k]
        if training and weight_dropout > 0:  # DropConnect: one mask on W_hh per call
            keep = 1 - weight_dropout
            w = w._replace(w_hh=w.w_hh * (bernoulli(tuple(w.w_hh.shape), keep, w.w_hh) / keep))
        masks = NO_MASKS
        if zoneout != (0.0, 0.0) or (training and recurrent_dropout > 0):
            masks = draw_masks(
                x.shape[0],
                batch_sizes[0],
                sizes,
                x,
                zoneout=zoneout,
                recurrent_dropout=recurrent_dropout,
                training=training,
            )
        return layer_fn(x, state_k, w, batch_sizes, reverse, options, masks)

    return stack(
        layer,
        x,
        state,
        num_layers=num_layers,
        bidirectional=bidirectional,
        dropout=dropout,
        training=training,
    )


def rnn(
    x: Tensor,
    batch_sizes: Sequence[int],
    state: tuple[Tensor],
    weights: Sequence[tuple[Tensor | None, ...]],
    *,
    nonlinearity: str = "tanh",
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    training: bool = False,
    backend: str = "auto",
) -> tuple[Tensor, tuple[Tensor, ...], list[None]]:
    """Stacked plain RNN. x (N, I), state = (h0 (L*D, B, H),), weights per layer and direction
    = (w_ih, w_hh, b_ih, b_hh) -> (out (N, D*H), (h_n,), [None, ...])."""
    layer_fn = kernel(backend, "rnn", x, len(batch_sizes))

    def layer(x: Tensor, state_k: tuple[Tensor, ...], k: int, reverse: bool):
        return layer_fn(x, state_k, weights[k], batch_sizes, reverse, nonlinearity)

    return stack(
        layer,
        x,
        state,
        num_layers=num_layers,
        bidirectional=bidirectional,
        dropout=dropout,
        training=training,
    )
