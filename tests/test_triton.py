"""Backend "triton" (kernels/gpu.py) where its tiling shows: several programs, unit blocks and
product tiles, against the step-by-step reference in float64.

The backend-generic tests (test_vs_torch, test_variants, test_packed, test_dispatch) run it as
well, at sizes inside one tile. In this suite Triton's interpreter runs the kernels on CPU tensors
by default (conftest), GPU or not; on a GPU machine,
``TRITON_INTERPRET=0 pytest tests/test_triton.py`` compiles them for CUDA tensors instead.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lstmkit
from lstmkit import functional
from lstmkit.kernels import gpu

from .test_variants import _assert_close, _run_both

pytestmark = pytest.mark.skipif(not gpu.available(), reason="Triton is not installed")

DEVICE = "cpu" if gpu.interpreted() else "cuda"

# 37 sequences: three programs of BLOCK_B = 16, the last one part empty; H = 40: two blocks of
# BLOCK_H = 32 units, and products two BLOCK_K tiles deep; lengths 1..6 in every program
BATCH = 37
LENGTHS = [1 + (7 * k) % 6 for k in range(BATCH)]
ALL_OPTIONS = dict(
    layer_norm=True, peephole=True, cell_clip=0.5, zoneout=(0.3, 0.2), recurrent_dropout=0.3
)  # fmt: skip


# both directions (REVERSE, which reads the packed rows from the end) in half the cases: the
# interpreter takes 4-5 s a direction here
@pytest.mark.parametrize(
    "options, proj, training, bidirectional",
    [
        ({}, 0, True, True),
        ({}, 36, True, False),
        (ALL_OPTIONS, 0, True, False),
        (ALL_OPTIONS, 36, True, True),
        (ALL_OPTIONS, 36, False, False),  # evaluation: zoneout's one keep fraction, no dropout
        (dict(coupled_input_forget=True, weight_dropout=0.3), 0, True, True),
    ],
    ids=["plain", "projection", "all-options", "all-options-projection", "all-options-evaluation", "coupled"],
)
def test_several_programs_and_tiles_equal_reference(options, proj, training, bidirectional):
    assert BATCH > 2 * gpu.BLOCK_B and 40 > gpu.BLOCK_H and 40 > gpu.BLOCK_K
    results = _run_both(
        options, backend="triton", layers=1, bidirectional=bidirectional, proj=proj, lengths=LENGTHS, batch=BATCH,
        input_size=7, hidden_size=40, training=training, device=DEVICE,
    )  # fmt: skip
    _assert_close(results, options)


def test_float32_at_the_tiles_equals_reference():
    """float32 against float64 (1e-5 of each tensor's scale): IEEE products, no TF32."""
    results = _run_both(
        {}, backend="triton", layers=1, bidirectional=True, proj=0, lengths=LENGTHS, batch=BATCH,
        input_size=7, hidden_size=40, dtype=torch.float32, device=DEVICE,
    )  # fmt: skip
    _assert_close(results, {})


@pytest.mark.parametrize("dtype, bound", [(torch.bfloat16, 1e-2), (torch.float16, 1.5e-3)])
def test_half_precision_runs_in_float32(dtype, bound):
    """As the cpu backend: half types computed in float32, returned in the half type."""
    results = _run_both(
        dict(peephole=True, zoneout=0.2), backend="triton", lengths=[6, 2, 5, 1], dtype=dtype, device=DEVICE
    )
    for k, (a, b) in enumerate(zip(*([t.detach() for t in r] for r in results), strict=True)):
        assert a.dtype == dtype, f"item {k}: {a.dtype}"
        error = float((a.double() - b).abs().max())
        assert error <= bound * max(1.0, float(b.abs().max())), f"item {k}: error {error}"


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not gpu.runs_on(torch.device("cpu")) and gpu.runs_on(torch.device("cuda"))
    with pytest.raises(
        ValueError,
        match=r"backend 'triton' runs float16, bfloat16 \(in float32\), float32 and float64 tensors on CUDA "
        r"\(on the CPU only under TRITON_INTERPRET=1\), got torch.float32 on cpu",
    ):
        lstmkit.LSTM(3, 4, backend="triton")(torch.zeros(2, 1, 3))


def test_auto_keeps_the_torch_backend_for_cuda_tensors():
    """Not measured on a GPU yet (no device was lent): "auto" does not pick it."""
    like = torch.empty(0, device="meta")
    assert functional.kernel("auto", "lstm", like, 100) is not gpu.lstm_layer


def test_kernels_compile_for_a_cuda_device_without_one(tmp_path):
    """Triton compiles both kernels to an sm_90 binary for every compile-time branch (see
    _triton_compile.py), in fresh processes with the interpreter off and empty kernel caches:
    two at once, which share out the 20 cases (about 2 s each, one core each)."""
    script = Path(__file__).with_name("_triton_compile.py")
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(part), "2"],
            env={**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path / str(part))},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for part in range(2)
    ]
    results = [(p.communicate(timeout=900), p.returncode) for p in processes]
    for (stdout, stderr), returncode in results:
        assert returncode == 0, stdout[-2000:] + stderr[-4000:]
    assert sum(stdout.count(" ok\n") for (stdout, _), _ in results) == 20, [r[0][0] for r in results]
