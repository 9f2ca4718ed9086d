"""Every check of user input, with its message, in one place.

Rule: ``TypeError`` when a value has the wrong Python type (a list where a tensor belongs, a
tensor where a tuple (h_0, c_0) belongs, float lengths); ``ValueError`` for everything else:
wrong rank, size, dtype, device, empty input, lengths out of range. torch.nn.LSTM raises
``RuntimeError`` for some of these; lstmkit raises ``ValueError`` throughout (torch does so for a
dtype mismatch too) and keeps torch's wording where users search for it. Every check runs before
any computation.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence


def _shape(tensor: Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def config(
    owner: str,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    bias: bool,
    batch_first: bool,
    dropout: float,
    bidirectional: bool,
    proj_size: int,
) -> None:
    """Constructor arguments of the sequence modules, with torch.nn.LSTM's messages."""
    for name, value in (("bias", bias), ("batch_first", batch_first), ("bidirectional", bidirectional)):
        if not isinstance(value, bool):
            raise TypeError(f"{owner}: {name} should be of type bool, got: {type(value).__name__}")
    for name, value in (
        ("input_size", input_size),
        ("hidden_size", hidden_size),
        ("num_layers", num_layers),
        ("proj_size", proj_size),
    ):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{owner}: {name} should be of type int, got: {type(value).__name__}")
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
        if value <= 0:
            raise ValueError(f"{owner}: {name} must be greater than zero, got {value}")
    if not isinstance(dropout, numbers.Real) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
        raise ValueError(
            f"{owner}: dropout should be a number in range [0, 1] representing the probability "
            f"of an element being zeroed, got {dropout!r}"
        )
    if proj_size < 0:
        raise ValueError(
            f"{owner}: proj_size should be a positive integer or zero to disable projections, got {proj_size}"
        )
    if proj_size and proj_size >= hidden_size:
        raise ValueError(
            f"{owner}: proj_size has to be smaller than hidden_size, got proj_size={proj_size} "
            f"and hidden_size={hidden_size}"
        )


def nonlinearity(owner: str, value: str) -> None:
    if value not in ("tanh", "relu"):
        raise ValueError(f"{owner}: Unknown nonlinearity {value!r}. Select from 'tanh' or 'relu'.")


def matches_weight(owner: str, name: str, tensor: Tensor, weight: Tensor) -> None:
    """``tensor`` has the dtype and device of the module's parameters."""
    if tensor.dtype != weight.dtype:
        raise ValueError(
            f"{owner} {name} dtype ({tensor.dtype}) does not match weight dtype ({weight.dtype}). "
            f"Convert {name}: {name}.to({weight.dtype}), or convert model: model.to({tensor.dtype})"
        )
    if tensor.device != weight.device:
        raise ValueError(
            f"{owner} {name} is on device {tensor.device} but the weights are on {weight.device}. "
            f"Move one of them: {name}.to('{weight.device}') or model.to('{tensor.device}')"
        )


def tensor_input(
    owner: str, input: object, input_size: int, weight: Tensor, ranks: tuple[int, int]
) -> Tensor:
    """A non-empty input tensor of rank ranks[0] (unbatched) or ranks[1] (batched).

    Sequence modules take (T, I) or (T, B, I) / (B, T, I); cells take (I,) or (B, I).
    """
    sequence = ranks == (2, 3)
    if not isinstance(input, Tensor):
        also = " or a PackedSequence" if sequence else ""
        raise TypeError(f"{owner}: input must be a Tensor{also}, got {type(input).__name__}")
    if input.dim() not in ranks:
        unbatched = "seq, feature" if sequence else "feature"
        raise ValueError(
            f"{owner}: Expected input to be {ranks[0]}D (unbatched: {unbatched}) or {ranks[1]}D "
            f"(batched), got {input.dim()}D with shape {_shape(input)} instead"
        )
    if input.size(-1) != input_size:
        raise ValueError(
            f"{owner}: input.size(-1) must be equal to input_size. Expected {input_size}, "
            f"got {input.size(-1)} (input shape {_shape(input)})"
        )
    if input.numel() == 0:
        raise ValueError(
            f"{owner}: input of shape {_shape(input)} is empty; expected at least one "
            + ("time step and one sequence" if sequence else "sample")
        )
    matches_weight(owner, "input", input, weight)
    return input


