"""The tasks' data handling and the metrics, against values worked out by hand."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from lstmkit import metrics
from lstmkit.data import DataError
from lstmkit.models import ModelConfig, SequenceModel
from lstmkit.tasks import ClassifyTask, ForecastTask, LanguageTask


def test_forecast_metrics_by_hand():
    actual = np.array([[[1.0], [2.0]], [[3.0], [4.0]]])  # (B=2, H=2, K=1)
    predicted = np.array([[[2.0], [2.0]], [[3.0], [2.0]]])
    assert metrics.mae(actual, predicted) == pytest.approx(0.75)
    assert metrics.rmse(actual, predicted) == pytest.approx(math.sqrt(5 / 4))
    assert metrics.smape(actual, predicted) == pytest.approx(100 * (2 / 3 + 0 + 0 + 2 * 2 / 6) / 4)
    assert metrics.mase(actual, predicted, np.array([0.5])) == pytest.approx(1.5)


def test_classification_metrics_by_hand():
    actual, predicted = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1])
    assert metrics.accuracy(actual, predicted) == 0.5
    # F1: class 0: 2*1/(1+2) = 2/3; class 1: 2*1/(3+1) = 1/2; class 2: 0
    assert metrics.macro_f1(actual, predicted, 3) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert metrics.bits_per_character(math.log(2)) == pytest.approx(1.0)


def _ramp(rows=40, season=4):
    """y = t + (t mod season), and a feature x = 2t."""
    t = np.arange(rows, dtype=float)
    return pd.DataFrame({"y": t + t % season, "x": 2 * t})


@pytest.mark.parametrize("transform", ["delta", "level"])
def test_forecast_windows_splits_and_scaling(transform):
    table = _ramp()
    task, splits = ForecastTask.prepare(
        table, "ramp", targets=["y"], features=["x"], window=6, horizon=3, season=4, transform=transform,
        val_fraction=0.25, test_fraction=0.25,
    )  # fmt: skip
    y = table["y"].to_numpy()
    n_train, n_val = 20, 10
    for name, windows in splits.items():
        for b, origin in enumerate(windows.origins):
            np.testing.assert_array_equal(windows.inputs[b, :, 0], y[origin - 5 : origin + 1])
            np.testing.assert_array_equal(windows.inputs[b, :, 1], 2 * np.arange(origin - 5, origin + 1))
            np.testing.assert_array_equal(windows.targets[b, :, 0], y[origin + 1 : origin + 4])
        first_target, last_target = windows.origins[0] + 1, windows.origins[-1] + 3
        span = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, 40)}[name]
        assert span[0] <= first_target and last_target < span[1]
        assert first_target == max(span[0], 6) and last_target == span[1] - 1  # every possible window
    # the model's targets decode back to the data
    inputs, targets = task.tensors(splits["train"])
    assert inputs.shape == (len(splits["train"].origins), 6, 2) and targets.shape == (
        len(splits["train"].origins),
        3,
    )
    np.testing.assert_allclose(
        task.decode(targets, splits["train"].inputs), splits["train"].targets, atol=1e-5
    )
    train_rows = table.to_numpy()[:n_train]  # scaled with the training span's statistics
    expected = (splits["train"].inputs - train_rows.mean(0)) / train_rows.std(0)
    np.testing.assert_allclose(inputs.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_forecast_baselines_read_the_right_rows():
    table = _ramp()
    task, splits = ForecastTask.prepare(table, "ramp", targets=["y"], window=8, horizon=6, season=4)
    y = table["y"].to_numpy()
    windows = splits["test"]
    base = task.baselines(windows)
    for b, origin in enumerate(windows.origins):
        np.testing.assert_array_equal(base["last value"][b, :, 0], np.full(6, y[origin]))
        expected = [y[origin + h - 4 * math.ceil(h / 4)] for h in range(1, 7)]
        np.testing.assert_array_equal(base["seasonal naive"][b, :, 0], expected)
    # MASE's scale: the in-sample seasonal-naive MAE on the training span (here every difference is 4)
    assert task.spec.mase_scale == [4.0]


def test_forecast_argument_errors():
    with pytest.raises(DataError, match=r"season \(12\) must not exceed window \(6\)"):
        ForecastTask.prepare(_ramp(), "ramp", targets=["y"], window=6, season=12)
    with pytest.raises(DataError, match=r"column\(s\) \['y'\] are both target and feature"):
        ForecastTask.prepare(_ramp(), "ramp", targets=["y"], features=["y"])
    with pytest.raises(DataError, match=r"time column 't' in 'ramp' has duplicate values"):
        ForecastTask.prepare(_ramp().assign(t=1), "ramp", targets=["y"], time_column="t")


def test_forecast_orders_rows_by_the_time_column():
    table = _ramp().assign(t=pd.date_range("2001-01-01", periods=40, freq="D").strftime("%Y-%m-%d"))
    shuffled = table.sample(frac=1, random_state=0)
    _, a = ForecastTask.prepare(table, "t", targets=["y"], window=4, time_column="t")
    _, b = ForecastTask.prepare(shuffled, "t", targets=["y"], window=4, time_column="t")
    np.testing.assert_array_equal(a["test"].targets, b["test"].targets)


@pytest.mark.parametrize(
    "times, expected",
    [
        (pd.date_range("2001-01", periods=40, freq="MS").strftime("%Y-%m"), ["2004-05", "2004-06"]),
        (
            pd.date_range("2001-01-01", periods=40, freq="h").strftime("%Y-%m-%d %H:%M"),
            ["2001-01-02 16:00", "2001-01-02 17:00"],
        ),
        # not text (as Parquet stores times): ISO 8601, the date alone at midnight
        (pd.date_range("2001-01-01", periods=40, freq="D"), ["2001-02-10", "2001-02-11"]),
    ],
    ids=["months", "hours", "datetimes"],
)
def test_forecast_future_times_are_written_as_the_column_writes_them(times, expected):
    table = _ramp().assign(t=times)
    task, _ = ForecastTask.prepare(table, "t", targets=["y"], window=4, horizon=2, time_column="t")
    assert task._future_times(table.sample(frac=1, random_state=0)) == expected  # any row order


def test_classify_reads_rows_as_sequences():
    table = pd.DataFrame(np.arange(24).reshape(4, 6), columns=[f"c{i}" for i in range(6)]).assign(
        label=["a", "b", "a", "b"]
    )
    task, splits = ClassifyTask.prepare(
        table, "t", targets=["label"], steps=3, val_fraction=0.25, test_fraction=0.25
    )
    inputs, labels = task.tensors(splits["train"])
    assert inputs.shape == (2, 3, 2)  # 6 columns as 3 steps of 2
    raw = inputs * task.spec.std + task.spec.mean
    torch.testing.assert_close(raw[1], torch.tensor([[6.0, 7.0], [8.0, 9.0], [10.0, 11.0]]))
    assert task.spec.labels == ["a", "b"] and labels.tolist() == [0, 1]
    with pytest.raises(DataError, match=r"the 6 feature columns do not split into steps=4 equal steps"):
        ClassifyTask.prepare(table, "t", targets=["label"], steps=4)
    with pytest.raises(DataError, match=r"label 'c' in the test rows of 't' was never seen in training"):
        ClassifyTask.prepare(
            table.assign(label=["a", "b", "a", "c"]),
            "t",
            targets=["label"],
            val_fraction=0.25,
            test_fraction=0.25,
        )


def test_language_chunks_and_vocabulary():
    text = "abcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabd"
    task, splits = LanguageTask.prepare(text, window=5, val_fraction=0.2, test_fraction=0.2)
    assert task.spec.vocabulary == "abcd"
    inputs, targets = task.tensors(splits["train"])
    assert inputs.shape[1] == 5
    torch.testing.assert_close(inputs[:, 1:], targets[:, :-1])  # shifted by one character
    decoded = "".join(task.spec.vocabulary[i] for i in inputs[0].tolist())
    assert decoded == text[:5]
    with pytest.raises(DataError, match=r"character\(s\) 'xz' never appear in the training text"):
        task.encode("abzx")
    torch.manual_seed(0)
    model = SequenceModel(ModelConfig("language-model", 4, 4, hidden_size=8, num_layers=1, embedding_size=4))
    first = task.generate(model, "ab", 20, seed=5)
    assert first == task.generate(model, "ab", 20, seed=5) and first.startswith("ab") and len(first) == 22
