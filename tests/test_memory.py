"""lstmkit.memory: with malloc keeping freed memory, a training loop stops faulting its pages in
again at every step (counted in a fresh process, so that this one keeps its own settings)."""

import platform
import subprocess
import sys

import pytest

import lstmkit

GLIBC = platform.libc_ver()[0] == "glibc"

LOOP = """
import resource, sys, torch, lstmkit
if sys.argv[1] == "keep":
    assert lstmkit.memory.keep_freed_memory()
torch.manual_seed(0)
model = lstmkit.LSTM(128, 128)
x = torch.randn(100, 32, 128)
faults = []
for _ in range(16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model.zero_grad(set_to_none=True)
    out, (h, c) = model(x)
    (out.sum() + h.sum() + c.sum()).backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults[6:])[5])  # the median step after six of warm-up
"""


def _faults(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", LOOP, mode], capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_training_steps_fault_no_pages_in_after_the_first():
    # a step's tensors here are about 20 MiB (5,000 pages): without the setting, steps faulted up
    # to all of them in again, depending on allocation order; with it, the median step after the
    # first few faults 0-2 (measured; single steps still fault 400-1,600 while the heap settles)
    assert _faults("keep") < 50


@pytest.mark.skipif(GLIBC, reason="there is glibc here")
def test_without_glibc_nothing_changes():
    assert lstmkit.memory.keep_freed_memory() is False
