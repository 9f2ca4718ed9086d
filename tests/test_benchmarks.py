"""The benchmark script runs (a tiny smoke run; the timings themselves live in BENCHMARKS.md)."""

import subprocess
import sys
from pathlib import Path

import pytest

from lstmkit.kernels import mkl

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_lstm.py"


def test_bench_quick_runs_and_prints_a_table():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--rounds", "2", "--backends", "torch,reference"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()
    rows = [line for line in lines if line.startswith(("shapes,", "variants,", "rnn,", "steps,"))]
    # (2 shapes x 2 modes + 1 variant + (1 RNN shape + 1 cell) x 2 modes) x (the torch.nn module + 2 backends)
    assert len(rows) == (2 * 2 + 1 + 2 + 2) * 3
    assert any(line.startswith("| case (T,B,I=H)") for line in lines)
    assert any(line.startswith("| training (100,32,128), option") for line in lines)
    assert any(
        line.startswith("| RNN case (T,B,I=H) | mode | nn.RNN ms | lstmkit torch / nn.RNN") for line in lines
    )
    assert any(
        line.startswith("| one step | mode | torch.nn ms | lstmkit torch / torch.nn") for line in lines
    )
    assert any(line.startswith("| LSTMCell (B=2, H=16) | training |") for line in lines)


@pytest.mark.parametrize("library, named", [("openblas", "OpenBLAS ("), ("mkl", "MKL's packed gemm;")])
def test_bench_runs_the_kernel_on_the_library_asked_for(library, named):
    if library == "mkl" and not mkl.available():
        pytest.skip("torch exports no MKL packed gemm here")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--rounds", "1", "--backends", "cpu", "--step-products", library],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    assert f"float32 step products: {named}" in result.stdout


def test_bench_memory_runs_in_fresh_processes():
    result = subprocess.run(
        [sys.executable, str(SCRIPT.with_name("bench_memory.py")), "--case", "3,2,4,1", "--repeats", "1",
         "--backends", "torch"],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    rows = [line for line in result.stdout.splitlines() if line.startswith("| (3,2,4) |")]
    assert [row.split(" | ")[1] for row in rows] == ["nn.LSTM", "torch"]


def test_bench_first_call_runs_every_part():
    result = subprocess.run(
        [sys.executable, str(SCRIPT.with_name("bench_first_call.py")), "--case", "3,2,4", "--seconds", "0.5",
         "--cache", "default"],  # the suite's cache: what compiles is measured in BENCHMARKS.md
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    parts = [line.split(":")[0] for line in result.stdout.splitlines() if not line.startswith("#")]
    assert parts == ["empty cache, wait", "filled cache", "training loop of 0.5 s, background",
                     "training loop of 0.5 s, wait"]  # fmt: skip
    assert "LSTM training" in result.stdout and "compiled calls" in result.stdout


def test_bench_split_times_the_three_ways():
    result = subprocess.run(
        [sys.executable, str(SCRIPT.with_name("bench_split.py")), "--sizes", "32", "--dtypes", "float32",
         "--steps", "20", "--rounds", "2"],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    rows = [line.split(" | ") for line in result.stdout.splitlines() if line.startswith("| 32 |")]
    assert len(rows) == 1 and rows[0][1] == "float32"
    assert all(float(cell) > 0 for cell in rows[0][2:5])
