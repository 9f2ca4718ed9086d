"""The command line through typer's runner, on tiny data: round trips for the three tasks, resume,
the error messages, atomic checkpoints, no pickle on load."""

import gzip
import io
import json
import math
import pickle
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from lstmkit import checkpoint, files, train
from lstmkit.checkpoint import read_safetensors
from lstmkit.cli import app
from lstmkit.data import bundled_path
from lstmkit.runs import load_run

runner = CliRunner()
TINY = ["--hidden-size", "8", "--num-layers", "1", "--batch-size", "16"]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def series(tmp_path):
    """120 months of a trend plus a yearly cycle."""
    t = np.arange(120)
    frame = pd.DataFrame(
        {
            "month": pd.date_range("2000-01-01", periods=120, freq="MS").strftime("%Y-%m"),
            "sales": 100 + 0.5 * t + 10 * np.sin(2 * np.pi * t / 12),
            "price": 5 + np.cos(t / 7),
        }
    )
    path = tmp_path / "sales.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def digits(tmp_path):
    """A slice of the bundled digits: 150 images."""
    path = tmp_path / "digits.csv"
    path.write_text(pd.read_csv(bundled_path("digits")).head(150).to_csv(index=False))
    return path


@pytest.fixture
def text(tmp_path):
    """The first 4,000 characters of the bundled Genesis."""
    path = tmp_path / "genesis.txt"
    path.write_text(gzip.decompress(bundled_path("genesis").read_bytes()).decode()[:4000])
    return path


