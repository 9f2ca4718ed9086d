"""Evaluation metrics, on numpy arrays of equal shape (forecasts) or label vectors."""

from __future__ import annotations

import math

import numpy as np


def mae(actual: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(np.abs(actual - predicted)))


def rmse(actual: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.sqrt(np.mean((actual - predicted) ** 2)))


def smape(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Symmetric mean absolute percentage error, in percent (0 where both are 0)."""
    denominator = np.abs(actual) + np.abs(predicted)
    ratio = np.divide(
        2 * np.abs(actual - predicted), denominator, out=np.zeros_like(denominator), where=denominator > 0
    )
    return float(100 * np.mean(ratio))


def mase(actual: np.ndarray, predicted: np.ndarray, scale: np.ndarray) -> float:
    """Mean absolute scaled error: MAE per target (last axis) over ``scale``, the in-sample MAE of
    the seasonal-naive one-step forecast on the training span; averaged over targets."""
    per_target = np.mean(np.abs(actual - predicted).reshape(-1, actual.shape[-1]), axis=0)
    return float(np.mean(per_target / np.where(scale > 0, scale, np.nan)))


def forecast_metrics(actual: np.ndarray, predicted: np.ndarray, scale: np.ndarray) -> dict[str, float]:
    return {
        "MAE": mae(actual, predicted),
        "RMSE": rmse(actual, predicted),
        "sMAPE": smape(actual, predicted),
        "MASE": mase(actual, predicted, scale),
    }


def accuracy(actual: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(actual == predicted))


def macro_f1(actual: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    """F1 averaged over the classes present in ``actual`` or ``predicted``."""
    scores = []
    for c in range(classes):
        true_positive = np.sum((predicted == c) & (actual == c))
        predicted_c, actual_c = np.sum(predicted == c), np.sum(actual == c)
        if predicted_c + actual_c == 0:
            continue
        scores.append(2 * true_positive / (predicted_c + actual_c))
    return float(np.mean(scores))


def bits_per_character(mean_loss_nats: float) -> float:
    return mean_loss_nats / math.log(2)
