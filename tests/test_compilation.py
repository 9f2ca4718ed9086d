"""The compiled kernels' first compilation (``lstmkit.compilation``, ``lstmkit.precompile``):
"auto" runs the PyTorch-ops backend while a background process fills an empty disk cache, then
the compiled kernels; the background passes compile everything that calls need (a later process
compiles nothing)."""

import hashlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lstmkit import compilation, functional, precompile
from lstmkit.kernels import cpu

pytestmark = pytest.mark.skipif("cpu" not in functional.LSTM_BACKENDS, reason="Numba is not installed")

COLD = """
import torch, lstmkit
from lstmkit import compilation, functional

torch.manual_seed(0)
x = torch.randn(6, 2, 8)
model = lstmkit.LSTM(8, 8)
twin = lstmkit.LSTM(8, 8, backend="torch")
twin.load_state_dict(model.state_dict())
with torch.no_grad():
    out = model(x)[0]  # the first call: it starts the background compilation of the "lstm" family
assert set(compilation._processes) == {(torch.float32, "lstm")}, compilation._processes
assert functional.kernel("auto", "lstm", x, 6) is functional.LSTM_BACKENDS["torch"]
with torch.no_grad():
    assert torch.equal(out, twin(x)[0])  # the PyTorch-ops backend's numbers, bit for bit
lstmkit.LSTMCell(8, 8)(x[0])  # the "step" family
lstmkit.RNN(8, 8)(x)  # the "rnn" family
assert set(compilation._processes) == {(torch.float32, f) for f in compilation.FAMILIES}
compilation.wait()
assert [p.returncode for p in compilation._processes.values()] == [0, 0, 0]
assert functional.kernel("auto", "lstm", x, 6) is functional.LSTM_BACKENDS["cpu"]
assert functional.kernel("auto", "lstm", x, 1, compiled_step=True) is functional.LSTM_BACKENDS["cpu"]
assert functional.kernel("auto", "rnn", x, 6) is functional.RNN_BACKENDS["cpu"]
print("cold ok in", compilation.cache_directory())
"""

# calls unlike those the background passes make (``precompile.EXERCISES``)
WARM = """
import torch, lstmkit
from torch.nn.utils.rnn import pack_padded_sequence
from lstmkit import compilation, functional

assert all(compilation.ready(torch.float32, f) for f in compilation.FAMILIES)
assert not compilation._processes
torch.manual_seed(1)
model = lstmkit.LSTM(5, 7, batch_first=True, forget_bias=1.0)
x = torch.randn(3, 9, 5)
packed = pack_padded_sequence(x, [4, 9, 2], batch_first=True, enforce_sorted=False)
model(packed)[0].data.sum().backward()
deep = lstmkit.LSTM(5, 6, num_layers=2, bidirectional=True, proj_size=3)
deep(x.transpose(0, 1)[:, ::2], return_gates=True)[0].sum().backward()  # not contiguous
with torch.no_grad():
    deep.half()(x.half().transpose(0, 1))
cell = lstmkit.LSTMCell(5, 4, cell_clip=0.5, coupled_input_forget=True)
cell(x[0, 0])[0].sum().backward()  # unbatched
rnn = lstmkit.RNN(5, 4, nonlinearity="relu")
rnn(x.transpose(0, 1), torch.randn(1, 3, 4))[0].sum().backward()
with torch.no_grad():
    lstmkit.RNNCell(5, 4)(x[:, 0])
    lstmkit.LSTM(5, 4)(x.transpose(0, 1), (torch.zeros(1, 3, 4), torch.zeros(1, 3, 4)))
assert functional.kernel("auto", "lstm", x, 9) is functional.LSTM_BACKENDS["cpu"]
print("warm ok")
"""


