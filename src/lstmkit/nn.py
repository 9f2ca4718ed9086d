"""The modules: LSTM, RNN, LSTMCell, RNNCell, drop-ins for their torch.nn namesakes.

Same constructor, call, shapes, parameter names, gate order and initialisation as torch.nn, so
``state_dict`` moves both ways. LSTM and LSTMCell add keyword-only variant options
(docs/variants.md). The modules check arguments, convert tensors and PackedSequences to the
packed-row layout of ``lstmkit.kernels``, and dispatch to ``lstmkit.functional``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import _checks, functional
from ._variants import PARAMETER_STEMS, Variants
from .kernels.contract import LSTMMasks, LSTMWeights

__all__ = ["LSTM", "RNN", "LSTMCell", "RNNCell", "LSTMGates"]


class LSTMGates(NamedTuple):
    """Every gate activation and cell state, returned by ``return_gates=True``.

    From ``LSTM``: each (L*D, T, B, H), row ``layer * D + direction`` as h_n; (L*D, B, T, H) with
    ``batch_first``, (L*D, T, H) unbatched; zeros at the padding of variable-length input. From
    ``LSTMCell``: each (B, H), or (H,) unbatched. ``cell`` is the carried cell state C_t (after
    zoneout, if any); with every variant off, C_t = f * C_{t-1} + i * C̃ and h_t = o * tanh(C_t).
    """

    input_gate: Tensor
    forget_gate: Tensor
    candidate: Tensor
    output_gate: Tensor
    cell: Tensor


def _gates(gates: Tensor, cells: Tensor) -> LSTMGates:
    """Split (..., 4H) activations (i, f, g, o) and add the cells."""
    return LSTMGates(*gates.chunk(4, -1), cells)


_VARIANTS_DOC = """
    Variant options (keyword-only; defaults = the plain LSTM; docs/variants.md has the details).
    Per layer, direction and step, with an option that is off leaving its term out::

        h̃_{t-1} = m ⊙ h_{t-1}                      m ~ Bernoulli(1-p)/(1-p) per sequence  recurrent_dropout=p
        W̃_hh = M ⊙ W_hh                            M ~ Bernoulli(1-q)/(1-q) per call      weight_dropout=q
        a = LN_ih(W_ih x_t) + b_ih + LN_hh(W̃_hh h̃_{t-1}) + b_hh                       layer_norm
        a_i += p_i ⊙ c_{t-1};  a_f += p_f ⊙ c_{t-1}                                      peephole
        f = σ(clip(a_f));  i = σ(clip(a_i)), or 1 - f                                     coupled_input_forget
        g = tanh(clip(a_g));  c' = f ⊙ c_{t-1} + i ⊙ g
        a_o += p_o ⊙ c';  o = σ(clip(a_o))           clip(a) = min(max(a, -κ), κ)         cell_clip=κ
        h' = W_hr (o ⊙ tanh(LN_c(c')))               LN_c(c) = γ_c ⊙ normalise(c) + β_c   layer_norm
        c_t = k_c ⊙ c_{t-1} + (1 - k_c) ⊙ c';  h_t = k_h ⊙ h_{t-1} + (1 - k_h) ⊙ h'      zoneout=(z_c, z_h)

    LN_ih(z) = γ_ih ⊙ normalise(z), LN_hh likewise, over all 4H; normalise(z) = (z - mean z) /
    sqrt(var z + 1e-5). Zoneout's k ~ Bernoulli(z) per step and unit in training, k = z in
    evaluation; the dropouts are off in evaluation. ``forget_bias`` adds to ``bias_ih[H:2H]`` at
    initialisation. Added parameters: ``peephole_{i,f,o}``, ``layer_norm_ih``, ``layer_norm_hh``,
    ``layer_norm_cell_weight``, ``layer_norm_cell_bias`` (with LSTM's ``_l{k}[_reverse]`` suffix).
"""


# one C call without arguments: asking per device type (a device object, a string) took 10-13 µs
# of an LSTMCell's 77 µs after other work; torch builds without it ask per device type only
_ANY_AUTOCAST = getattr(torch._C, "_is_any_autocast_enabled", None)


class _TorchLike(nn.Module):
    """A module whose state_dict is its torch namesake's: initialisation, conversions, autocast."""

    _torch_class: ClassVar[type[nn.Module]]
    _torch_arguments: ClassVar[tuple[str, ...]]  # the constructor arguments both classes share
    # under autocast, torch.nn.LSTMCell answers in its input's dtype, the others in autocast's
    _autocast_keeps_input_dtype: ClassVar[bool] = False
    variants: Variants = Variants()

    def _autocast(self, input: Any, hx: Any, **kwargs: Any) -> Any:
        """``forward``'s result under ``torch.autocast`` on the input's device type with float32
        weights, else None. The kernels take one dtype for inputs, weights and products, which
        autocast's per-operation casts would break, so the module runs in float32 with autocast
        off (float16 and bfloat16 inputs widened) and answers in the dtype its torch.nn namesake
        gives under autocast: autocast's, or for LSTMCell the input's."""
        if _ANY_AUTOCAST is not None and not _ANY_AUTOCAST():
            return None
        tensor = input.data if isinstance(input, PackedSequence) else input
        if not isinstance(tensor, Tensor):
            return None
        device = tensor.device.type
        try:
            enabled = torch.is_autocast_enabled(device)
        except RuntimeError:  # a device type autocast does not know
            return None
        weight = next(self.parameters(), None)
        if not enabled or weight is None or weight.dtype != torch.float32:
            return None
        dtype = tensor.dtype if self._autocast_keeps_input_dtype else torch.get_autocast_dtype(device)

        def widened(t: Tensor) -> Tensor:
            return t.float() if t.dtype in functional.HALF else t

        with torch.autocast(device, enabled=False):
            result = self.forward(
                functional.map_floating(input, widened), functional.map_floating(hx, widened), **kwargs
            )
        return functional.map_floating(result, lambda t: t.to(dtype) if t.dtype == torch.float32 else t)

    @classmethod
    def from_torch(cls, module: nn.Module, *, backend: str = "auto", **options: Any) -> Any:
        """A copy of ``module`` (a ``torch.nn`` namesake) with its weights, device, dtype and mode.

        ``options`` are variant options for the copy; the parameters they add start as a new
        module's would.
        """
        if not isinstance(module, cls._torch_class):
            raise TypeError(
                f"{cls.__name__}.from_torch expects a torch.nn.{cls._torch_class.__name__}, "
                f"got {type(module).__name__}"
            )
        weight = module.weight_ih_l0 if hasattr(module, "weight_ih_l0") else module.weight_ih
        kwargs = {name: getattr(module, name) for name in cls._torch_arguments}
        new = cls(**kwargs, device=weight.device, dtype=weight.dtype, backend=backend, **options)
        state = new.state_dict()
        state.update(module.state_dict())
        new.load_state_dict(state)
        return new.train(module.training)

    def to_torch(self) -> nn.Module:
        """The ``torch.nn`` namesake with this module's weights, device, dtype and mode."""
        missing = self.variants.non_torch()
        if missing:
            raise ValueError(
                f"{type(self).__name__}.to_torch: torch.nn.{self._torch_class.__name__} has no "
                f"{', '.join(missing)}; only a plain configuration converts"
            )
        weight = next(self.parameters())
        kwargs = {name: getattr(self, name) for name in self._torch_arguments}
        module = self._torch_class(**kwargs, device=weight.device, dtype=weight.dtype)
        module.load_state_dict(self.state_dict())
        return module.train(self.training)

    def _suffixes(self) -> tuple[str, ...]:
        return ("",)

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as torch.nn, drawn in
        torch's order; then the variant options' initial values (docs/variants.md)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)
        for suffix in self._suffixes():
            self.variants.reset(self, suffix, self.hidden_size)

    def _register(self, stems: dict[str, tuple[int, ...]], suffix: str, factory: dict) -> list[str]:
        names = []
        for stem, shape in stems.items():
            self.register_parameter(stem + suffix, nn.Parameter(torch.empty(shape, **factory)))
            names.append(stem + suffix)
        self.__dict__.setdefault("_registered", set()).update(names)  # for ``_weights``
        return names

    def _weights(self, suffix: str, fields: Sequence[str]) -> tuple[Tensor | None, ...]:
        """The parameters behind ``fields``, None where an option has none. Read from the
        parameter dict: ``getattr`` goes through Module.__getattr__ and, for the options' absent
        parameters, an AttributeError each (about 20 µs a call for an LSTMCell). A weight may also
        be a property of the module's class (torch.nn.utils.parametrize), a buffer, or a plain
        tensor attribute (AWD-LSTM's weight drop deletes the parameter and sets one), for names
        the module registered: the absent options' names are not looked up further (those
        lookups took 3.5 of the 5.4 µs that a plain LSTM layer's weights took)."""
        parameters, buffers, attributes, cls = self._parameters, self._buffers, self.__dict__, type(self)
        registered = attributes.get("_registered")  # None in a module pickled before it existed
        weights = []
        for name in _parameter_names(suffix, tuple(fields)):
            value = parameters.get(name)
            if (
                value is None
                and (registered is None or name in registered)
                and (name in buffers or name in attributes or hasattr(cls, name))
            ):
                value = getattr(self, name)
            weights.append(value)
        return tuple(weights)


