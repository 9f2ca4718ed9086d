"""Whether the compiled CPU kernels are compiled, and their first compilation in a background process.

From an empty disk cache the kernels of one dtype take seconds to compile (BENCHMARKS.md, on this
project's 2-core AMD machine: 4.1-6.0 s before a first inference call, 15-19 s for every kernel of
a dtype; 8-9 s before a first inference call on the Intel one). ``"auto"`` does not make a first
call wait for that: while the kernels a call needs (a family of ``FAMILIES``, for a dtype) are not
in Numba's disk cache, it runs the PyTorch-ops backend (``"torch"``, tested against the same
reference) and starts one process that runs ``lstmkit.precompile`` for them at low priority
(``_start``; Numba compiles on one thread, and torch runs on one thread fewer meanwhile,
``_lend_core``); once that process has written its mark beside the cache, the next call takes the
compiled kernels, loaded from the cache (a fraction of a second). Processes that share the cache
(data-parallel ranks, a test runner's workers) compile once, under a file lock.

Where a first call should wait instead, so that every call of a run takes the same kernels
(``backend="auto"`` picks the compiled one from the first call):

- ``LSTMKIT_COMPILE=wait`` in the environment, or ``torch.use_deterministic_algorithms(True)``;
- ``lstmkit.precompile.compile_kernels()`` in the program, or ``python -m lstmkit.precompile``
  ahead of time (as in a container's build: the cache stays valid until lstmkit, Numba, Python or
  the processor changes).

``backend="cpu"`` always compiles in the calling process, on its first call.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import torch

from .kernels import cpu

ENVIRONMENT = "LSTMKIT_COMPILE"
DTYPES = cpu.DTYPES
NAMES = {torch.float32: "float32", torch.float64: "float64"}
# the kernels' families, compiled and marked apart so that a program waits only for what it calls:
# an LSTM over sequences (``kernels.cpu``), one LSTM step (``kernels.cpu_step``: cells, sequences
# of one step), the plain RNN (``kernels.cpu_rnn``)
FAMILIES = ("lstm", "step", "rnn")

Key = tuple[torch.dtype, str]  # (dtype, family)
_ready: set[Key] = set()  # the kernels this process may call without compiling
_processes: dict[Key, subprocess.Popen | None] = {}  # the background compilations it started
_failed: set[Key] = set()  # those that could not start or ended without their marks
_lent: tuple[int, int] | None = None  # torch's threads before and during the compilations


def background() -> bool:
    """Whether ``"auto"`` runs the PyTorch-ops backend while the kernels compile elsewhere."""
    mode = os.environ.get(ENVIRONMENT, "background")
    if mode not in ("background", "wait"):
        raise ValueError(f"{ENVIRONMENT} must be 'background' or 'wait', got {mode!r}")
    return mode == "background" and not torch.are_deterministic_algorithms_enabled()


def cache_directory() -> Path:
    """Where Numba caches the kernels of ``kernels.cpu`` (the package's ``__pycache__``, or
    ``NUMBA_CACHE_DIR``, or a user-wide fallback where the package cannot be written)."""
    return Path(cpu.cache_directory())


@functools.cache
def mark(dtype: torch.dtype, family: str) -> Path:
    """The file that says the kernels of ``family`` for ``dtype`` are in the cache. Its name
    changes with everything Numba's cache entries depend on: the kernels' sources (Numba compares
    their modification times and sizes, once per process as here), Numba, Python and the
    processor that LLVM compiles for."""
    sources = sorted(Path(cpu.__file__).parent.glob("*.py"))
    stamps = [(path.name, path.stat().st_mtime, path.stat().st_size) for path in sources]
    key = repr((stamps, cpu.numba.__version__, sys.version_info[:2], cpu.target_machine()))
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_directory() / f"lstmkit-{NAMES[dtype]}-{family}-{digest}.compiled"


def ready(dtype: torch.dtype, family: str) -> bool:
    """Whether ``"auto"`` may call the compiled kernels of ``family`` (``FAMILIES``) on tensors of
    ``dtype`` (float32 or float64) now. False while they are not in the disk cache and compile in
    the background (the first such call starts that); True in every other case, where a first
    call compiles in this process if it has to (as it does when the background compilation
    failed: its error shows there)."""
    key = (dtype, family)
    if key in _ready or key in _failed:
        return True
    if not background() or mark(*key).exists():
        _finished(key, _ready)
        return True
    if key not in _processes:
        _processes[key] = _start(*key)
        if _processes[key] is not None:
            _lend_core()
    process = _processes[key]
    if process is None or process.poll() is not None:  # finished, and no mark: failed
        _finished(key, _failed)
        return True
    return False


def _finished(key: Key, into: set[Key]) -> None:
    """``key`` into ``into``; once its compilation has exited (it marks the cache just before),
    torch's threads back as they were unless another one runs."""
    into.add(key)
    process = _processes.get(key)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
    _return_core()


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _lend_core() -> None:
    """One torch thread fewer while a compilation runs, where torch has a thread on every core:
    otherwise the compiler takes turns with one of torch's threads on its core, and every
    parallel region waits for the descheduled one (measured: a training call of 35 ms on the
    PyTorch-ops backend took 4.9 s)."""
    global _lent
    threads = torch.get_num_threads()
    if _lent is None and 1 < threads and _cores() <= threads:
        torch.set_num_threads(threads - 1)
        _lent = (threads, threads - 1)


def _return_core() -> None:
    """Torch's threads as they were, once no compilation runs (unless the program set them since)."""
    global _lent
    compiling = any(process is not None and process.poll() is None for process in _processes.values())
    if _lent is not None and not compiling:
        if torch.get_num_threads() == _lent[1]:
            torch.set_num_threads(_lent[0])
        _lent = None


def _start(dtype: torch.dtype, family: str) -> subprocess.Popen | None:
    """``lstmkit.precompile.main(["--background", "--family", FAMILY, DTYPE])`` in a new Python;
    None if it cannot start. The child imports this very lstmkit: its folder goes first on the
    child's path where the default path lacks it (a source tree the program put on its own path),
    never otherwise (a site-packages folder first would shadow the standard library)."""
    root = os.path.realpath(Path(__file__).parent.parent)
    arguments = ["--background", "--family", family, NAMES[dtype]]
    program = (
        f"import os, sys\nif all(os.path.realpath(p) != {root!r} for p in sys.path):\n"
        f"    sys.path.insert(0, {root!r})\nfrom lstmkit.precompile import main\nmain({arguments!r})\n"
    )
    try:
        return subprocess.Popen(
            [sys.executable, "-c", program], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    except OSError:
        return None


def _forget_the_parents_compilations() -> None:
    """After a fork (a DataLoader worker): the parent's compilations are not this process's
    children, and polling one would fail as if it had ended without its mark (then this process
    would compile in place). Forgotten instead: a compilation this process needs starts its own,
    which waits on the cache's lock for the parent's and then finds the mark."""
    _processes.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_the_parents_compilations)


def wait() -> None:
    """Wait for the background compilations this process started (tests, benchmarks)."""
    for process in _processes.values():
        if process is not None:
            process.wait()
    _return_core()


def record(dtype: torch.dtype, family: str) -> None:
    """Note that this process compiled (or loaded) the kernels of ``family`` for ``dtype``."""
    _ready.add((dtype, family))
