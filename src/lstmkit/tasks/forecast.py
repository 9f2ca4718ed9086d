"""Multi-step forecasting of one or more target columns from windows of past rows.

A window is ``window`` consecutive rows of the target and feature columns (scaled with the
training span's mean and standard deviation); the model predicts the next ``horizon`` values of
every target, as changes from the window's last value (``transform="delta"``, the default, which
follows a trend beyond the training range) or as levels. Splits are spans in time order:
training first, then validation, then test; a window belongs to the span that holds all its
targets, its inputs may reach back into earlier spans (they are the past).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pandas.tseries.api import guess_datetime_format
from torch import Tensor, nn

from ..data import DataError, numeric, require_columns, spans
from ..metrics import forecast_metrics
from ._base import Task


@dataclass(frozen=True)
class ForecastSpec:
    targets: list[str]
    features: list[str]
    window: int
    horizon: int
    season: int  # the seasonal-naive baseline's period (1: none)
    transform: str  # "delta" or "level"
    time_column: str | None
    mean: list[float]  # per input column (targets, then features), on the training span
    std: list[float]
    target_scale: list[float]  # per target: std of what the model predicts, on the training span
    mase_scale: list[float]  # per target: in-sample seasonal-naive MAE on the training span


@dataclass
class Windows:
    inputs: np.ndarray  # (B, W, C) raw values of the target and feature columns
    targets: np.ndarray  # (B, H, K) raw future target values
    origins: np.ndarray  # (B,) row of each window's last input


def _ordered(table: pd.DataFrame, time_column: str | None, path: Path | str) -> pd.DataFrame:
    if time_column is None:
        return table
    require_columns(table, [time_column], path)
    order = pd.to_datetime(table[time_column], errors="coerce")
    if order.isna().any():
        order = table[time_column]
    if order.duplicated().any():
        raise DataError(f"time column {time_column!r} in {str(path)!r} has duplicate values")
    return table.iloc[np.argsort(order.to_numpy(), kind="stable")].reset_index(drop=True)


def _frequency(times: pd.Series):
    """The regular frequency of timestamps, or None."""
    try:  # pandas 3: ask for the offset object that pandas 4 will return anyway
        with pd.option_context("future.infer_freq_returns_offset", True):
            return pd.infer_freq(times)
    except (KeyError, pd.errors.OptionError):  # older pandas: a string, which date_range takes too
        return pd.infer_freq(times)


class ForecastTask(Task):
    spec_class = ForecastSpec
    name = "forecast"

    def __init__(self, spec: ForecastSpec) -> None:
        super().__init__(spec)
        self.columns = spec.targets + spec.features
        self._mean = np.asarray(spec.mean)
        self._std = np.asarray(spec.std)
        self._scale = np.asarray(spec.target_scale)

    # --- building -------------------------------------------------------------------------

    @classmethod
    def prepare(
        cls,
        table: pd.DataFrame,
        path: Path | str,
        *,
        targets: list[str],
        features: list[str] = (),
        window: int = 24,
        horizon: int = 1,
        season: int = 1,
        transform: str = "delta",
        time_column: str | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
    ) -> tuple[ForecastTask, dict[str, Windows]]:
        features = list(features)
        if not targets:
            raise DataError("forecasting needs at least one --target column")
        if set(targets) & set(features):
            raise DataError(f"column(s) {sorted(set(targets) & set(features))} are both target and feature")
        if window < 1 or horizon < 1 or season < 1:
            raise DataError(f"window, horizon and season must be >= 1, got {window}, {horizon}, {season}")
        if season > window:
            raise DataError(f"season ({season}) must not exceed window ({window}): the baseline reads it")
        if transform not in ("delta", "level"):
            raise DataError(f"transform must be 'delta' or 'level', got {transform!r}")
        table = _ordered(table, time_column, path)
        values = numeric(table, list(targets) + features, path)
        rows = len(values)
        n_train, n_val, n_test = spans(rows, val_fraction, test_fraction)
        too_few = (
            n_train < window + horizon
            or (val_fraction and n_val < horizon)
            or (test_fraction and n_test < horizon)
        )
        if too_few:
            raise DataError(
                f"too few rows for window={window} and horizon={horizon}: {rows} rows split "
                f"{n_train}/{n_val}/{n_test} (train/validation/test), but training needs at least "
                f"window + horizon = {window + horizon} rows and validation and test at least horizon = "
                f"{horizon} each"
            )
        k = len(targets)
        train_values = values[:n_train]
        std = train_values.std(0)
        seasonal_error = np.abs(train_values[season:, :k] - train_values[:-season, :k]).mean(0)
        origins = np.arange(window - 1, n_train - horizon)
        future = np.stack([train_values[o + 1 : o + 1 + horizon, :k] for o in origins])  # (B, H, K)
        predicted = future - train_values[origins, None, :k] if transform == "delta" else future
        scale = predicted.reshape(-1, k).std(0)
        spec = ForecastSpec(
            targets=list(targets),
            features=features,
            window=window,
            horizon=horizon,
            season=season,
            transform=transform,
            time_column=time_column,
            mean=train_values.mean(0).tolist(),
            std=np.where(std > 0, std, 1.0).tolist(),
            target_scale=np.where(scale > 0, scale, 1.0).tolist(),
            mase_scale=seasonal_error.tolist(),
        )
        task = cls(spec)
        bounds = {
            "train": (window - 1, n_train - horizon - 1),
            "val": (n_train - 1, n_train + n_val - horizon - 1),
            "test": (n_train + n_val - 1, rows - horizon - 1),
        }
        splits = {
            name: task._windows(values, first, last)
            for name, (first, last) in bounds.items()
            if last >= first
        }
        return task, splits

    def model_sizes(self) -> tuple[int, int]:
        return len(self.columns), self.spec.horizon * len(self.spec.targets)

    # --- data --------------------------------------------------------------------------

    def _values(self, table: pd.DataFrame, path: Path | str) -> np.ndarray:
        return numeric(_ordered(table, self.spec.time_column, path), self.columns, path)

    def _windows(self, values: np.ndarray, first: int, last: int) -> Windows:
        w, h, k = self.spec.window, self.spec.horizon, len(self.spec.targets)
        origins = np.arange(first, last + 1)
        inputs = np.stack([values[o - w + 1 : o + 1] for o in origins])
        targets = np.stack([values[o + 1 : o + 1 + h, :k] for o in origins])
        return Windows(inputs, targets, origins)

    def windows(self, table: pd.DataFrame, path: Path | str) -> Windows:
        """Every window of a table whose targets it holds (for evaluation on another file)."""
        values = self._values(table, path)
        w, h = self.spec.window, self.spec.horizon
        if len(values) < w + h:
            raise DataError(
                f"too few rows in {str(path)!r} for window={w} and horizon={h}: need at least {w + h}, "
                f"got {len(values)}"
            )
        return self._windows(values, w - 1, len(values) - h - 1)

    def encode(self, inputs: np.ndarray) -> Tensor:
        return torch.as_tensor((inputs - self._mean) / self._std, dtype=torch.float32)

    def tensors(self, windows: Windows) -> tuple[Tensor, Tensor]:
        """Scaled (inputs (B, W, C), targets (B, H*K)) for training."""
        k = len(self.spec.targets)
        predicted = windows.targets
        if self.spec.transform == "delta":
            predicted = predicted - windows.inputs[:, -1:, :k]
        else:
            predicted = predicted - self._mean[:k]
        scaled = predicted / self._scale
        return self.encode(windows.inputs), torch.as_tensor(
            scaled.reshape(len(scaled), -1), dtype=torch.float32
        )

    def decode(self, output: Tensor, inputs: np.ndarray) -> np.ndarray:
        """Model output (B, H*K) -> forecasts (B, H, K) in the data's units."""
        k = len(self.spec.targets)
        values = output.detach().double().numpy().reshape(len(output), self.spec.horizon, k) * self._scale
        return values + (inputs[:, -1:, :k] if self.spec.transform == "delta" else self._mean[:k])

    # --- the model ------------------------------------------------------------------------

    def loss(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
        return nn.functional.mse_loss(model(inputs), targets)

    @torch.no_grad()
    def predict(self, model: nn.Module, windows: Windows) -> np.ndarray:
        model.eval()
        return self.decode(model(self.encode(windows.inputs)), windows.inputs)

    def baselines(self, windows: Windows) -> dict[str, np.ndarray]:
        """The naive forecasts: the last value, and the value one season before each target."""
        k, h, m = len(self.spec.targets), self.spec.horizon, self.spec.season
        last = np.repeat(windows.inputs[:, -1:, :k], h, axis=1)
        result = {"last value": last}
        if m > 1:
            steps = np.arange(1, h + 1)
            back = self.spec.window - 1 + steps - m * np.ceil(steps / m).astype(int)  # index in the window
            result["seasonal naive"] = windows.inputs[:, back, :k]
        return result

    def evaluate(self, model: nn.Module, windows: Windows) -> dict[str, dict[str, float]]:
        """Metrics of the model and of each baseline, in the data's units, over all windows and steps."""
        scale = np.asarray(self.spec.mase_scale)
        forecasts = {"lstmkit": self.predict(model, windows), **self.baselines(windows)}
        return {name: forecast_metrics(windows.targets, values, scale) for name, values in forecasts.items()}

    def forecast(self, model: nn.Module, table: pd.DataFrame, path: Path | str) -> pd.DataFrame:
        """The next ``horizon`` values of every target after the table's last row."""
        values = self._values(table, path)
        if len(values) < self.spec.window:
            raise DataError(
                f"forecasting needs the last window={self.spec.window} rows; {str(path)!r} has {len(values)}"
            )
        windows = Windows(values[None, -self.spec.window :], np.zeros((1, 0, 0)), np.array([len(values) - 1]))
        predicted = self.predict(model, windows)[0]  # (H, K)
        frame = pd.DataFrame(predicted, columns=self.spec.targets)
        frame.insert(0, "step", np.arange(1, self.spec.horizon + 1))
        future = self._future_times(table)
        if future is not None:
            frame.insert(1, self.spec.time_column, future)
        return frame

    def _future_times(self, table: pd.DataFrame) -> list[str] | None:
        """The timestamps after the last row, when the time column has a regular frequency."""
        if self.spec.time_column is None:
            return None
        times = pd.to_datetime(table[self.spec.time_column], errors="coerce").sort_values()
        if times.isna().any() or len(times) < 3:
            return None
        frequency = _frequency(times.iloc[-min(len(times), 24) :])
        if frequency is None:
            return None
        future = pd.date_range(times.iloc[-1], periods=self.spec.horizon + 1, freq=frequency)[1:]
        # written as the column writes its times ("1965-01" stays monthly), where it is text that
        # pandas can read a format from; else ISO 8601
        last = table[self.spec.time_column].loc[times.index[-1]]
        with warnings.catch_warnings():  # pandas warns of day-first readings; the check below decides
            warnings.simplefilter("ignore")
            form = guess_datetime_format(last) if isinstance(last, str) else None
        if form is not None and times.iloc[-1].strftime(form) == last:
            return [t.strftime(form) for t in future]
        return [t.date().isoformat() if t == t.normalize() else t.isoformat() for t in future]

    def explain_input(
        self, table: pd.DataFrame, path: Path | str, index: int | None
    ) -> tuple[Tensor, list[str]]:
        """One window (1, W, C) ending at row ``index`` (default: the last), and its step labels."""
        values = self._values(table, path)
        end = len(values) - 1 if index is None else index
        if not self.spec.window - 1 <= end < len(values):
            raise DataError(f"--row must lie in [{self.spec.window - 1}, {len(values) - 1}], got {end}")
        labels = [str(t) for t in range(end - self.spec.window + 1, end + 1)]
        return self.encode(values[None, end - self.spec.window + 1 : end + 1]), labels
