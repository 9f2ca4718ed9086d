"""A backward that autograd can differentiate again, for the layer Functions whose own is not.

``lstm_function.LSTMLayer``, ``rnn_function.RNNLayer`` and ``cpu_step.StepFunction`` compute
their gradients in kernels, which autograd cannot see into. torch.nn.LSTM and its namesakes are
differentiable to any order on the CPU (a gradient penalty, MAML, Hessian-vector products), so
a backward asked to build a graph of itself (``create_graph=True``) recomputes the layer with
the reference formulas under autograd and returns autograd's gradients of that: the same
gradients to rounding, differentiable again, at the reference backend's speed for those calls
only. The references sit above this room (tests/test_layering.py); ``functional`` registers
them in ``REFERENCES``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

# "lstm" and "rnn": layer functions (x, state, weights, *arguments) -> (out, final state, extras)
REFERENCES: dict[str, Callable] = {}


def wanted() -> bool:
    """Whether the running backward must build a graph of itself: autograd runs backward
    functions in grad mode exactly when asked for ``create_graph=True``."""
    return torch.is_grad_enabled()


def gradients(
    kind: str, x: Tensor, state: Sequence[Tensor], weights: Sequence[Tensor | None], arguments: tuple,
    needs: Sequence[bool], grad_outputs: Sequence[Tensor | None],
) -> list[Tensor | None]:  # fmt: skip
    """dL/d(x, *state, *weights) through ``REFERENCES[kind](x, state, weights, *arguments)``, as
    graphs: ``needs`` says which (the Function's ``needs_input_grad`` in that order; None for the
    others), ``grad_outputs`` are dL/d(out, *final state), None where one did not reach the loss."""
    tensors = (x, *state, *weights)
    inputs = [t for t, need in zip(tensors, needs, strict=False) if need]
    with torch.enable_grad():
        out, final, _ = REFERENCES[kind](x, tuple(state), weights, *arguments)
    pairs = [(o, g) for o, g in zip((out, *final), grad_outputs, strict=True) if g is not None]
    found = torch.autograd.grad(
        [o for o, _ in pairs], inputs, [g for _, g in pairs], create_graph=True, allow_unused=True
    )
    it = iter(found)
    return [next(it) if need else None for need in needs[: len(tensors)]]