def _differentiable(*groups: Sequence[Tensor | None]) -> bool:
    """Whether autograd would record a call on the tensors of ``groups`` (grad mode on, one
    requires grad); the groups are not looked into in no_grad mode."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for g in groups for t in g)


@functools.cache
def _layer_suffixes(num_layers: int, directions: int) -> tuple[str, ...]:
    """``_Recurrent._suffixes``, made once per shape (the strings cost 3-5 µs of a short call)."""
    return tuple(
        f"_l{k // directions}" + ("_reverse" if k % directions else "")
        for k in range(num_layers * directions)
    )


@functools.cache
def _parameter_names(suffix: str, fields: tuple[str, ...]) -> tuple[str, ...]:
    """The parameter name of each kernel field for one layer and direction (a string built per
    field and call cost 1.5 µs of a short call)."""
    return tuple(PARAMETER_STEMS[field] + suffix for field in fields)


class _Recurrent(_TorchLike):
    """What LSTM and RNN share: torch's parameters, argument checks, input and output layouts."""

    _state_names: ClassVar[tuple[str, ...]]
    _gate_count: ClassVar[int]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        bias: bool,
        batch_first: bool,
        dropout: float,
        bidirectional: bool,
        proj_size: int,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
        backend: str,
        variants: Variants,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        _checks.config(
            owner, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size
        )
        functional.check_backend(backend, "lstm" if self._gate_count == 4 else "rnn")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
                f"num_layers={num_layers}",
                stacklevel=3,
            )
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.backend = backend
        self.variants = variants

        factory = {"device": device, "dtype": dtype}
        out_size = proj_size or hidden_size
        gate_size = self._gate_count * hidden_size
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        # torch's registration order, so that reset_parameters draws the same numbers as torch;
        # the variants' parameters come after all of torch's
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else out_size * self._directions
            for suffix in self._suffixes()[layer * self._directions : (layer + 1) * self._directions]:
                stems = {"weight_ih": (gate_size, layer_input), "weight_hh": (gate_size, out_size)}
                if bias:
                    stems |= {"bias_ih": (gate_size,), "bias_hh": (gate_size,)}
                if proj_size:
                    stems["weight_hr"] = (proj_size, hidden_size)
                names = self._register(stems, suffix, factory)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        for suffix in self._suffixes():
            self._register(variants.parameter_shapes(hidden_size), suffix, factory)
        self.reset_parameters()

    @property
    def _directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _suffixes(self) -> tuple[str, ...]:
        """Parameter-name suffix of each layer and direction, in h_n's row order."""
        return _layer_suffixes(self.num_layers, self._directions)

    def flatten_parameters(self) -> None:
        """No-op kept for drop-in use: lstmkit's kernels need no flat weight buffer."""

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def _state_sizes(self) -> tuple[int, ...]:
        """Feature size of each state tensor: h (P) for RNN, h (P) and c (H) for LSTM."""
        return (self.proj_size or self.hidden_size, self.hidden_size)[: len(self._state_names)]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        for name, default in (
            ("bias", True),
            ("batch_first", False),
            ("dropout", 0.0),
            ("bidirectional", False),
        ):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        for item in self.variants.repr_items():
            s += f", {item}"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s

    def _kernel(self, x: Tensor, batch_sizes: list[int], state: tuple[Tensor, ...]) -> tuple:
        raise NotImplementedError

    def _run(
        self, input: Tensor | PackedSequence, hx: object, lengths: object, return_gates: bool = False
    ) -> tuple[Tensor | PackedSequence, tuple[Tensor, ...], LSTMGates | None]:
        owner = type(self).__name__
        # the weight inputs must match, from the parameter dict: ``self.weight_ih_l0`` goes through
        # Module.__getattr__, 12 µs of a short call after other work has run (measured)
        weight = self._weights("_l0", ("w_ih",))[0]
        state = None if hx is None else _checks.state(owner, hx, self._state_names)
        sorted_indices = unsorted_indices = None
        batched, steps, padded_input = True, 0, False
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError(f"{owner}: lengths= is for padded tensors; a PackedSequence carries its own")
            batch_sizes = _checks.packed(owner, input, self.input_size, weight)
            rows, sorted_indices, unsorted_indices = input.data, input.sorted_indices, input.unsorted_indices
        else:
            x = _checks.tensor_input(owner, input, self.input_size, weight, (2, 3))
            batched = x.dim() == 3
            if not batched:
                if lengths is not None:
                    raise ValueError(f"{owner}: lengths= needs a batched 3-D input, got a 2-D input")
                x = x.unsqueeze(1)
            elif self.batch_first:
                x = x.transpose(0, 1)
            steps, batch = x.shape[:2]  # x is (T, B, I) from here
            if lengths is None:
                padded_input = True
                weights = None if return_gates else self._inference_weights(x, state)
                if weights is not None:
                    if state is not None:
                        state = self._initial_state(state, batch, batched, x)
                    output, final = functional.lstm_inference(
                        x, state, weights, bidirectional=self.bidirectional, options=self.variants.options()
                    )
                    if not batched:
                        return output.squeeze(1), tuple(s.squeeze(1) for s in final), None
                    return (output.transpose(0, 1) if self.batch_first else output), final, None
                batch_sizes = [batch] * steps
                rows = x.reshape(steps * batch, self.input_size)
            else:
                lengths = _checks.lengths(owner, lengths, steps, batch)
                packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
                batch_sizes = packed.batch_sizes.tolist()
                rows, sorted_indices, unsorted_indices = (
                    packed.data,
                    packed.sorted_indices,
                    packed.unsorted_indices,
                )

        state = self._initial_state(state, batch_sizes[0], batched, rows)
        if sorted_indices is not None:
            state = tuple(s.index_select(1, sorted_indices) for s in state)
        out, final, extras = self._kernel(rows, batch_sizes, state)
        if unsorted_indices is not None:
            final = tuple(s.index_select(1, unsorted_indices) for s in final)

        def time_major(rows: Tensor) -> Tensor:
            """Packed rows -> (T, B, F) in the caller's batch order, zeros at padding."""
            if padded_input:
                return rows.view(steps, -1, rows.shape[-1])
            sizes = torch.tensor(batch_sizes)
            packed_rows = PackedSequence(rows, sizes, sorted_indices, unsorted_indices)
            return pad_packed_sequence(packed_rows, total_length=steps or None)[0]

        def caller_layout(tensor: Tensor, time_dim: int) -> Tensor:
            if not batched:
                return tensor.squeeze(time_dim + 1)
            return tensor.transpose(time_dim, time_dim + 1) if self.batch_first else tensor

        gates = None
        if return_gates:
            parts = [_gates(time_major(g), time_major(c)) for g, c in extras]
            gates = LSTMGates(*(caller_layout(torch.stack(p), 1) for p in zip(*parts, strict=True)))
        if isinstance(input, PackedSequence):
            output = PackedSequence(out, input.batch_sizes, sorted_indices, unsorted_indices)
        else:
            output = caller_layout(time_major(out), 0)
        if not batched:
            final = tuple(s.squeeze(1) for s in final)
        return output, final, gates

    def _inference_weights(self, x: Tensor, state: tuple[Tensor, ...] | None) -> list | None:
        """The weights for ``functional.lstm_inference``, where a forward over the padded batch
        ``x`` (T, B, I) can take it; else None (the general path)."""
        return None

    def _initial_state(
        self, state: tuple[Tensor, ...] | None, batch: int, batched: bool, like: Tensor
    ) -> tuple[Tensor, ...]:
        """(h0[, c0]) as (L*D, B, .) tensors: checked when given (the dtype and device of ``like``,
        the input rows, already checked against the parameters'), zeros when not."""
        depth = self.num_layers * self._directions
        sizes = self._state_sizes()
        if state is None:
            return tuple(like.new_zeros(depth, batch, size) for size in sizes)
        expected = [(depth, batch, size) if batched else (depth, size) for size in sizes]
        _checks.state_shapes(type(self).__name__, state, self._state_names, expected, like)
        return state if batched else tuple(s.unsqueeze(1) for s in state)