def _exported(out, tmp_path):
    """`lstmkit export` of a run: (an ONNX Runtime session of the file, its metadata)."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "exported.onnx"
    result = invoke("export", out, "--output", path)
    assert result.exit_code == 0, result.output
    metadata = {p.key: p.value for p in onnx.load(path).metadata_props}
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), metadata


def _forecast_args(series, out, epochs=2):
    return [
        "train", "--data", series, "--task", "forecast", "--target", "sales", "--feature", "price",
        "--time-column", "month", "--window", "12", "--horizon", "3", "--season", "12",
        "--epochs", epochs, "--out", out, *TINY,
    ]  # fmt: skip


def test_forecast_train_evaluate_predict(series, tmp_path):
    out = tmp_path / "run"
    result = invoke(*_forecast_args(series, out))
    assert result.exit_code == 0, result.output
    assert "seasonal naive" in result.output and "MASE" in result.output
    for name in ("config.json", "model.safetensors", "checkpoint.safetensors", "loss.png"):
        assert (out / name).is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["spec"]["targets"] == ["sales"] and config["model"]["hidden_size"] == 8

    result = invoke("evaluate", out, "--data", series, "--json", tmp_path / "metrics.json")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"lstmkit", "last value", "seasonal naive"}
    assert all(math.isfinite(v) for row in metrics.values() for v in row.values())

    result = invoke("predict", out, "--data", series, "--output", tmp_path / "forecast.csv")
    assert result.exit_code == 0, result.output
    forecast = pd.read_csv(tmp_path / "forecast.csv")
    assert list(forecast.columns) == ["step", "month", "sales"]
    assert forecast["month"].tolist() == ["2010-01", "2010-02", "2010-03"]  # as the data writes months
    assert forecast["sales"].between(100, 200).all()  # inverse-scaled: in the data's units

    # the exported file forecasts from the raw last window what `predict` printed
    session, metadata = _exported(out, tmp_path)
    assert json.loads(metadata["columns"]) == ["sales", "price"]
    window = pd.read_csv(series)[["sales", "price"]].to_numpy(np.float32)[None, -12:]
    (exported,) = session.run(None, {"window": window})
    assert exported.shape == (1, 3, 1)
    np.testing.assert_allclose(exported[0, :, 0], forecast["sales"], rtol=1e-5)

    result = invoke("explain", out, "--data", series, "--out", tmp_path / "gates.png")
    assert result.exit_code == 0 and (tmp_path / "gates.png").stat().st_size > 1000


@pytest.mark.parametrize("transform", ["level", "delta"])
def test_export_of_a_two_target_forecaster_equals_predict(series, tmp_path, transform):
    """Two targets (the graph's (B, horizon, targets) order), and --transform level (the graph adds
    the training mean, not the window's last row)."""
    out = tmp_path / "run"
    args = [a for a in _forecast_args(series, out, epochs=1) if a not in ("--feature", "price")]
    result = invoke(*args, "--target", "price", "--transform", transform)
    assert result.exit_code == 0, result.output
    assert invoke("predict", out, "--data", series, "--output", tmp_path / "forecast.csv").exit_code == 0
    session, metadata = _exported(out, tmp_path)
    assert json.loads(metadata["targets"]) == ["sales", "price"]
    window = pd.read_csv(series)[["sales", "price"]].to_numpy(np.float32)[None, -12:]
    (exported,) = session.run(None, {"window": window})
    printed = pd.read_csv(tmp_path / "forecast.csv")[["sales", "price"]].to_numpy()
    np.testing.assert_allclose(exported[0], printed, rtol=1e-5)


def test_forecast_reads_parquet(series, tmp_path):
    parquet = tmp_path / "sales.parquet"
    pd.read_csv(series).to_parquet(parquet)
    result = invoke(*_forecast_args(parquet, tmp_path / "run", epochs=1))
    assert result.exit_code == 0, result.output


def test_classify_round_trip_on_digits(digits, tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "train", "--data", digits, "--task", "classify", "--target", "digit", "--steps", "8",
        "--epochs", "2", "--out", out, "--bidirectional", *TINY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "majority class" in result.output and "macro-F1" in result.output
    result = invoke("predict", out, "--data", digits)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "row,prediction,probability" and len(lines) == 151
    assert all(0 <= int(line.split(",")[1]) <= 9 for line in lines[1:])
    session, metadata = _exported(out, tmp_path)
    table = pd.read_csv(digits)
    values = table[json.loads(metadata["features"])].to_numpy(np.float32)
    (probabilities,) = session.run(None, {"values": values})
    predicted = pd.read_csv(io.StringIO(result.output))
    labels = np.array(json.loads(metadata["labels"]))
    assert (labels[probabilities.argmax(1)] == predicted["prediction"]).all()
    np.testing.assert_allclose(
        probabilities.max(1), predicted["probability"], atol=5e-5
    )  # printed to 4 places
    assert (
        invoke(
            "explain", out, "--data", digits, "--row", "2", "--reverse", "--out", tmp_path / "g.png"
        ).exit_code
        == 0
    )


def test_language_model_round_trip(text, tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "train",
        "--data",
        text,
        "--task",
        "language-model",
        "--window",
        "32",
        "--epochs",
        "2",
        "--out",
        out,
        *TINY,
        "--layer-norm",  # exported as a Scan of one step (ONNX's LSTM operator has neither)
        "--proj-size",
        "4",
    )
    assert result.exit_code == 0, result.output
    assert "bits per character" in result.output and "unigram" in result.output
    result = invoke("predict", out, "--prompt", "And God", "--length", "40", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("And God") and len(result.output.rstrip("\n")) == len("And God") + 40
    again = invoke("predict", out, "--prompt", "And God", "--length", "40", "--seed", "1")
    assert again.output == result.output  # seeded sampling
    assert invoke("evaluate", out).exit_code == 0
    # the exported file's logits and states, carried over two calls, are the model's
    session, metadata = _exported(out, tmp_path)
    run = load_run(out)
    ids = torch.tensor([[metadata["vocabulary"].index(c) for c in "And God said"]])
    rows = run.model.config.num_layers
    state = [np.zeros((rows, 1, size), np.float32) for size in run.model.lstm._state_sizes()]
    ours = None
    for part in (ids[:, :5], ids[:, 5:]):
        logits, *state = session.run(None, {"ids": part.numpy(), "h0": state[0], "c0": state[1]})
        with torch.no_grad():
            expected, ours = run.model.step(part, ours)
        np.testing.assert_allclose(logits, expected.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(state[0], ours[0].numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(state[1], ours[1].numpy(), rtol=1e-4, atol=1e-5)
    assert invoke("explain", out, "--prompt", "In the beginning", "--out", tmp_path / "g.png").exit_code == 0


def test_bundled_dataset_defaults(tmp_path):
    result = invoke("train", "--dataset", "co2", "--epochs", "1", "--out", tmp_path / "run", *TINY)
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (
        config["data"]["window"] == 36 and config["data"]["horizon"] == 12 and config["data"]["season"] == 12
    )


# --- resume ---------------------------------------------------------------------------------


def test_resume_after_a_kill_gives_the_uninterrupted_weights(series, tmp_path, monkeypatch):
    """A run killed after epoch 2's checkpoint, resumed, ends where an uninterrupted run ends:
    no epoch lost or repeated, the same random draws (dropout, zoneout, shuffling)."""
    extra = ["--num-layers", "2", "--dropout", "0.3", "--zoneout", "0.1", "--patience", "0", "--seed", "3"]
    whole = tmp_path / "whole"
    assert invoke(*_forecast_args(series, whole, epochs=4), *extra).exit_code == 0

    real_save = checkpoint.save_checkpoint

    def killed_after_epoch_2(path, model, optimizer, generators, state):
        real_save(path, model, optimizer, generators, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "save_checkpoint", killed_after_epoch_2)
    killed = tmp_path / "killed"
    assert invoke(*_forecast_args(series, killed, epochs=4), *extra).exit_code == 130  # interrupted
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    assert json.loads(read_safetensors(killed / "checkpoint.safetensors")[1]["state"])["epoch"] == 2

    result = invoke(*_forecast_args(series, killed, epochs=4), *extra, "--resume")
    assert result.exit_code == 0, result.output
    for name in ("model.safetensors", "checkpoint.safetensors"):
        a, meta_a = read_safetensors(whole / name)
        b, meta_b = read_safetensors(killed / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    history = json.loads(meta_b["state"])["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert history == json.loads(meta_a["state"])["history"]


def _loopback_available() -> bool:
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _loopback_available(), reason="torchrun's processes talk over the loopback interface")
def test_two_processes_under_torchrun_train_the_weights_of_one(series, tmp_path):
    """`torchrun -m lstmkit train` on two processes (DDP over gloo): each trains on half of every
    batch, and the weights equal a single process's up to the order of float sums; process 0
    alone writes the folder and reports."""
    args = [str(a) for a in _forecast_args(series, tmp_path / "two", epochs=3)]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    result = subprocess.run([*launch, "-m", "lstmkit", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("best epoch 3 of 3") == 1
    assert invoke(*_forecast_args(series, tmp_path / "one", epochs=3)).exit_code == 0
    ours, _ = read_safetensors(tmp_path / "one" / "model.safetensors")
    theirs, _ = read_safetensors(tmp_path / "two" / "model.safetensors")
    for name, value in ours.items():
        torch.testing.assert_close(theirs[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )


def test_resume_refuses_changed_settings_and_fresh_runs_refuse_to_overwrite(series, tmp_path):
    out = tmp_path / "run"
    assert invoke(*_forecast_args(series, out, epochs=1)).exit_code == 0
    result = invoke(*_forecast_args(series, out, epochs=1))
    assert result.exit_code == 1 and "already holds a run; pass --resume" in result.output
    result = invoke(*_forecast_args(series, out, epochs=2), "--lr", "0.1", "--resume")
    assert (
        result.exit_code == 1 and "--resume continues the saved run: lr was 0.003, now 0.1" in result.output
    )


# --- errors and data safety -------------------------------------------------------------------


def _train_forecast(path, out, *extra):
    return invoke("train", "--data", path, "--task", "forecast", "--target", "y", "--out", out, *extra)


@pytest.mark.parametrize(
    ("rows", "extra", "message"),
    [
        ("t,x\n1,1\n", [], "error: column 'y' not found in '{path}'; its columns are: t, x"),
        (
            "t,y\n1,1\n2,abc\n3,3\n",
            [],
            "error: column 'y' in '{path}' has non-numeric values, e.g. 'abc' at row 2",
        ),
        (
            "t,y\n1,1\n2,\n3,3\n",
            [],
            "error: column 'y' in '{path}' has 1 missing value(s) (NaN gaps), first at row 2",
        ),
        (
            "t,y\n" + "".join(f"{i},{i}\n" for i in range(30)),
            ["--window", "20", "--horizon", "5"],
            "error: too few rows for window=20 and horizon=5: 30 rows split 22/4/4 (train/validation/test)",
        ),
    ],
    ids=["missing column", "non-numeric", "NaN gap", "too few rows"],
)
def test_data_errors_are_one_line(tmp_path, rows, extra, message):
    path = tmp_path / "data.csv"
    path.write_text(rows)
    result = _train_forecast(path, tmp_path / "run", *extra)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message.format(path=path)), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()  # checked before anything was written


def test_unseen_label_is_one_line(digits, tmp_path):
    out = tmp_path / "run"
    assert (
        invoke(
            "train",
            "--data",
            digits,
            "--task",
            "classify",
            "--target",
            "digit",
            "--steps",
            "8",
            "--epochs",
            "1",
            "--out",
            out,
            *TINY,
        ).exit_code
        == 0
    )
    table = pd.read_csv(digits).head(5)
    table.loc[3, "digit"] = 11
    table.to_csv(tmp_path / "new.csv", index=False)
    result = invoke("evaluate", out, "--data", tmp_path / "new.csv")
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"error: label 11 in the rows of '{tmp_path / 'new.csv'}' was never seen in training "
        "(known: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)"
    )


def test_a_kill_while_writing_leaves_the_old_checkpoint_whole(series, tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert invoke(*_forecast_args(series, out, epochs=1)).exit_code == 0
    before = (out / "checkpoint.safetensors").read_bytes()

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "replace", killed)
    assert invoke(*_forecast_args(series, out, epochs=2), "--resume").exit_code == 130
    assert (out / "checkpoint.safetensors").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.safetensors",
        "config.json",
        "loss.png",
        "model.safetensors",
    ]


def test_loading_never_unpickles(series, tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert invoke(*_forecast_args(series, out, epochs=1)).exit_code == 0

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle was used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert invoke("evaluate", out).exit_code == 0


def test_demo_quick_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    result = invoke("demo", "--quick", "--out", out)
    assert result.exit_code == 0, result.output
    assert "seasonal naive" in result.output and "than the seasonal-naive forecast" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"lstmkit", "last value", "seasonal naive"} <= set(metrics["test"])
    for name in ("model.safetensors", "config.json", "loss.png", "forecast.png"):
        assert (out / name).stat().st_size > 0
    assert invoke("demo", "--quick", "--out", out).exit_code == 1  # never overwrites silently
    assert invoke("demo", "--quick", "--out", out, "--overwrite").exit_code == 0


def test_long_memory_quick(tmp_path):
    out = tmp_path / "exp"
    result = invoke("experiment", "long-memory", "--quick", "--out", out)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert set(results["summary"]) == {"rnn T=8", "lstm T=8", "rnn T=16", "lstm T=16"}
    assert len(results["runs"][0]["grad_norm_init"]) == results["runs"][0]["lag"]
    for name in ("mse_vs_lag.png", "gradient_norms_T8.png", "gradient_norms_T16.png"):
        assert (out / name).is_file()


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["train"],
        ["evaluate"],
        ["predict"],
        ["demo"],
        ["explain"],
        ["export"],
        ["env"],
        ["experiment", "long-memory"],
    ],
)
def test_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_env_names_what_a_bug_report_needs():
    result = invoke("env")
    assert result.exit_code == 0
    for line in ("torch threads:", "LSTM backends:", "cpu products:", "onnx (export):", "DDP (gloo):"):
        assert line in result.output, line
