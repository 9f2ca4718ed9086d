"""The seeds' central claim, tested: a plain RNN forgets early inputs, an LSTM keeps them.

The adding problem (Hochreiter & Schmidhuber 1997, in the form of Le et al. 2015): each step
carries a random value in [0, 1] and a marker; exactly two steps are marked, one in each half of
the sequence, and the target is the sum of the two marked values. Predicting the mean sum, 1,
has mean squared error 1/6: the trivial baseline. A model succeeds at a lag T when its test MSE
is below a tenth of that. The gradient ∂loss/∂h_t of the loss at the last step with respect to
each hidden state shows how far back the error signal reaches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .nn import LSTM, RNN, LSTMCell, RNNCell

BASELINE_MSE = 1 / 6  # always predicting 1 = E[u + v] for u, v ~ U(0, 1)
SUCCESS = 0.1  # success: test MSE below this fraction of the baseline


def adding_problem(batch: int, steps: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, T, 2): value and marker per step; y (B, 1): the sum of the two marked values."""
    values = torch.rand(batch, steps, generator=generator)
    half = max(steps // 2, 1)
    first = torch.randint(0, half, (batch,), generator=generator)
    second = torch.randint(half, steps, (batch,), generator=generator) if steps > 1 else first
    markers = torch.zeros(batch, steps)
    markers[torch.arange(batch), first] = 1
    markers[torch.arange(batch), second] = 1
    target = (values * markers).sum(1, keepdim=True)
    return torch.stack([values, markers], dim=-1), target


class Adder(nn.Module):
    """A one-layer recurrent network (plain RNN or LSTM) and a linear read-out of its last state."""

    def __init__(self, kind: str, hidden: int, backend: str = "auto") -> None:
        super().__init__()
        cls = LSTM if kind == "lstm" else RNN
        self.recurrent = cls(2, hidden, batch_first=True, backend=backend)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (prediction (B, 1), hidden states (B, T, H))."""
        hidden, _ = self.recurrent(x)
        return self.head(hidden[:, -1]), hidden


def gradient_norms(model: Adder, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """(T,) mean over the batch of ||∂loss/∂h_t||, for the loss at the last step.

    The recurrence runs step by step through a cell with the layer's weights, so that each h_t
    is a tensor of its own and its gradient includes every path through the later steps.
    """
    layer = model.recurrent
    lstm = isinstance(layer, LSTM)
    cell = (
        LSTMCell(2, layer.hidden_size)
        if lstm
        else RNNCell(2, layer.hidden_size, nonlinearity=layer.nonlinearity)
    )
    cell.load_state_dict({name.removesuffix("_l0"): value for name, value in layer.state_dict().items()})
    hidden = x.new_zeros(len(x), layer.hidden_size)
    state = (hidden, torch.zeros_like(hidden))
    states = []
    for t in range(x.shape[1]):
        if lstm:
            state = cell(x[:, t], state)
            hidden = state[0]
        else:
            hidden = cell(x[:, t], hidden)
        hidden.retain_grad()
        states.append(hidden)
    nn.functional.mse_loss(model.head(hidden), y).backward()
    return torch.stack([h.grad.norm(dim=-1).mean() for h in states]).numpy()


@dataclass
class Result:
    model: str
    lag: int
    seed: int
    test_mse: float
    success: bool
    grad_norm_init: list[float]  # ∂loss/∂h_t norms at initialisation, t = 0..T-1
    grad_norm_trained: list[float]

    def to_json(self) -> dict:
        return asdict(self)


def run(
    kind: str,
    lag: int,
    *,
    hidden: int,
    iterations: int,
    batch: int,
    lr: float,
    seed: int,
    backend: str = "auto",
) -> Result:
    """Train one model on the adding problem at one lag."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = Adder(kind, hidden, backend)
    test_x, test_y = adding_problem(1000, lag, generator)
    norms_init = gradient_norms(model, test_x[:100], test_y[:100])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(iterations):
        x, y = adding_problem(batch, lag, generator)
        loss = nn.functional.mse_loss(model(x)[0], y)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    with torch.no_grad():
        test_mse = float(nn.functional.mse_loss(model(test_x)[0], test_y))
    norms_trained = gradient_norms(model, test_x[:100], test_y[:100])
    return Result(
        kind,
        lag,
        seed,
        test_mse,
        test_mse < SUCCESS * BASELINE_MSE,
        norms_init.tolist(),
        norms_trained.tolist(),
    )