_SHAPES_DOC = """
    Shapes: T = sequence length, B = batch size, I = ``input_size``, H = ``hidden_size``,
    P = ``proj_size`` if > 0 else H, D = 2 if ``bidirectional`` else 1, L = ``num_layers``.
"""


class LSTM(_Recurrent):
    """Multi-layer LSTM (SPEC.md §1, §3), a drop-in for ``torch.nn.LSTM``.

    For each layer, direction and step::

        i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)      input gate
        f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)      forget gate
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)   candidate C̃_t
        o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)      output gate
        c_t = f_t * c_{t-1} + i_t * g_t                     cell state
        h_t = o_t * tanh(c_t)                               hidden state (times W_hr if proj_size)

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
        proj_size, device, dtype: as ``torch.nn.LSTM``; ``dropout`` acts on the outputs of
        every layer but the last, in training only.
        backend: keyword-only; ``"auto"`` (the fastest correct one), ``"cpu"`` (the compiled
            kernel, floating-point CPU tensors; float16 and bfloat16 computed in float32),
            ``"torch"`` (hand-written backpropagation through time in PyTorch ops) or
            ``"reference"`` (the step-by-step formulas of ``lstmkit.reference_variants`` under
            plain autograd).

    Inputs: ``input, (h_0, c_0)``, and keyword-only ``lengths`` and ``return_gates``:
        - input: (T, B, I), (B, T, I) if ``batch_first``, (T, I) unbatched, or a
          ``PackedSequence``.
        - h_0: (D*L, B, P), c_0: (D*L, B, H); 2-D without B for unbatched input. Zeros if omitted.
        - lengths: optional, B ints in [1, T] for a padded batched input: steps past a
          sequence's length are padding (output zeros there; h_n, c_n at the true end; the
          reverse direction starts at the true end), as if packed.
        - return_gates: also return an ``LSTMGates`` of every gate and cell state.

    Outputs: ``output, (h_n, c_n)`` (and ``gates`` with ``return_gates=True``):
        - output: (T, B, D*P) ((B, T, D*P) if ``batch_first``; a ``PackedSequence`` for packed input).
        - h_n: (D*L, B, P), c_n: (D*L, B, H): the final states, layer-major, forward first.

    Attributes: ``weight_ih_l{k}`` (4H, I for k = 0 else D*P), ``weight_hh_l{k}`` (4H, P),
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H), ``weight_hr_l{k}`` (P, H) with proj_size, and the
    same with suffix ``_reverse``; gates stacked as (i, f, g, o). ``variants`` holds the options.

    Example (the seed's)::

        >>> import torch, lstmkit
        >>> rnn = lstmkit.LSTM(5, 6, 2)
        >>> input, h0, c0 = torch.randn(1, 3, 5), torch.randn(2, 3, 6), torch.randn(2, 3, 6)
        >>> output, (hn, cn) = rnn(input, (h0, c0))
        >>> output.shape, hn.shape, cn.shape
        (torch.Size([1, 3, 6]), torch.Size([2, 3, 6]), torch.Size([2, 3, 6]))
    """

    __doc__ += _VARIANTS_DOC + _SHAPES_DOC
    _torch_class = nn.LSTM
    _torch_arguments = (
        "input_size",
        "hidden_size",
        "num_layers",
        "bias",
        "batch_first",
        "dropout",
        "bidirectional",
        "proj_size",
    )
    _state_names = ("h_0", "c_0")
    _gate_count = 4

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        forget_bias: float = 0.0,
        layer_norm: bool = False,
        peephole: bool = False,
        coupled_input_forget: bool = False,
        cell_clip: float | None = None,
        zoneout: float | tuple[float, float] = 0.0,
        recurrent_dropout: float = 0.0,
        weight_dropout: float = 0.0,
        backend: str = "auto",
    ) -> None:
        variants = Variants.checked(
            type(self).__name__,
            bias,
            forget_bias=forget_bias,
            layer_norm=layer_norm,
            peephole=peephole,
            coupled_input_forget=coupled_input_forget,
            cell_clip=cell_clip,
            zoneout=zoneout,
            recurrent_dropout=recurrent_dropout,
            weight_dropout=weight_dropout,
        )
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            device,
            dtype,
            backend,
            variants,
        )

    def _kernel(self, x, batch_sizes, state):
        v = self.variants
        return functional.lstm(
            x,
            batch_sizes,
            state,
            [LSTMWeights(*self._weights(s, LSTMWeights._fields)) for s in self._suffixes()],
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            dropout=self.dropout,
            training=self.training,
            backend=self.backend,
            options=v.options(),
            zoneout=v.zoneout,
            recurrent_dropout=v.recurrent_dropout,
            weight_dropout=v.weight_dropout,
        )

    def _inference_weights(self, x: Tensor, state: tuple[Tensor, ...] | None) -> list[LSTMWeights] | None:
        """Inference on the compiled kernel from end to end (``functional.lstm_inference``): no
        option that draws masks or needs a pass of its own in the call, nothing to differentiate."""
        v = self.variants
        if (
            v.layer_norm
            or v.peephole
            or v.zoneout != (0.0, 0.0)
            or (
                self.training
                and (
                    (self.dropout > 0 and self.num_layers > 1)
                    or v.recurrent_dropout > 0
                    or v.weight_dropout > 0
                )
            )
            or (x.shape[0] == 1 and self.proj_size > 0)  # one step: the one-step kernels have none
            or not functional.compiled_inference(self.backend, x, x.shape[0])
        ):
            return None
        weights = [LSTMWeights(*self._weights(s, LSTMWeights._fields)) for s in self._suffixes()]
        return None if _differentiable((x,), state or (), *weights) else weights

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: tuple[Tensor, Tensor] | None = None,
        *,
        lengths: Tensor | Sequence[int] | None = None,
        return_gates: bool = False,
    ) -> tuple:
        """``output, (h_n, c_n) = lstm(input, (h_0, c_0))``; shapes in the class docstring."""
        casted = self._autocast(input, hx, lengths=lengths, return_gates=return_gates)
        if casted is not None:
            return casted
        output, (hidden, cell), gates = self._run(input, hx, lengths, return_gates)
        if return_gates:
            return output, (hidden, cell), gates
        return output, (hidden, cell)


