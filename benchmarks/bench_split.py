"""Streaming inference at batch 1 on the split kernel (``kernels/cpu_split.py``): microseconds a
step with the cell units split over two cores, on one core's recurrence (the "cpu" kernel with
the split turned off, as on machines where it does not pay), and in torch.nn.LSTM, for float32 and
float64, in one process.

A case is (T, 1, I=H). Each round runs the three calls in a new shuffled order, so that machine
noise and the after-effects of one call on the next hit all alike; the median over rounds is
reported. The split runs on two of torch's OpenMP threads (``--threads``, 2 by default); where
``cpu_split.splits`` does not split a case (a W_hh under ``MIN_SPLIT_BYTES_AVX512`` on AVX-512
processors), its first two columns time the same code.

    python benchmarks/bench_split.py                       # H = 32, 64, 128; T = 400; 60 rounds
    python benchmarks/bench_split.py --sizes 64 --rounds 200
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time

import torch

import lstmkit
from lstmkit.kernels import cpu, cpu_split

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def measure(size: int, dtype: torch.dtype, steps: int, rounds: int, rng: random.Random) -> dict[str, float]:
    """Median µs a step of each way of running one (steps, 1, size) inference call."""
    torch.manual_seed(0)
    model = lstmkit.LSTM(size, size, backend="cpu").to(dtype)
    reference = torch.nn.LSTM(size, size).to(dtype)
    reference.load_state_dict(model.state_dict())
    x = torch.randn(steps, 1, size, dtype=dtype)
    splits = cpu_split.splits
    ways = {
        "split": (model, splits),
        "one core": (model, lambda *arguments: False),
        "nn.LSTM": (reference, splits),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    try:
        with torch.no_grad():
            for module, cpu_split.splits in ways.values():  # compiled, loaded and warm before timing
                module(x)
            for _ in range(rounds):
                for name in rng.sample(list(ways), len(ways)):
                    module, cpu_split.splits = ways[name]
                    start = time.perf_counter()
                    module(x)
                    times[name].append(time.perf_counter() - start)
    finally:
        cpu_split.splits = splits
    return {name: statistics.median(values) * 1e6 / steps for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="32,64,128", help="cell sizes H (= I), comma-separated")
    parser.add_argument("--dtypes", default="float32,float64", help="of " + ", ".join(DTYPES))
    parser.add_argument("--steps", type=int, default=400, help="T of each call")
    parser.add_argument("--rounds", type=int, default=60, help="timed rounds per case (median reported)")
    parser.add_argument("--seed", type=int, default=None, help="of the rounds' order")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the split needs 2 or more)")
    args = parser.parse_args()
    if args.threads < 2:
        parser.error(f"the split needs two torch threads or more, got --threads {args.threads}")
    torch.set_num_threads(args.threads)
    dtypes = [DTYPES[name] for name in args.dtypes.split(",")]
    rng = random.Random(args.seed)
    print(f"# {platform.machine()} {cpu.target_machine()[1]}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, T = {args.steps}, {args.rounds} rounds")  # fmt: skip
    print(
        "| H | dtype | split µs/step | one core µs/step | nn.LSTM µs/step | split / nn.LSTM | split / one core |"
    )
    print("|---|---|---|---|---|---|---|")
    for size in map(int, args.sizes.split(",")):
        for dtype in dtypes:
            t = measure(size, dtype, args.steps, args.rounds, rng)
            print(f"| {size} | {str(dtype).removeprefix('torch.')} | {t['split']:.2f} | {t['one core']:.2f} | "
                  f"{t['nn.LSTM']:.2f} | {t['split'] / t['nn.LSTM']:.2f}x | "
                  f"{t['split'] / t['one core']:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
