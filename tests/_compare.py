"""Run an lstmkit module and its torch.nn namesake on the same data and compare everything.

Everything = outputs, final states, and the gradients of the input, the initial states and
every parameter under one random cotangent per output (the oracle is torch.nn itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

TOLERANCE = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.float64: {"rtol": 1e-10, "atol": 1e-10}}


@dataclass(frozen=True)
class Case:
    """One call of a sequence module: its configuration and the shape of its input."""

    kind: str = "LSTM"  # "LSTM" or "RNN"
    input_size: int = 3
    hidden_size: int = 4
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    bidirectional: bool = False
    proj_size: int = 0
    nonlinearity: str = "tanh"
    steps: int = 4
    batch: int = 3
    batched: bool = True
    with_state: bool = True
    lengths: tuple[int, ...] | None = None  # packed input with these (unsorted) lengths
    dtype: torch.dtype = torch.float64

    def torch_module(self) -> nn.Module:
        common = dict(
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            bias=self.bias,
            batch_first=self.batch_first,
            bidirectional=self.bidirectional,
            dtype=self.dtype,
        )
        if self.kind == "LSTM":
            return nn.LSTM(**common, proj_size=self.proj_size)
        return nn.RNN(**common, nonlinearity=self.nonlinearity)

    def state_shapes(self) -> list[tuple[int, ...]]:
        depth = self.num_layers * (2 if self.bidirectional else 1)
        batch = (self.batch,) if self.batched else ()
        sizes = [self.proj_size or self.hidden_size]
        if self.kind == "LSTM":
            sizes.append(self.hidden_size)
        return [(depth, *batch, size) for size in sizes]

    def input_shape(self) -> tuple[int, ...]:
        if not self.batched:
            return (self.steps, self.input_size)
        if self.batch_first or self.lengths is not None:
            return (self.batch, self.steps, self.input_size)
        return (self.steps, self.batch, self.input_size)


def _call(module: nn.Module, case: Case, x: torch.Tensor, state: list[torch.Tensor]):
    """Forward through module; returns (output as a padded tensor, list of final states)."""
    if case.lengths is not None:
        x = pack_padded_sequence(x, torch.tensor(case.lengths), batch_first=True, enforce_sorted=False)
    hx = None
    if case.with_state:
        hx = tuple(state) if case.kind == "LSTM" else state[0]
    output, final = module(x, hx)
    if isinstance(output, PackedSequence):
        output = pad_packed_sequence(output, batch_first=True, total_length=case.steps)[0]
    return output, list(final) if isinstance(final, tuple) else [final]


def compare(case: Case, lstmkit_module: nn.Module, torch_module: nn.Module, seed: int = 0) -> None:
    """Assert equal outputs, states and gradients of the two modules on random data."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(case.input_shape(), generator=gen, dtype=case.dtype)
    states = [torch.randn(s, generator=gen, dtype=case.dtype) for s in case.state_shapes()]
    results = []
    for module in (lstmkit_module, torch_module):
        leaves = [t.clone().requires_grad_() for t in [x, *states]]
        module.zero_grad()
        output, final = _call(module, case, leaves[0], leaves[1:])
        results.append((output, final, leaves, module))
    (out_a, fin_a, leaves_a, mod_a), (out_b, fin_b, leaves_b, mod_b) = results
    tol = TOLERANCE[case.dtype]
    torch.testing.assert_close(out_a, out_b, **tol)
    for a, b in zip(fin_a, fin_b, strict=True):
        torch.testing.assert_close(a, b, **tol)

    cotangents = [torch.randn(t.shape, generator=gen, dtype=case.dtype) for t in [out_b, *fin_b]]
    for out, fin in ((out_a, fin_a), (out_b, fin_b)):
        sum((t * c).sum() for t, c in zip([out, *fin], cotangents, strict=True)).backward()
    for a, b in zip(leaves_a, leaves_b, strict=True):
        torch.testing.assert_close(a.grad, b.grad, **tol)
    params_b = dict(mod_b.named_parameters())
    for name, param in mod_a.named_parameters():
        torch.testing.assert_close(param.grad, params_b[name].grad, **tol, msg=lambda m, n=name: f"{n}: {m}")