class RNN(_Recurrent):
    """Multi-layer Elman RNN (SPEC.md §2), a drop-in for ``torch.nn.RNN``.

    For each layer, direction and step: ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``,
    or ReLU in place of tanh with ``nonlinearity="relu"``.

    Args, inputs and ``lengths`` as ``LSTM`` without ``proj_size``, c and the variant options;
    ``nonlinearity`` is the fourth positional argument, as in torch. Outputs: ``output``
    (T, B, D*H), ``h_n`` (D*L, B, H). Attributes: ``weight_ih_l{k}``, ``weight_hh_l{k}``,
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (H rows each) and their ``_reverse`` twins.

    Example::

        >>> import torch, lstmkit
        >>> rnn = lstmkit.RNN(10, 20, 2)
        >>> output, hn = rnn(torch.randn(5, 3, 10), torch.randn(2, 3, 20))
        >>> output.shape, hn.shape
        (torch.Size([5, 3, 20]), torch.Size([2, 3, 20]))
    """

    __doc__ += _SHAPES_DOC
    _torch_class = nn.RNN
    _torch_arguments = (
        "input_size",
        "hidden_size",
        "num_layers",
        "nonlinearity",
        "bias",
        "batch_first",
        "dropout",
        "bidirectional",
    )
    _state_names = ("h_0",)
    _gate_count = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        backend: str = "auto",
    ) -> None:
        _checks.nonlinearity(type(self).__name__, nonlinearity)
        self.nonlinearity = nonlinearity
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            0,
            device,
            dtype,
            backend,
            Variants(),
        )

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (f", nonlinearity={self.nonlinearity}" if self.nonlinearity != "tanh" else "")

    def _kernel(self, x, batch_sizes, state):
        return functional.rnn(
            x,
            batch_sizes,
            state,
            [self._weights(s, ("w_ih", "w_hh", "b_ih", "b_hh")) for s in self._suffixes()],
            nonlinearity=self.nonlinearity,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            dropout=self.dropout,
            training=self.training,
            backend=self.backend,
        )

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: Tensor | None = None,
        *,
        lengths: Tensor | Sequence[int] | None = None,
    ) -> tuple[Tensor | PackedSequence, Tensor]:
        """``output, h_n = rnn(input, h_0)``; shapes in the class docstring."""
        casted = self._autocast(input, hx, lengths=lengths)
        if casted is not None:
            return casted
        output, (hidden,), _ = self._run(input, hx, lengths)
        return output, hidden


