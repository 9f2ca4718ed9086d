"""Figures for reports: matplotlib, the non-interactive Agg backend, never plt.show().

Each function returns a Figure; ``save`` writes it atomically as PNG and closes it.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .files import atomic_write  # noqa: E402


def save(figure: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    atomic_write(path, buffer.getvalue())


def loss_curves(history: list[dict]) -> Figure:
    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    epochs = [r["epoch"] for r in history]
    axis.plot(epochs, [r["train_loss"] for r in history], label="training")
    if all("val_loss" in r for r in history):
        axis.plot(epochs, [r["val_loss"] for r in history], label="validation")
    axis.set(xlabel="epoch", ylabel="loss", yscale="log", title="Loss per epoch")
    axis.legend()
    axis.grid(alpha=0.3)
    return figure


def forecast_vs_actual(
    times: list, actual: np.ndarray, forecasts: dict[str, np.ndarray], title: str, ylabel: str
) -> Figure:
    """actual (N,) and each forecast (N,) at the same N times."""
    figure, axis = plt.subplots(figsize=(8, 3.8))
    axis.plot(times, actual, color="black", linewidth=2, label="actual")
    for name, values in forecasts.items():
        axis.plot(times, values, linewidth=1.2, label=name)
    axis.set(title=title, ylabel=ylabel)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    if len(times) > 12:
        axis.set_xticks(times[:: max(1, len(times) // 8)])
    figure.autofmt_xdate()
    return figure


def gate_heatmaps(panels: dict[str, np.ndarray], step_labels: list[str], title: str) -> Figure:
    """One heatmap per panel, each (T, H): time on x, units on y."""
    figure, axes = plt.subplots(
        len(panels), 1, figsize=(min(16, 3 + 0.25 * len(step_labels)), 1.9 * len(panels))
    )
    for axis, (name, values) in zip(np.atleast_1d(axes), panels.items(), strict=True):
        bounded = name != "cell state"
        image = axis.imshow(
            values.T,
            aspect="auto",
            interpolation="nearest",
            cmap="viridis" if bounded else "coolwarm",
            vmin=(-1 if name == "candidate" else 0) if bounded else -np.abs(values).max(),
            vmax=1 if bounded else np.abs(values).max(),
        )
        axis.set_ylabel(f"{name}\nunit")
        figure.colorbar(image, ax=axis, fraction=0.02, pad=0.01)
        if len(step_labels) <= 60:
            axis.set_xticks(range(len(step_labels)), step_labels, fontsize=7)
    np.atleast_1d(axes)[-1].set_xlabel("step")
    figure.suptitle(title)
    return figure


def lines(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, xlabel: str, ylabel: str, log: bool
) -> Figure:
    """One line per curve, each (x, y)."""
    figure, axis = plt.subplots(figsize=(6.4, 3.8))
    for name, (x, y) in curves.items():
        axis.plot(x, y, marker="o" if len(x) < 12 else None, label=name)
    axis.set(title=title, xlabel=xlabel, ylabel=ylabel, yscale="log" if log else "linear")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return figure
