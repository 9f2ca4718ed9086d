"""Compile backend "triton"'s kernels for a CUDA target, with no GPU: Triton's front end, LLVM and
the ptxas it ships run on any Linux machine. Catches what the interpreter lets through (globals
that are not constexpr, branches returning different types, unsupported dtypes in ``tl.dot``).

Run as a script with TRITON_INTERPRET unset (test_triton starts it in subprocesses); prints one
line per kernel and switch set, and exits non-zero at the first failure. ``_triton_compile.py K N``
compiles the K-th of every N cases (0-based), so that N processes share them out.
"""

import itertools
import os
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from lstmkit.kernels import gpu, triton_kernels

POINTERS = {"offsets": "*i64", "batch_sizes": "*i64", "gate_inside": "*u8"}
INTEGERS = {"steps", "batch", "size", "hidden_size"}
SWITCHES = [
    "REVERSE",
    "PEEPHOLE_I",
    "PEEPHOLE_F",
    "PEEPHOLE_O",
    "LAYER_NORM",
    "PROJECT",
    "RECURRENT",
    "COUPLED",
    "CLIPPING",
]


def switch_sets():
    """All switches off, all on, and every other one (so that layer norm runs without the
    projection and the projection without layer norm); zoneout's modes (off, per row, one value)
    crossed with them: every compile-time branch both taken and not."""
    yield dict.fromkeys(SWITCHES, False), (0, 0)
    yield dict.fromkeys(SWITCHES, True), (1, 2)
    yield dict.fromkeys(SWITCHES, True), (2, 1)
    yield {s: k % 2 == 0 for k, s in enumerate(SWITCHES)}, (0, 1)
    yield {s: k % 2 == 1 for k, s in enumerate(SWITCHES)}, (2, 0)


def compile_kernel(kernel, dtype: str, switches: dict, keep: tuple[int, int], capability: int):
    constexprs = {**switches, "KEEP_C": keep[0], "KEEP_H": keep[1], "BLOCK_B": gpu.BLOCK_B,
                  "BLOCK_H": gpu.BLOCK_H, "BLOCK_K": gpu.BLOCK_K}  # fmt: skip
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in INTEGERS:
            signature[name] = "i32"
        else:
            signature[name] = POINTERS.get(name, f"*{dtype}")
    return triton.compile(
        ASTSource(kernel, signature, constexprs), target=GPUTarget("cuda", capability, 32), options=gpu.LAUNCH
    )


def main(part: int = 0, parts: int = 1) -> int:
    assert os.environ.get("TRITON_INTERPRET", "0") == "0", "the interpreter compiles nothing"
    cases = itertools.product(
        switch_sets(), ("fp32", "fp64"), (triton_kernels.lstm_forward, triton_kernels.lstm_backward)
    )
    for (switches, keep), dtype, kernel in itertools.islice(cases, part, None, parts):
        on = [name for name, value in switches.items() if value]
        compiled = compile_kernel(kernel, dtype, switches, keep, capability=90)
        assert compiled.asm["cubin"], "ptxas produced no binary"
        print(kernel.__name__, dtype, keep, ",".join(on) or "-", "ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*map(int, sys.argv[1:])))
