"""Time lstmkit.LSTM against torch.nn.LSTM, lstmkit.RNN against torch.nn.RNN and lstmkit.LSTMCell
against torch.nn.LSTMCell, in one process.

Four tables. Shapes: for each case (T, B, I=H, layers, bidirectional) and mode (inference:
forward under no_grad; training: forward + backward), every lstmkit backend and torch.nn.LSTM
run the same input (each module with its own initial weights: the times do not depend on their
values). Variants: training at (100, 32, 128) with one variant
option each (docs/variants.md), against plain torch.nn.LSTM at the same size. RNN: the plain
RNN (tanh) at four of the shapes, against torch.nn.RNN. One step: an LSTMCell and a sequence of
one step (token by token), at batch 1 and 32, with 20 times the rounds (a call takes tens of
microseconds); the streaming cases (batch 1) take 5 times the rounds. Calls are interleaved
round by round, in an order shuffled every round (a new seed each run unless --seed), so that machine noise and the
after-effects of one call on the next hit all alike; the median over rounds is reported with its
ratio against the torch.nn module. Output: a '#' header (machine, versions, threads), CSV rows,
then markdown tables for BENCHMARKS.md.

    python benchmarks/bench_lstm.py                 # everything, 7 rounds
    python benchmarks/bench_lstm.py --quick         # tiny smoke run
    python benchmarks/bench_lstm.py --device cuda   # on a GPU: backends auto, triton, torch, and
                                                    # flashrnn's anchor (T=1024, B=16, H=768) too
    python benchmarks/bench_lstm.py --step-products mkl  # the kernel's steps on MKL on any x86-64
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit
from lstmkit import compilation, precompile


@dataclass(frozen=True)
class Case:
    steps: int
    batch: int
    hidden: int
    layers: int = 1
    bidirectional: bool = False
    options: dict = field(default_factory=dict)  # lstmkit-only variant options
    packed: bool = False  # variable lengths in [T/2, T], as a PackedSequence
    label: str = ""
    kind: str = "LSTM"  # or "RNN", "LSTMCell": lstmkit's class of that name against torch.nn's

    def __str__(self) -> str:
        extra = f", {self.layers} layers" if self.layers > 1 else ""
        extra += ", bidirectional" if self.bidirectional else ""
        return f"({self.steps},{self.batch},{self.hidden}){extra}"


SHAPES = [
    Case(100, 32, 128),
    Case(200, 1, 64),
    Case(100, 64, 256),
    Case(1000, 1, 128),
    Case(50, 128, 256, layers=2, bidirectional=True),
]
VARIANTS = [
    Case(100, 32, 128, label="plain"),
    Case(100, 32, 128, options=dict(layer_norm=True), label="layer_norm"),
    Case(100, 32, 128, options=dict(peephole=True), label="peephole"),
    Case(100, 32, 128, options=dict(coupled_input_forget=True), label="coupled_input_forget"),
    Case(100, 32, 128, options=dict(cell_clip=3.0), label="cell_clip=3"),
    Case(100, 32, 128, options=dict(zoneout=0.1), label="zoneout=0.1"),
    Case(100, 32, 128, options=dict(recurrent_dropout=0.25), label="recurrent_dropout=0.25"),
    Case(100, 32, 128, options=dict(weight_dropout=0.5), label="weight_dropout=0.5"),
    Case(100, 32, 128, options=dict(proj_size=64), label="proj_size=H/2"),
    Case(100, 32, 128, packed=True, label="packed lengths"),
]
# the GPU anchor, from flashrnn's own H100 figures (cuDNN fp16 2.01 ms forward)
GPU_SHAPES = [*SHAPES, Case(1024, 16, 768, label="(1024,16,768), flashrnn's anchor")]
QUICK_SHAPES = [Case(10, 4, 16), Case(10, 2, 16, layers=2, bidirectional=True)]
QUICK_VARIANTS = [Case(10, 4, 16, options=dict(layer_norm=True, zoneout=0.1), label="layer_norm+zoneout")]
RNN_SHAPES = [Case(c.steps, c.batch, c.hidden, kind="RNN") for c in SHAPES if c.layers == 1]
QUICK_RNN = [Case(10, 4, 16, kind="RNN")]
# one step: a cell, and a sequence of one step (token by token), at batch 1 and 32
STEP_SHAPES = [
    Case(1, 1, 64, kind="LSTMCell", label="LSTMCell (B=1, H=64)"),
    Case(1, 32, 128, kind="LSTMCell", label="LSTMCell (B=32, H=128)"),
    Case(1, 1, 64, label="LSTM (1,1,64)"),
    Case(1, 32, 128, label="LSTM (1,32,128)"),
]
QUICK_STEPS = [Case(1, 2, 16, kind="LSTMCell", label="LSTMCell (B=2, H=16)")]


def runner(module: torch.nn.Module, x, mode: str) -> Callable[[], None]:
    """One call; on CUDA it waits for the device, so that the clock times the kernels."""
    wait = torch.cuda.synchronize if x.is_cuda else lambda: None
    if mode == "inference":

        def run() -> None:
            with torch.no_grad():
                module(x)
            wait()

        return run

    def run() -> None:
        module.zero_grad(set_to_none=True)
        out, state = module(x)  # state: (h, c), or h for an RNN
        out = out.data if isinstance(out, torch.nn.utils.rnn.PackedSequence) else out
        (out.sum() + sum(s.sum() for s in (state if isinstance(state, tuple) else (state,)))).backward()
        wait()

    return run


def measure(
    case: Case, mode: str, backends: list[str], rounds: int, device: str = "cpu", seed: int = 0
) -> dict[str, list[float]]:
    """Times in ms per round: the plain torch.nn module of the case's kind and size ("nn.LSTM" or
    "nn.RNN"), then each lstmkit backend."""
    torch.manual_seed(0)
    torch_class, our_class = getattr(torch.nn, case.kind), getattr(lstmkit, case.kind)
    cell = case.kind.endswith("Cell")
    sizes = (case.hidden, case.hidden) if cell else (case.hidden, case.hidden, case.layers)
    layout = {} if cell else {"bidirectional": case.bidirectional}
    theirs = torch_class(*sizes, **layout).to(device)
    x = torch.randn(*(() if cell else (case.steps,)), case.batch, case.hidden, device=device)
    calls = {f"nn.{case.kind}": runner(theirs, x, mode)}
    ours_input = x
    if case.packed:
        lengths = torch.randint(case.steps // 2, case.steps + 1, (case.batch,))
        ours_input = pack_padded_sequence(x, lengths, enforce_sorted=False)  # lengths stay on the CPU
    for backend in backends:
        ours = our_class(*sizes, **layout, backend=backend, **case.options).to(device)
        calls[backend] = runner(ours, ours_input, mode)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():  # warm-up
        call()
    names, order = list(calls), random.Random(seed)
    for _ in range(rounds):
        # a new order every round: a call right after nn.LSTM meets its OpenMP workers still
        # spinning and its cache contents, so no implementation may always follow the same one
        order.shuffle(names)
        for name in names:
            start = time.perf_counter()
            calls[name]()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def kernel_libraries() -> str:
    """What the compiled kernel's speed depends on: which BLAS runs its per-step products (MKL's
    packed gemm on Intel and where OpenBLAS has no small-matrix path, else OpenBLAS, whose kernel
    type a forced OPENBLAS_CORETYPE can halve), which library the whole-sequence products, and
    torch's OpenMP pool."""
    import scipy.linalg  # noqa: F401  (loads the OpenBLAS that the kernel calls)
    from threadpoolctl import threadpool_info

    from lstmkit.kernels import cpu, matmul, mkl, pool

    cores = sorted({i.get("architecture", "?") for i in threadpool_info() if i["internal_api"] == "openblas"})
    forced = os.environ.get("OPENBLAS_CORETYPE")
    whole = "oneDNN" if matmul.ONEDNN_PRODUCTS and matmul._onednn_available() else "torch.matmul"
    return (
        f"Intel processor: {mkl.intel()}; float32 step products: {cpu.step_products()}; whole-sequence products: {whole}; "
        f"OpenBLAS kernels: {', '.join(cores)} (OPENBLAS_CORETYPE {'=' + forced if forced else 'unset'}); "
        f"torch's OpenMP pool: {pool._openmp() is not None}"
    )


