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
# backends' tests hand it (read when lstmkit.kernels.gpu is imported, after this file). On a GPU
# machine, `TRITON_INTERPRET=0 pytest tests/test_triton.py` compiles them for CUDA tensors instead.
os.environ.setdefault("TRITON_INTERPRET", "1")

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