class _Cell(_TorchLike):
    """What LSTMCell and RNNCell share: torch's parameters and input checks."""

    _state_names: ClassVar[tuple[str, ...]]
    _gate_count: ClassVar[int]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
        backend: str,
        variants: Variants,
    ) -> None:
        super().__init__()
        _checks.config(type(self).__name__, input_size, hidden_size, 1, bias, False, 0.0, False, 0)
        functional.check_backend(backend, "lstm" if self._gate_count == 4 else "rnn")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.backend = backend
        self.variants = variants
        factory = {"device": device, "dtype": dtype}
        gate_size = self._gate_count * hidden_size
        stems = {"weight_ih": (gate_size, input_size), "weight_hh": (gate_size, hidden_size)}
        self._register(stems, "", factory)
        if bias:
            self._register({"bias_ih": (gate_size,), "bias_hh": (gate_size,)}, "", factory)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self._register(variants.parameter_shapes(hidden_size), "", factory)
        self.reset_parameters()

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        for item in self.variants.repr_items():
            s += f", {item}"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s

    def _prepare(
        self, input: Tensor, hx: object, weight: Tensor
    ) -> tuple[Tensor, tuple[Tensor, ...] | None, bool]:
        """Checked (x (B, I), state tensors (B, H) or None for zeros, batched) for one step;
        ``weight``, W_ih, gives the dtype and device they must have (the caller has it from the
        parameter dict, see ``_Recurrent._run``)."""
        owner = type(self).__name__
        x = _checks.tensor_input(owner, input, self.input_size, weight, (1, 2))
        batched = x.dim() == 2
        if not batched:
            x = x.unsqueeze(0)
        batch = x.shape[0]
        if hx is None:
            return x, None, batched
        state = _checks.state(owner, hx, self._state_names)
        expected = [(batch, self.hidden_size) if batched else (self.hidden_size,)] * len(state)
        _checks.state_shapes(owner, state, self._state_names, expected, weight)
        return x, state if batched else tuple(s.unsqueeze(0) for s in state), batched

    def _zeros(self, x: Tensor) -> tuple[Tensor, ...]:
        """The zero state (B, H) tensors for input x (B, I)."""
        return tuple(x.new_zeros(x.shape[0], self.hidden_size) for _ in self._state_names)


