"""Peak memory of one training step (forward + backward), lstmkit against torch.nn.LSTM.

Each measurement runs in a fresh process: it builds the model, runs one small step so that
kernels are compiled and libraries initialised, then one step at the case's size, and reports
how far that step raised the process's peak resident memory (``ru_maxrss``) above what the
process held before it. That counts every allocation of the step (torch's tensors, the
workspace autograd keeps, NumPy and BLAS buffers), not only torch's. The median over ``--repeats``
processes is reported with its ratio against nn.LSTM's.

    python benchmarks/bench_memory.py                        # (100, 64, 256), 3 processes each
    python benchmarks/bench_memory.py --case 50,128,256,2,bi --repeats 5
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys

import torch

import lstmkit
from bench_lstm import runner  # the same training step as the timings (this folder)
from lstmkit import compilation


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def child(impl: str, steps: int, batch: int, hidden: int, layers: int, bidirectional: bool) -> None:
    """Print the peak-memory rise of one training step, in MiB, as JSON."""
    torch.manual_seed(0)
    kwargs = dict(num_layers=layers, bidirectional=bidirectional)
    if impl == "nn.LSTM":
        model = torch.nn.LSTM(hidden, hidden, **kwargs)
    else:
        model = lstmkit.LSTM(hidden, hidden, **kwargs, backend=impl)
    runner(model, torch.randn(2, batch, hidden), "training")()  # compile, initialise, allocate gradients
    step = runner(model, torch.randn(steps, batch, hidden), "training")
    gc.collect()
    before = _peak_mib()
    step()
    print(json.dumps({"impl": impl, "rise_mib": _peak_mib() - before}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", default="100,64,256,1", help="T,B,H,layers[,bi]")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per implementation")
    parser.add_argument("--backends", default="cpu,torch", help="lstmkit backends, comma-separated")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    fields = args.case.split(",")
    steps, batch, hidden, layers = (int(v) for v in fields[:4])
    bidirectional = len(fields) > 4 and fields[4] == "bi"
    if args.child:
        child(args.child, steps, batch, hidden, layers, bidirectional)
        return

    # a child's "auto" on the compiled kernels from its first call, as in a long run (lstmkit.compilation)
    os.environ.setdefault(compilation.ENVIRONMENT, "wait")
    print(f"# peak training memory, case (T,B,H,layers)={args.case}, float32, {args.repeats} processes each")
    rises: dict[str, float] = {}
    for impl in ["nn.LSTM", *args.backends.split(",")]:
        values = []
        for _ in range(args.repeats):
            command = [sys.executable, __file__, "--case", args.case, "--child", impl]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            values.append(json.loads(result.stdout.strip().splitlines()[-1])["rise_mib"])
        rises[impl] = statistics.median(values)
        print(f"{impl}: {rises[impl]:.1f} MiB (runs: {', '.join(f'{v:.1f}' for v in values)})", flush=True)
    print("\n| case (T,B,H) | implementation | peak rise MiB | / nn.LSTM |\n|---|---|---|---|")
    base = rises["nn.LSTM"]
    for impl, rise in rises.items():
        ratio = f"{rise / base:.2f}x" if base > 0 else "n/a"  # a tiny case may not raise the peak
        print(f"| ({steps},{batch},{hidden}) | {impl} | {rise:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
