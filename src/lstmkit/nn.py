"""The modules: LSTM, RNN, LSTMCell, RNNCell, drop-ins for their torch.nn namesakes.

Same constructor, call, shapes, parameter names, gate order and initialisation as torch.nn, so
``state_dict`` moves both ways. The modules check arguments, convert tensors and PackedSequences
to the packed-row layout of ``lstmkit.kernels``, and dispatch to ``lstmkit.functional``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import _checks, functional

__all__ = ["LSTM", "RNN", "LSTMCell", "RNNCell"]


class _TorchLike(nn.Module):
    """A module whose state_dict is its torch namesake's: initialisation and conversions."""

    _torch_class: ClassVar[type[nn.Module]]
    _torch_arguments: ClassVar[tuple[str, ...]]  # the constructor arguments both classes share

    @classmethod
    def from_torch(cls, module: nn.Module, *, backend: str = "auto") -> Any:
        """A copy of ``module`` (a ``torch.nn`` namesake) with its weights, device, dtype and mode."""
        if not isinstance(module, cls._torch_class):
            raise TypeError(
                f"{cls.__name__}.from_torch expects a torch.nn.{cls._torch_class.__name__}, "
                f"got {type(module).__name__}"
            )
        weight = module.weight_ih_l0 if hasattr(module, "weight_ih_l0") else module.weight_ih
        kwargs = {name: getattr(module, name) for name in cls._torch_arguments}
        new = cls(**kwargs, device=weight.device, dtype=weight.dtype, backend=backend)
        new.load_state_dict(module.state_dict())
        return new.train(module.training)

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as torch.nn."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def to_torch(self) -> nn.Module:
        """The ``torch.nn`` namesake with this module's weights, device, dtype and mode."""
        weight = next(self.parameters())
        kwargs = {name: getattr(self, name) for name in self._torch_arguments}
        module = self._torch_class(**kwargs, device=weight.device, dtype=weight.dtype)
        module.load_state_dict(self.state_dict())
        return module.train(self.training)