def _python(script: str, cache, **environment) -> str:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "LSTMKIT_COMPILE": "background", **environment}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_auto_runs_pytorch_ops_while_the_kernels_compile_then_a_new_process_compiles_nothing(tmp_path):
    cold = _python(COLD, tmp_path)
    assert "cold ok in" in cold
    directory = Path(cold.split("cold ok in", 1)[1].strip())
    sources = [(Path(cpu.__file__).parent / name).read_bytes() for name in cpu.SOURCES]
    expected = hashlib.sha256(b"".join(hashlib.sha256(source).digest() for source in sources)).hexdigest()
    assert (directory / cpu.SOURCES_DIGEST).read_text() == expected
    log = _python(WARM, tmp_path, NUMBA_DEBUG_CACHE="1")
    assert "warm ok" in log
    loaded = [line for line in log.splitlines() if "data loaded" in line]
    assert any("cpu._forward" in line for line in loaded) and any("cpu._backward" in line for line in loaded)
    assert [line for line in log.splitlines() if "data saved" in line] == []  # nothing compiled


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """``compilation`` in background mode, with nothing started and an empty cache folder."""
    monkeypatch.setenv(compilation.ENVIRONMENT, "background")
    for name, empty in (("_ready", set()), ("_processes", {}), ("_failed", set())):
        monkeypatch.setattr(compilation, name, empty)
    monkeypatch.setattr(compilation, "cache_directory", lambda: tmp_path)
    compilation.mark.cache_clear()
    yield tmp_path
    compilation.mark.cache_clear()


def test_a_compilation_that_fails_leaves_it_to_the_calling_process(fresh, monkeypatch):
    held = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read(); raise SystemExit(3)"], stdin=subprocess.PIPE
    )
    monkeypatch.setattr(compilation, "_start", lambda dtype, family: held)
    assert not compilation.ready(torch.float32, "lstm")  # still compiling
    held.stdin.close()
    held.wait()
    assert compilation.ready(torch.float32, "lstm")  # ended without its mark: compile in-process
    assert compilation._failed == {(torch.float32, "lstm")}


def test_a_compilation_that_cannot_start_leaves_it_to_the_calling_process(fresh, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(fresh / "no-python-here"))
    assert compilation.ready(torch.float64, "rnn")
    assert compilation._failed == {(torch.float64, "rnn")}


def test_a_mark_in_the_cache_means_ready_without_a_process(fresh):
    compilation.mark(torch.float32, "step").touch()
    assert compilation.ready(torch.float32, "step") and not compilation._processes


def test_marks_name_the_dtype_the_family_and_the_processor(fresh, monkeypatch):
    marks = {compilation.mark(d, f) for d in compilation.DTYPES for f in compilation.FAMILIES}
    compilation.mark.cache_clear()
    monkeypatch.setattr(compilation.cpu, "target_machine", lambda: ("x86_64", "another", ""))
    assert len(marks | {compilation.mark(torch.float32, "lstm")}) == 7


@pytest.mark.parametrize("setting", ["wait", "deterministic"])
def test_waiting_modes_compile_in_the_calling_process(fresh, monkeypatch, setting):
    if setting == "wait":
        monkeypatch.setenv(compilation.ENVIRONMENT, "wait")
    else:
        monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    assert not compilation.background()
    assert compilation.ready(torch.float32, "lstm") and not compilation._processes


def test_bad_settings_name_what_is_expected(fresh, monkeypatch):
    monkeypatch.setenv(compilation.ENVIRONMENT, "later")
    with pytest.raises(ValueError, match="LSTMKIT_COMPILE must be 'background' or 'wait', got 'later'"):
        compilation.ready(torch.float32, "lstm")
    with pytest.raises(ValueError, match=r"take \['float32', 'float64'\], got torch.int32"):
        precompile.compile_kernels([torch.int32])
    with pytest.raises(ValueError, match=r"families are \['lstm', 'step', 'rnn'\], got 'gru'"):
        precompile.compile_kernels([torch.float32], ["gru"])
    with pytest.raises(SystemExit):
        precompile.main(["half"])


def test_a_compilation_in_the_background_takes_one_of_torchs_threads_while_it_runs(
    fresh, monkeypatch, torch_threads
):
    torch_threads(2)
    monkeypatch.setattr(compilation, "_cores", lambda: 2)  # torch has a thread on every core
    monkeypatch.setattr(compilation, "_lent", None)
    held = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    monkeypatch.setattr(compilation, "_start", lambda dtype, family: held)
    assert not compilation.ready(torch.float32, "lstm")
    assert torch.get_num_threads() == 1  # the other core compiles
    assert not compilation.ready(torch.float32, "lstm") and torch.get_num_threads() == 1
    compilation.mark(torch.float32, "lstm").touch()  # what the process writes, then it exits
    held.stdin.close()
    assert compilation.ready(torch.float32, "lstm")
    assert torch.get_num_threads() == 2


