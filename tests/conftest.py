import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Float64 comparisons must be exact to 1e-10; keep torch single-threaded so that sums are
# reduced in one order and runs are reproducible on the 2-core CI machine.
torch.set_num_threads(1)

# Every test takes the compiled kernels from its first call (``lstmkit.compilation``): compiled in
# the test process, never the PyTorch-ops backend while a background process compiles them.
os.environ.setdefault("LSTMKIT_COMPILE", "wait")

# Backend "triton" runs its kernels in Triton's NumPy interpreter on CPU tensors, as the other
# backends' tests hand it (read by lstmkit.kernels.gpu, imported below once it is set). On a GPU
# machine, `TRITON_INTERPRET=0 pytest tests/test_triton.py` compiles them for CUDA tensors instead.
os.environ.setdefault("TRITON_INTERPRET", "1")


def _helpers_without_patching() -> None:
    """Triton's interpreter patches triton.language anew at every call of a ``@triton.jit``
    function inside a kernel, about 0.4 ms each: 18,752 calls in one training call of a 2-layer
    bidirectional LSTM at T = 30, B = 8, H = 32. Without them a training call at T = 8 took 3.74 s
    against 4.13 (medians of 6, interleaved in one process), with the same numbers. The helpers of
    ``lstmkit.kernels.triton_kernels`` run only inside that module's kernels, whose launch has
    patched the same module's triton.language already: they skip it. Other ``@triton.jit``
    functions (triton.language's own) do not."""
    try:
        from triton.runtime.interpreter import InterpretedFunction, InterpreterError
    except ImportError:
        return
    patching = InterpretedFunction.__call__

    def call(self, *args, **kwargs):
        if self.fn.__module__ != "lstmkit.kernels.triton_kernels":
            return patching(self, *args, **kwargs)
        try:
            return self.rewrite()(*args, **kwargs)
        except Exception as e:
            raise InterpreterError(repr(e)) from e

    InterpretedFunction.__call__ = call


from lstmkit.kernels import gpu  # noqa: E402  (imported once both variables above are set)

if gpu.interpreted():
    _helpers_without_patching()

settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("LSTMKIT_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile("ci")


@pytest.fixture
def torch_threads():
    """``torch.set_num_threads`` for one test; the suite's single thread comes back after it."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)
