"""Time lstmkit.LSTM against torch.nn.LSTM in the same process.

For each case (T, B, I=H, layers, bidirectional) and mode (inference: forward under no_grad;
training: forward + backward), every backend and torch.nn.LSTM run the same input with the same
weights, interleaved round by round so that machine noise hits all alike; the median over
rounds is reported with the ratio against nn.LSTM. Output: a '#' header (machine, versions,
threads), CSV rows, then a markdown table for BENCHMARKS.md.

    python benchmarks/bench_lstm.py                 # all cases, 7 rounds
    python benchmarks/bench_lstm.py --quick         # tiny smoke run
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

import lstmkit


@dataclass(frozen=True)
class Case:
    steps: int
    batch: int
    hidden: int
    layers: int = 1
    bidirectional: bool = False

    def __str__(self) -> str:
        extra = f", {self.layers} layers" if self.layers > 1 else ""
        extra += ", bidirectional" if self.bidirectional else ""
        return f"({self.steps},{self.batch},{self.hidden}){extra}"


CASES = [
    Case(100, 32, 128),
    Case(200, 1, 64),
    Case(100, 64, 256),
    Case(1000, 1, 128),
    Case(50, 128, 256, layers=2, bidirectional=True),
]
QUICK = [Case(10, 4, 16), Case(10, 2, 16, layers=2, bidirectional=True)]


def _runner(module: torch.nn.Module, x: torch.Tensor, mode: str) -> Callable[[], None]:
    if mode == "inference":

        def run() -> None:
            with torch.no_grad():
                module(x)

        return run

    leaf = x.clone().requires_grad_()

    def run() -> None:
        module.zero_grad(set_to_none=True)
        out, (h, c) = module(leaf)
        (out.sum() + h.sum() + c.sum()).backward()
        leaf.grad = None

    return run


def measure(case: Case, mode: str, backends: list[str], rounds: int) -> dict[str, list[float]]:
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(case.hidden, case.hidden, case.layers, bidirectional=case.bidirectional)
    runners = {"nn.LSTM": theirs}
    for backend in backends:
        runners[backend] = lstmkit.LSTM.from_torch(theirs, backend=backend)
    x = torch.randn(case.steps, case.batch, case.hidden)
    calls = {name: _runner(module, x, mode) for name, module in runners.items()}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():  # warm-up
        call()
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per case (median reported)")
    parser.add_argument("--backends", default="torch,reference", help="lstmkit backends, comma-separated")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="tiny cases, for a smoke test")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    backends = args.backends.split(",")

    print(
        f"# machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} torch threads"
    )
    print(f"# torch {torch.__version__}, lstmkit {lstmkit.__version__}, float32, CPU, {args.rounds} rounds")
    print("case,mode,backend,ms_median,ms_p10,ms_p90,ratio_vs_nn_lstm")
    table = []
    for case in QUICK if args.quick else CASES:
        for mode in ("inference", "training"):
            times = measure(case, mode, backends, args.rounds)
            base = statistics.median(times["nn.LSTM"])
            row = [str(case), mode, f"{base:.2f}"]
            for name, values in times.items():
                median = statistics.median(values)
                deciles = statistics.quantiles(values, n=10) if len(values) > 1 else [median] * 9
                print(
                    f'"{case}",{mode},{name},{median:.3f},{deciles[0]:.3f},{deciles[-1]:.3f},{median / base:.2f}',
                    flush=True,
                )
                if name != "nn.LSTM":
                    row.append(f"{median / base:.2f}x")
            table.append(row)
    print()
    print(
        "| case (T,B,I=H) | mode | nn.LSTM ms | "
        + " | ".join(f"lstmkit {b} / nn.LSTM" for b in backends)
        + " |"
    )
    print("|---|---|---|" + "---|" * len(backends))
    for row in table:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