class LSTMCell(_Cell):
    """One LSTM step (SPEC.md §1), a drop-in for ``torch.nn.LSTMCell``.

    ``h_1, c_1 = cell(input, (h_0, c_0))`` with input (B, I) or (I,), states (B, H) or (H,),
    zeros if hx is omitted; ``(h_1, c_1), gates = cell(input, hx, return_gates=True)`` also
    gives an ``LSTMGates``. Attributes ``weight_ih`` (4H, I), ``weight_hh`` (4H, H), ``bias_ih``,
    ``bias_hh`` (4H), gates stacked (i, f, g, o). ``backend`` and the variant options as
    ``LSTM``. A cell sees one step, so in training it keeps its recurrent-dropout and
    weight-dropout masks from call to call, as Keras does: call ``reset_dropout_masks()`` when a
    new sequence starts. Zoneout draws a fresh mask every call (every step).

    Example::

        >>> import torch, lstmkit
        >>> cell = lstmkit.LSTMCell(10, 20)
        >>> h, c = cell(torch.randn(3, 10))
        >>> h.shape, c.shape
        (torch.Size([3, 20]), torch.Size([3, 20]))
    """

    __doc__ += _VARIANTS_DOC
    _torch_class = nn.LSTMCell
    _autocast_keeps_input_dtype = True
    _torch_arguments = ("input_size", "hidden_size", "bias")
    _state_names = ("h_0", "c_0")
    _gate_count = 4

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        forget_bias: float = 0.0,
        layer_norm: bool = False,
        peephole: bool = False,
        coupled_input_forget: bool = False,
        cell_clip: float | None = None,
        zoneout: float | tuple[float, float] = 0.0,
        recurrent_dropout: float = 0.0,
        weight_dropout: float = 0.0,
        backend: str = "auto",
    ) -> None:
        variants = Variants.checked(
            type(self).__name__,
            bias,
            forget_bias=forget_bias,
            layer_norm=layer_norm,
            peephole=peephole,
            coupled_input_forget=coupled_input_forget,
            cell_clip=cell_clip,
            zoneout=zoneout,
            recurrent_dropout=recurrent_dropout,
            weight_dropout=weight_dropout,
        )
        super().__init__(input_size, hidden_size, bias, device, dtype, backend, variants)
        self.reset_dropout_masks()

    def reset_dropout_masks(self) -> None:
        """Forget the recurrent-dropout and weight-dropout masks: the next training call draws new ones."""
        self._recurrent_mask: Tensor | None = None
        self._weight_mask: Tensor | None = None

    def _sequence_masks(self, batch: int) -> tuple[Tensor | None, Tensor | None]:
        """The current sequence's (recurrent (B, H), W_hh multiplier (4H, H)) masks, in training."""
        v = self.variants
        if not self.training:
            return None, None
        if v.recurrent_dropout and (self._recurrent_mask is None or self._recurrent_mask.shape[0] != batch):
            keep = 1 - v.recurrent_dropout
            self._recurrent_mask = (
                functional.bernoulli((batch, self.hidden_size), keep, self.weight_hh) / keep
            )
        if v.weight_dropout and self._weight_mask is None:
            keep = 1 - v.weight_dropout
            self._weight_mask = functional.bernoulli(tuple(self.weight_hh.shape), keep, self.weight_hh) / keep
        return self._recurrent_mask, self._weight_mask

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None, *, return_gates: bool = False
    ) -> tuple:
        """``(h_1, c_1) = cell(input, (h_0, c_0))``; shapes in the class docstring."""
        casted = self._autocast(input, hx, return_gates=return_gates)
        if casted is not None:
            return casted
        weights = LSTMWeights(*self._weights("", LSTMWeights._fields))
        x, state, batched = self._prepare(input, hx, weights.w_ih)
        v = self.variants
        recurrent, weight_mask = self._sequence_masks(x.shape[0])
        if (
            recurrent is None
            and weight_mask is None
            and v.zoneout == (0.0, 0.0)
            and not v.layer_norm
            and functional.compiled_inference(self.backend, x, 1)
            and not _differentiable((x,), state or (), weights)
        ):  # the one-step kernels without the autograd-ready path
            hidden, cell, gates = functional.lstm_step_inference(x, state, weights, v.options())
            cells = cell
        else:
            hidden, cell, gates, cells = self._step(x, state, weights, recurrent, weight_mask)
        if not batched:
            hidden, cell, gates, cells = (t.squeeze(0) for t in (hidden, cell, gates, cells))
        if return_gates:
            return (hidden, cell), _gates(gates, cells)
        return hidden, cell

    def _step(
        self, x: Tensor, state: tuple[Tensor, ...] | None, weights: LSTMWeights, recurrent: Tensor | None,
        weight_mask: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
        """The general step through ``functional.kernel``: (h_1, c_1, gates, cells)."""
        v = self.variants
        state = self._zeros(x) if state is None else state
        if weight_mask is not None:
            weights = weights._replace(w_hh=weights.w_hh * weight_mask)
        masks = LSTMMasks(recurrent)
        if v.zoneout != (0.0, 0.0):
            zoneout = functional.draw_masks(
                x.shape[0],
                x.shape[0],
                (self.hidden_size, self.hidden_size),
                x,
                zoneout=v.zoneout,
                recurrent_dropout=0.0,
                training=self.training,
            )
            masks = zoneout._replace(recurrent=recurrent)
        kernel = functional.kernel(self.backend, "lstm", x, steps=1, compiled_step=not v.layer_norm)
        _, (hidden, cell), (gates, cells) = kernel(x, state, weights, [x.shape[0]], False, v.options(), masks)
        return hidden, cell, gates, cells


class RNNCell(_Cell):
    """One Elman RNN step (SPEC.md §2), a drop-in for ``torch.nn.RNNCell``.

    ``h_1 = cell(input, h_0)``, h_1 = tanh(W_ih x + b_ih + W_hh h_0 + b_hh) (ReLU with
    ``nonlinearity="relu"``); input (B, I) or (I,), h_0 (B, H) or (H,), zeros if omitted.

    Example::

        >>> import torch, lstmkit
        >>> lstmkit.RNNCell(10, 20)(torch.randn(3, 10)).shape
        torch.Size([3, 20])
    """

    _torch_class = nn.RNNCell
    _torch_arguments = ("input_size", "hidden_size", "bias", "nonlinearity")
    _state_names = ("h_0",)
    _gate_count = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        backend: str = "auto",
    ) -> None:
        _checks.nonlinearity(type(self).__name__, nonlinearity)
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, device, dtype, backend, Variants())

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        """``h_1 = cell(input, h_0)``; shapes in the class docstring."""
        casted = self._autocast(input, hx)
        if casted is not None:
            return casted
        weights = self._weights("", ("w_ih", "w_hh", "b_ih", "b_hh"))
        x, state, batched = self._prepare(input, hx, weights[0])
        kernel = functional.kernel(self.backend, "rnn", x, steps=1)
        _, (hidden,), _ = kernel(
            x, self._zeros(x) if state is None else state, weights, [x.shape[0]], False, self.nonlinearity
        )
        return hidden if batched else hidden.squeeze(0)