def packed(owner: str, input: PackedSequence, input_size: int, weight: Tensor) -> list[int]:
    """A PackedSequence that torch's pack_* functions could have made; returns its batch sizes."""
    data, batch_sizes = input.data, input.batch_sizes
    if data.dim() != 2 or data.size(-1) != input_size:
        raise ValueError(
            f"{owner}: PackedSequence data must be (sum of lengths, input_size={input_size}), "
            f"got shape {_shape(data)}"
        )
    sizes = batch_sizes.tolist()
    if not sizes or data.shape[0] == 0:
        raise ValueError(f"{owner}: PackedSequence is empty; expected at least one time step")
    if min(sizes) < 1 or any(a < b for a, b in zip(sizes, sizes[1:], strict=False)):
        raise ValueError(
            f"{owner}: PackedSequence batch_sizes must be positive and non-increasing, got {sizes}"
        )
    if sum(sizes) != data.shape[0]:
        raise ValueError(
            f"{owner}: PackedSequence batch_sizes sum to {sum(sizes)} but data has {data.shape[0]} rows"
        )
    for name in ("sorted_indices", "unsorted_indices"):
        indices = getattr(input, name)
        if indices is not None and indices.numel() != sizes[0]:
            raise ValueError(
                f"{owner}: PackedSequence {name} has {indices.numel()} entries, "
                f"expected one per sequence ({sizes[0]})"
            )
    matches_weight(owner, "input", data, weight)
    return sizes


def lengths(owner: str, value: object, steps: int, batch: int) -> Tensor:
    """Per-sequence lengths of a padded batch: B integers in [1, T]; returned as a CPU int64 tensor."""
    if isinstance(value, Tensor):
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            raise TypeError(f"{owner}: lengths must be integers, got a tensor of dtype {value.dtype}")
        result = value.detach().to("cpu", torch.int64).flatten()
        if value.dim() != 1:
            raise ValueError(f"{owner}: lengths must be 1-D (one per sequence), got shape {_shape(value)}")
    elif isinstance(value, Sequence) and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value
    ):
        result = torch.tensor(list(value), dtype=torch.int64)
    else:
        raise TypeError(f"{owner}: lengths must be a 1-D integer tensor or a sequence of ints, got {value!r}")
    if result.numel() != batch:
        raise ValueError(
            f"{owner}: lengths must have one entry per sequence: expected {batch}, got {result.numel()}"
        )
    low, high = int(result.min()), int(result.max())
    if low < 1 or high > steps:
        raise ValueError(
            f"{owner}: lengths must lie in [1, {steps}] (the padded sequence length); "
            f"got min {low}, max {high}"
        )
    return result


def state(owner: str, hx: object, names: Sequence[str]) -> tuple[Tensor, ...]:
    """The structure of hx: one tensor for one state, else a tuple with one tensor per name."""
    if len(names) == 1:
        if not isinstance(hx, Tensor):
            raise TypeError(f"{owner}: hx must be a Tensor ({names[0]}), got {type(hx).__name__}")
        return (hx,)
    spelled = f"({', '.join(names)})"
    if not isinstance(hx, (tuple, list)):
        raise TypeError(
            f"{owner}: hx must be a tuple {spelled} of {len(names)} tensors, got {type(hx).__name__}"
        )
    if len(hx) != len(names):
        raise ValueError(f"{owner}: hx must be a tuple {spelled}, got {len(hx)} item(s)")
    for name, value in zip(names, hx, strict=True):
        if value is None:
            raise ValueError(f"{owner}: {name} is None; pass all of {spelled}, or hx=None for zeros")
        if not isinstance(value, Tensor):
            raise TypeError(f"{owner}: {name} must be a Tensor, got {type(value).__name__}")
    return tuple(hx)


def state_shapes(
    owner: str,
    tensors: Sequence[Tensor],
    names: Sequence[str],
    expected: Sequence[tuple[int, ...]],
    weight: Tensor,
) -> None:
    """Each state tensor has its expected shape, and the parameters' dtype and device."""
    for tensor, name, shape in zip(tensors, names, expected, strict=True):
        if _shape(tensor) != tuple(shape):
            raise ValueError(f"{owner}: Expected {name} of size {tuple(shape)}, got {_shape(tensor)}")
        matches_weight(owner, name, tensor, weight)