class _Recurrent(_TorchLike):
    """What LSTM and RNN share: torch's parameters, argument checks, input and output layouts."""

    _state_names: ClassVar[tuple[str, ...]]
    _gates: ClassVar[int]

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
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        _checks.config(
            owner, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size
        )
        functional.resolve_backend(backend)
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

        factory = {"device": device, "dtype": dtype}
        directions = 2 if bidirectional else 1
        out_size = proj_size or hidden_size
        gate_size = self._gates * hidden_size
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        # torch's registration order, so that reset_parameters draws the same numbers as torch
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else out_size * directions
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                shapes = {"weight_ih": (gate_size, layer_input), "weight_hh": (gate_size, out_size)}
                if bias:
                    shapes |= {"bias_ih": (gate_size,), "bias_hh": (gate_size,)}
                if proj_size:
                    shapes["weight_hr"] = (proj_size, hidden_size)
                names = [name + suffix for name in shapes]
                for name, shape in zip(names, shapes.values(), strict=True):
                    self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    def flatten_parameters(self) -> None:
        """No-op kept for drop-in use: lstmkit's kernels need no flat weight buffer."""

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def _layer_weights(self) -> list[tuple[Tensor | None, ...]]:
        """Per layer and direction, (w_ih, w_hh, b_ih, b_hh[, w_hr]) with None where absent."""
        keys = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"] + (["weight_hr"] if self._gates == 4 else [])
        weights = []
        for layer in range(self.num_layers):
            for direction in range(2 if self.bidirectional else 1):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                weights.append(tuple(getattr(self, key + suffix, None) for key in keys))
        return weights

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
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s

    def _kernel(self, x, batch_sizes, state) -> tuple[Tensor, tuple[Tensor, ...]]:
        raise NotImplementedError

    def _run(
        self, input: Tensor | PackedSequence, hx: object, lengths: object
    ) -> tuple[Tensor | PackedSequence, tuple[Tensor, ...]]:
        owner = type(self).__name__
        weight = self.weight_ih_l0
        state = None if hx is None else _checks.state(owner, hx, self._state_names)
        sorted_indices = unsorted_indices = None
        batched, steps = True, 0
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
        out, final = self._kernel(rows, batch_sizes, state)
        if unsorted_indices is not None:
            final = tuple(s.index_select(1, unsorted_indices) for s in final)

        if isinstance(input, PackedSequence):
            return PackedSequence(out, input.batch_sizes, sorted_indices, unsorted_indices), final
        if lengths is not None:
            packed_out = PackedSequence(out, packed.batch_sizes, sorted_indices, unsorted_indices)
            output = pad_packed_sequence(packed_out, total_length=steps)[0]
        else:
            output = out.view(steps, -1, out.shape[-1])
        if not batched:
            return output.squeeze(1), tuple(s.squeeze(1) for s in final)
        return (output.transpose(0, 1) if self.batch_first else output), final

    def _initial_state(
        self, state: tuple[Tensor, ...] | None, batch: int, batched: bool, like: Tensor
    ) -> tuple[Tensor, ...]:
        """(h0[, c0]) as (L*D, B, .) tensors: checked when given, zeros when not."""
        depth = self.num_layers * (2 if self.bidirectional else 1)
        sizes = self._state_sizes()
        if state is None:
            return tuple(like.new_zeros(depth, batch, size) for size in sizes)
        expected = [(depth, batch, size) if batched else (depth, size) for size in sizes]
        _checks.state_shapes(type(self).__name__, state, self._state_names, expected, self.weight_ih_l0)
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
        backend: keyword-only; ``"auto"`` (the fastest correct one), ``"torch"`` (hand-written
            backpropagation through time in PyTorch ops) or ``"reference"`` (the textbook cell
            of ``lstmkit.reference`` under plain autograd).

    Inputs: ``input, (h_0, c_0)``, and keyword-only ``lengths``:
        - input: (T, B, I), (B, T, I) if ``batch_first``, (T, I) unbatched, or a
          ``PackedSequence``.
        - h_0: (D*L, B, P), c_0: (D*L, B, H); 2-D without B for unbatched input. Zeros if omitted.
        - lengths: optional, B ints in [1, T] for a padded batched input: steps past a
          sequence's length are padding (output zeros there; h_n, c_n at the true end; the
          reverse direction starts at the true end), as if packed.

    Outputs: ``output, (h_n, c_n)``:
        - output: (T, B, D*P) ((B, T, D*P) if ``batch_first``; a ``PackedSequence`` for packed input).
        - h_n: (D*L, B, P), c_n: (D*L, B, H): the final states, layer-major, forward first.

    Attributes: ``weight_ih_l{k}`` (4H, I for k = 0 else D*P), ``weight_hh_l{k}`` (4H, P),
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H), ``weight_hr_l{k}`` (P, H) with proj_size, and the
    same with suffix ``_reverse``; gates stacked as (i, f, g, o).

    Example (the seed's)::

        >>> import torch, lstmkit
        >>> rnn = lstmkit.LSTM(5, 6, 2)
        >>> input, h0, c0 = torch.randn(1, 3, 5), torch.randn(2, 3, 6), torch.randn(2, 3, 6)
        >>> output, (hn, cn) = rnn(input, (h0, c0))
        >>> output.shape, hn.shape, cn.shape
        (torch.Size([1, 3, 6]), torch.Size([2, 3, 6]), torch.Size([2, 3, 6]))
    """

    __doc__ += _SHAPES_DOC
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
    _gates = 4

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
        backend: str = "auto",
    ) -> None:
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
        )

    def _kernel(self, x, batch_sizes, state):
        return functional.lstm(
            x,
            batch_sizes,
            state,
            self._layer_weights(),
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            dropout=self.dropout,
            training=self.training,
            backend=self.backend,
        )

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: tuple[Tensor, Tensor] | None = None,
        *,
        lengths: Tensor | Sequence[int] | None = None,
    ) -> tuple[Tensor | PackedSequence, tuple[Tensor, Tensor]]:
        """``output, (h_n, c_n) = lstm(input, (h_0, c_0))``; shapes in the class docstring."""
        output, (hidden, cell) = self._run(input, hx, lengths)
        return output, (hidden, cell)


class RNN(_Recurrent):
    """Multi-layer Elman RNN (SPEC.md §2), a drop-in for ``torch.nn.RNN``.

    For each layer, direction and step: ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``,
    or ReLU in place of tanh with ``nonlinearity="relu"``.

    Args, inputs and ``lengths`` as ``LSTM`` without ``proj_size`` and c; ``nonlinearity`` is the
    fourth positional argument, as in torch. Outputs: ``output`` (T, B, D*H), ``h_n`` (D*L, B, H).
    Attributes: ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``
    (H rows each) and their ``_reverse`` twins.

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
    _gates = 1

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
        )

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (f", nonlinearity={self.nonlinearity}" if self.nonlinearity != "tanh" else "")

    def _kernel(self, x, batch_sizes, state):
        return functional.rnn(
            x,
            batch_sizes,
            state,
            self._layer_weights(),
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
        output, (hidden,) = self._run(input, hx, lengths)
        return output, hidden


class _Cell(_TorchLike):
    """What LSTMCell and RNNCell share: torch's parameters and one step of the layer kernel."""

    _state_names: ClassVar[tuple[str, ...]]
    _gates: ClassVar[int]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
        backend: str,
    ) -> None:
        super().__init__()
        _checks.config(type(self).__name__, input_size, hidden_size, 1, bias, False, 0.0, False, 0)
        functional.resolve_backend(backend)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.backend = backend
        factory = {"device": device, "dtype": dtype}
        gate_size = self._gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gate_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(gate_size, hidden_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(gate_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(gate_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s

    def _layer(self) -> functional.LayerFn:
        raise NotImplementedError

    def _weights(self) -> tuple[Tensor | None, ...]:
        return (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)

    def _step(self, input: Tensor, hx: object) -> tuple[Tensor, ...]:
        owner = type(self).__name__
        x = _checks.tensor_input(owner, input, self.input_size, self.weight_ih, (1, 2))
        batched = x.dim() == 2
        if not batched:
            x = x.unsqueeze(0)
        batch = x.shape[0]
        if hx is None:
            state = tuple(x.new_zeros(batch, self.hidden_size) for _ in self._state_names)
        else:
            state = _checks.state(owner, hx, self._state_names)
            expected = [(batch, self.hidden_size) if batched else (self.hidden_size,)] * len(state)
            _checks.state_shapes(owner, state, self._state_names, expected, self.weight_ih)
            if not batched:
                state = tuple(s.unsqueeze(0) for s in state)
        _, final = self._layer()(x, state, self._weights(), [batch], False)
        return final if batched else tuple(s.squeeze(0) for s in final)


class LSTMCell(_Cell):
    """One LSTM step (SPEC.md §1), a drop-in for ``torch.nn.LSTMCell``.

    ``h_1, c_1 = cell(input, (h_0, c_0))`` with input (B, I) or (I,), states (B, H) or (H,),
    zeros if hx is omitted. Attributes ``weight_ih`` (4H, I), ``weight_hh`` (4H, H), ``bias_ih``,
    ``bias_hh`` (4H), gates stacked (i, f, g, o). ``backend`` as ``LSTM``.

    Example::

        >>> import torch, lstmkit
        >>> cell = lstmkit.LSTMCell(10, 20)
        >>> h, c = cell(torch.randn(3, 10))
        >>> h.shape, c.shape
        (torch.Size([3, 20]), torch.Size([3, 20]))
    """

    _torch_class = nn.LSTMCell
    _torch_arguments = ("input_size", "hidden_size", "bias")
    _state_names = ("h_0", "c_0")
    _gates = 4

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__(input_size, hidden_size, bias, device, dtype, backend)

    def _layer(self) -> functional.LayerFn:
        return functional.LSTM_BACKENDS[functional.resolve_backend(self.backend)]

    def _weights(self) -> tuple[Tensor | None, ...]:
        return (*super()._weights(), None)  # an LSTMCell has no projection

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """``(h_1, c_1) = cell(input, (h_0, c_0))``; shapes in the class docstring."""
        hidden, cell = self._step(input, hx)
        return hidden, cell


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
    _gates = 1

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
        super().__init__(input_size, hidden_size, bias, device, dtype, backend)

    def _layer(self) -> functional.LayerFn:
        layer = functional.RNN_BACKENDS[functional.resolve_backend(self.backend)]
        return partial(layer, nonlinearity=self.nonlinearity)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        """``h_1 = cell(input, h_0)``; shapes in the class docstring."""
        (hidden,) = self._step(input, hx)
        return hidden
