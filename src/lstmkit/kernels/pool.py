"""The parts of a kernel call, run at once on torch's own OpenMP threads.

torch's intra-op threads keep spinning for some milliseconds after each parallel operation, so
threads of our own that start right after one share the cores with them and gain nothing
(measured on 2 cores: the two halves of a 5.4 ms Numba loop took 5.5 ms on a ThreadPoolExecutor
right after a torch matmul, 2.8 ms on torch's threads). ``run`` therefore opens a parallel region
of the OpenMP runtime that torch itself loaded (libgomp's ``GOMP_parallel``) from the calling
thread, whose team is the one torch's operations use; each member calls back into Python only to
start its share of nogil Numba calls. Without such a runtime (a torch build on another OpenMP),
a ThreadPoolExecutor runs the parts.

An empty region costs about 50 µs (the callbacks take the GIL in turn), so ``run`` pays for
calls of some hundreds of microseconds or more (``cpu.MIN_THREAD_WORK`` says where, measured).
Compiled code can open a region of its own whose members never enter Python
(``region_addresses``), for a few microseconds.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import NamedTuple

import torch

_BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class _OpenMP(NamedTuple):
    parallel: Callable  # GOMP_parallel(fn, data, num_threads, flags)
    thread_num: Callable
    num_threads: Callable
    start: int  # the address of GOMP_parallel_start(fn, data, num_threads)
    end: int  # the address of GOMP_parallel_end()
    team: int  # the address of omp_get_num_threads()


@functools.cache
def _openmp() -> _OpenMP | None:
    """libgomp's entry points in the copy torch loaded, or None."""
    from threadpoolctl import ThreadpoolController

    torch_libraries = os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "lib"))
    for controller in ThreadpoolController().select(user_api="openmp").lib_controllers:
        path = os.path.realpath(controller.filepath)
        if controller.prefix == "libgomp" and path.startswith(torch_libraries):
            library = ctypes.CDLL(path)
            parallel = library.GOMP_parallel
            parallel.argtypes = [_BODY, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
            parallel.restype = None
            for name in ("omp_get_thread_num", "omp_get_num_threads"):
                getattr(library, name).restype = ctypes.c_int
            # libgomp's older entry points, kept for binaries built by older GCCs; 0 where gone
            start, end = (
                ctypes.cast(getattr(library, name), ctypes.c_void_p).value if hasattr(library, name) else 0
                for name in ("GOMP_parallel_start", "GOMP_parallel_end")
            )
            count = library.omp_get_num_threads
            team = ctypes.cast(count, ctypes.c_void_p).value
            return _OpenMP(parallel, library.omp_get_thread_num, count, start, end, team)
    return None


def region_addresses() -> tuple[int, int]:
    """(``GOMP_parallel_start``, ``GOMP_parallel_end``) of torch's libgomp, or (0, 0): for compiled
    code that opens a region itself, with compiled members that never enter Python. libgomp's
    older entry points return to the caller after the start, so that it works on as the region's
    first member until the end, where it waits for the others; a region of two whose second
    member does nothing took 2 µs, 7 µs once the team's threads had gone to sleep (measured)."""
    openmp = _openmp()
    return (0, 0) if openmp is None or not (openmp.start and openmp.end) else (openmp.start, openmp.end)


def team_size_address() -> int:
    """The address of torch's libgomp's ``omp_get_num_threads``, or 0: how many members a region
    that compiled code opened (``region_addresses``) has, asked by its first member."""
    openmp = _openmp()
    return 0 if openmp is None else openmp.team


_EXECUTOR: tuple[int, ThreadPoolExecutor] | None = None


def _executor() -> ThreadPoolExecutor:
    """The fallback's threads, created on first use (and again in a forked child, which
    inherits the executor but not its threads)."""
    global _EXECUTOR
    if _EXECUTOR is None or _EXECUTOR[0] != os.getpid():
        _EXECUTOR = (os.getpid(), ThreadPoolExecutor(os.cpu_count(), thread_name_prefix="lstmkit"))
    return _EXECUTOR[1]


def run(calls: Sequence[Callable[[], None]]) -> None:
    """Every call, in parallel, one thread per call at most; each releases the GIL in its kernel.
    Where the runtime gives fewer threads, each takes every n-th call in order: a call must never
    wait for a later one to start. Returns when all have finished; re-raises the first error."""
    if len(calls) == 1:
        calls[0]()
        return
    openmp = _openmp()
    if openmp is None:
        futures = [_executor().submit(call) for call in calls[1:]]
        try:
            calls[0]()
        finally:
            wait(futures)  # never leave a thread writing into buffers the caller may free
        for future in futures:
            future.result()
        return
    errors: list[BaseException] = []

    def body(_: object) -> None:
        try:
            for call in calls[openmp.thread_num() :: openmp.num_threads()]:
                call()
        except BaseException as error:  # an exception cannot cross the C frames
            errors.append(error)

    openmp.parallel(_BODY(body), None, len(calls), 0)
    if errors:
        raise errors[0]