def compiled() -> str:
    """The float32 kernels compiled (or loaded from the disk cache) before the first round, and
    ``"auto"`` made to take them from its first call (``lstmkit.compilation``)."""
    os.environ.setdefault(compilation.ENVIRONMENT, "wait")
    if "cpu" not in lstmkit.functional.available():
        return "no compiled CPU kernels (Numba is not installed)"
    started = time.perf_counter()
    precompile.compile_kernels([torch.float32])
    seconds = time.perf_counter() - started
    return f"float32 kernels in the disk cache (lstmkit.precompile: {seconds:.1f} s; 0 where they were there)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per case (median reported)")
    parser.add_argument(
        "--backends",
        default=None,
        help="lstmkit backends, comma-separated (default: auto,cpu,torch,reference; on CUDA auto,triton,torch)",
    )
    parser.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="where models and inputs live"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="tiny cases, for a smoke test")
    parser.add_argument(
        "--step-products",
        default="auto",
        choices=["auto", "mkl", "openblas"],
        help="the library of the compiled kernel's float32 per-step products (default: the machine's "
        "choice: MKL's packed gemm on Intel processors and where OpenBLAS has no small-matrix path, "
        "else OpenBLAS); every product on the one asked for, to measure it",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the call orders (default: a new one each run, printed in the header; one fixed "
        "seed repeats the same orders in every run, and with them the same after-effects on a column)",
    )
    args = parser.parse_args()
    if args.step_products != "auto":
        from lstmkit.kernels import cpu, mkl

        if args.step_products == "mkl" and not mkl.available():
            parser.error("--step-products mkl: this torch build exports no MKL packed gemm")
        cpu.MKL_PRODUCTS = cpu.MKL_SINGLE_ROWS = args.step_products == "mkl"  # every product
    if args.threads:
        torch.set_num_threads(args.threads)
    # one allocator policy for every implementation: without it, whether a step faults its
    # tensors' pages in again depends on the order of allocations (lstmkit.memory)
    kept = lstmkit.memory.keep_freed_memory()
    default = "auto,triton,torch" if args.device == "cuda" else "auto,cpu,torch,reference"
    backends = (args.backends or default).split(",")

    print(
        f"# machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} torch threads"
    )
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(
        f"# torch {torch.__version__}, lstmkit {lstmkit.__version__}, float32, {where}, {args.rounds} rounds"
    )
    seed = random.SystemRandom().randrange(2**32) if args.seed is None else args.seed
    print(
        f"# malloc keeps freed memory (lstmkit.memory.keep_freed_memory): {kept}; call orders: --seed {seed}"
    )
    if args.device == "cpu":
        print(f"# {kernel_libraries()}")
        print(f"# {compiled()}")
    print("table,case,mode,backend,ms_median,ms_p10,ms_p90,ratio_vs_torch_nn")
    tables: dict[str, list[list[str]]] = {"shapes": [], "variants": [], "rnn": [], "steps": []}
    shapes = QUICK_SHAPES if args.quick else GPU_SHAPES if args.device == "cuda" else SHAPES
    plan = [("shapes", c, m) for c in shapes for m in ("inference", "training")]
    plan += [("variants", c, "training") for c in (QUICK_VARIANTS if args.quick else VARIANTS)]
    rnn_backends = [b for b in backends if b in lstmkit.functional.available("rnn")]
    rnn_shapes = QUICK_RNN if args.quick else RNN_SHAPES
    plan += [("rnn", c, m) for c in rnn_shapes for m in ("inference", "training")] if rnn_backends else []
    plan += [
        ("steps", c, m)
        for c in (QUICK_STEPS if args.quick else STEP_SHAPES)
        for m in ("inference", "training")
    ]
    for table, case, mode in plan:
        # short calls take more rounds: their medians move most with the machine's noise
        rounds = args.rounds * (20 if table == "steps" else 5 if case.batch == 1 else 1)
        times = measure(case, mode, rnn_backends if table == "rnn" else backends, rounds, args.device, seed)
        base = statistics.median(times[f"nn.{case.kind}"])
        row = [case.label or str(case), mode, f"{base:.2f}"]
        for name, values in times.items():
            median = statistics.median(values)
            deciles = statistics.quantiles(values, n=10) if len(values) > 1 else [median] * 9
            print(
                f'{table},"{row[0]}",{mode},{name},{median:.3f},{deciles[0]:.3f},{deciles[-1]:.3f},{median / base:.2f}',
                flush=True,
            )
            if not name.startswith("nn."):
                row.append(f"{median / base:.2f}x")
        tables[table].append(row)
    headers = (
        ("shapes", "case (T,B,I=H)", "nn.LSTM", backends),
        ("variants", "training (100,32,128), option", "nn.LSTM", backends),
        ("rnn", "RNN case (T,B,I=H)", "nn.RNN", rnn_backends),
        ("steps", "one step", "torch.nn", backends),
    )
    for table, first, theirs, names in headers:
        if not tables[table]:
            continue
        ratios = " | ".join(f"lstmkit {b} / {theirs}" for b in names)
        print(f"\n| {first} | mode | {theirs} ms | {ratios} |")
        print("|---|---|---|" + "---|" * len(names))
        for row in tables[table]:
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
