"""Train lstmkit.LSTM on a small synthetic task and print the loss falling.

Task: read 40 steps of a noisy sum of two sine waves and predict the next value. A two-layer
LSTM with a linear head learns it in a few hundred Adam steps on a CPU (about 20 s on 2 cores).
The last line compares the test error with the naive forecast "next value = last value".
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

import lstmkit

WINDOW, HIDDEN, STEPS, BATCH = 40, 32, 300, 64


def make_windows(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """count windows (WINDOW, count, 1) of a random-phase two-tone signal, and the next values."""
    t = torch.arange(WINDOW + 1, dtype=torch.float32).unsqueeze(1)  # (W+1, 1)
    phase = torch.rand(count, generator=generator) * 2 * math.pi
    signal = torch.sin(0.3 * t + phase) + 0.5 * torch.sin(0.05 * t + 2 * phase)  # (W+1, count)
    signal = signal + 0.05 * torch.randn(signal.shape, generator=generator)
    return signal[:-1].unsqueeze(-1), signal[-1].unsqueeze(-1)


class Forecaster(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = lstmkit.LSTM(1, HIDDEN, num_layers=2)
        self.head = nn.Linear(HIDDEN, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, _ = self.lstm(x)  # (T, B, H)
        return self.head(output[-1])  # (B, 1): the next value


def main() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = Forecaster()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    test_x, test_y = make_windows(512, generator)
    start = time.perf_counter()
    for step in range(1, STEPS + 1):
        x, y = make_windows(BATCH, generator)
        loss = nn.functional.mse_loss(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 25 == 0 or step == 1:
            print(f"step {step:4d}  train MSE {loss.item():.4f}", flush=True)
    with torch.no_grad():
        test = nn.functional.mse_loss(model(test_x), test_y).item()
    naive = nn.functional.mse_loss(test_x[-1], test_y).item()
    print(
        f"test MSE {test:.4f} vs naive last-value forecast {naive:.4f} ({time.perf_counter() - start:.0f} s)"
    )


if __name__ == "__main__":
    main()