def test_the_command_line_compiles_before_its_work_only_what_is_missing(fresh, monkeypatch):
    from lstmkit.cli import _common

    asked = []
    monkeypatch.setattr(precompile, "compile_kernels", lambda *arguments: asked.append(arguments))
    _common.compile_kernels(show=False)
    assert asked == [([torch.float32], ("lstm",))]
    compilation.mark(torch.float32, "lstm").touch()
    _common.compile_kernels(show=False)
    assert asked == [([torch.float32], ("lstm",))]


def test_compiling_leaves_the_programs_random_numbers_alone(fresh, monkeypatch):
    monkeypatch.setitem(precompile.EXERCISES, "lstm", lambda dtype: torch.randn(5, dtype=dtype))
    torch.manual_seed(0)
    precompile.compile_kernels([torch.float32], ["lstm"])
    assert compilation.mark(torch.float32, "lstm").exists()
    drawn = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), drawn)


def test_the_families_compiled_are_the_families_exercised():
    assert tuple(precompile.EXERCISES) == compilation.FAMILIES


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_worker_waits_for_the_compilation_instead_of_taking_it_for_a_failed_one(fresh, monkeypatch):
    started = []

    def start(dtype, family):
        started.append(os.getpid())
        return subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)

    monkeypatch.setattr(compilation, "_start", start)
    monkeypatch.setattr(compilation, "_cores", lambda: 10**6)  # no thread lent: torch stays as it is
    key = (torch.float32, "lstm")
    assert not compilation.ready(*key)
    held = compilation._processes[key]
    worker = os.fork()
    if worker == 0:  # the worker: its own compilation, still running, nothing failed
        waits = not compilation.ready(*key) and not compilation._failed and len(started) == 2
        compilation._processes[key].kill()
        os._exit(0 if waits else 1)
    _, status = os.waitpid(worker, 0)
    held.stdin.close()
    held.wait()
    assert os.waitstatus_to_exitcode(status) == 0


def test_entries_go_when_a_source_of_the_kernels_changes(tmp_path):
    sources = [tmp_path / "cpu.py", tmp_path / "cpu_split.py"]
    for source in sources:
        source.write_text("x = 1\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    entries = [
        "cpu._forward-1202.py311.nbi",
        "cpu._forward-1202.py311.1.nbc",
        "cpu_split._step-179.py311.nbi",
    ]
    kept = ["cpu.cpython-311.pyc", "lstmkit-float32-lstm-0123456789abcdef.compiled", "lstmkit-compile.lock"]

    def plant() -> None:
        for name in entries + kept:
            (cache / name).write_bytes(b"")

    def present() -> set[str]:
        return {path.name for path in cache.iterdir()} - {cpu.SOURCES_DIGEST}

    plant()
    assert cpu.drop_stale_entries(cache, sources)  # no digest yet: written by sources unknown
    assert present() == set(kept)
    plant()
    assert not cpu.drop_stale_entries(cache, sources)  # the same sources
    assert present() == set(entries + kept)
    sources[0].write_text("x = 2\n")  # the helpers' file edited, cpu_split.py not
    assert cpu.drop_stale_entries(cache, sources)
    assert present() == set(kept)
    assert not cpu.drop_stale_entries(cache, sources)
    plant()
    sources[0].write_text("x = 2\nx")  # a line moved across the files: the same bytes in all
    sources[1].write_text(" = 1\n")
    assert cpu.drop_stale_entries(cache, sources)
    assert present() == set(kept)


def test_the_sources_are_every_file_that_numba_compiles():
    kernels = Path(cpu.__file__).parent
    compiled = {
        path.name
        for path in kernels.glob("*.py")
        if re.search(r"@_jit|numba\.(njit|cfunc)", path.read_text())
    }
    assert compiled == set(cpu.SOURCES)
