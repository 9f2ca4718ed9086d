"""What the first calls cost: the compiled CPU kernels from an empty disk cache, waited for or
compiled in the background (lstmkit.compilation).

Every measurement runs in a fresh process, on a new empty NUMBA_CACHE_DIR (a temporary folder)
unless --cache names one (``--cache default``: the cache Numba would use anyway, for a smoke test):

- first calls, LSTMKIT_COMPILE=wait: import, a first inference call (T, B, H), a first training
  call, an LSTMCell's inference and training step, an RNN's; each compiles what it needs. Then
  the same in a second process on the cache the first one filled.
- a training loop (forward, backward, SGD step) at (T, B, H) for --seconds, from an empty cache,
  in the default mode (the PyTorch-ops backend while a background process compiles, then the
  compiled kernels) and with LSTMKIT_COMPILE=wait: the first call, the calls before and after
  the compiled kernels took over, and when they did.

    python benchmarks/bench_first_call.py                        # (100,32,128), 40 s loops
    python benchmarks/bench_first_call.py --case 50,1,64 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def first_calls(steps: int, batch: int, hidden: int) -> dict[str, float]:
    started = time.perf_counter()
    import torch

    import lstmkit

    times = {"import": time.perf_counter() - started}

    def timed(name, call):
        start = time.perf_counter()
        call()
        times[name] = time.perf_counter() - start

    x = torch.randn(steps, batch, hidden)
    lstm, cell, rnn = (
        lstmkit.LSTM(hidden, hidden),
        lstmkit.LSTMCell(hidden, hidden),
        lstmkit.RNN(hidden, hidden),
    )
    with torch.no_grad():
        timed("LSTM inference", lambda: lstm(x))
    timed("LSTM training", lambda: lstm(x)[0].sum().backward())
    with torch.no_grad():
        timed("LSTMCell inference", lambda: cell(x[0]))
    timed("LSTMCell training", lambda: cell(x[0])[0].sum().backward())
    with torch.no_grad():
        timed("RNN inference", lambda: rnn(x))
    timed("RNN training", lambda: rnn(x)[0].sum().backward())
    return times


def loop(steps: int, batch: int, hidden: int, seconds: float) -> dict[str, float]:
    started = time.perf_counter()
    import torch

    import lstmkit
    from lstmkit import compilation, functional

    lstmkit.memory.keep_freed_memory()
    model = lstmkit.LSTM(hidden, hidden)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(steps, batch, hidden)
    compiled = functional.LSTM_BACKENDS.get("cpu")
    calls = []  # (start after the import, seconds, on the compiled kernels)
    begun = time.perf_counter()
    while time.perf_counter() - begun < seconds:
        # which kernels this call takes: asked before it (the same question as the call's own)
        on_compiled = compiled is not None and functional.kernel("auto", "lstm", x, steps) is compiled
        start = time.perf_counter()
        optimizer.zero_grad()
        model(x)[0].pow(2).mean().backward()
        optimizer.step()
        calls.append((start - begun, time.perf_counter() - start, on_compiled))
    compilation.wait()  # leave no compilation behind
    before = [c for c in calls[1:] if not c[2]]
    after = [c for c in calls if c[2]]
    return {
        "import": begun - started,
        "first call": calls[0][1],
        "calls on torch": len(before),
        "median on torch": statistics.median(c[1] for c in before) if before else float("nan"),
        "compiled from": after[0][0] if after else float("nan"),
        "first compiled call": after[0][1] if after else float("nan"),
        "compiled calls": len(after),
        "median compiled": statistics.median(c[1] for c in after[1:]) if len(after) > 1 else float("nan"),
    }


def run(child: str, args: argparse.Namespace, cache: str, mode: str) -> dict[str, float]:
    environment = {**os.environ, "LSTMKIT_COMPILE": mode}
    if cache != "default":
        environment["NUMBA_CACHE_DIR"] = cache
    command = [
        sys.executable,
        __file__,
        "--child",
        child,
        "--case",
        args.case,
        "--seconds",
        str(args.seconds),
    ]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def show(title: str, values: dict[str, float]) -> None:
    items = (f"{k} {v:.3f} s" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
    print(f"{title}: " + "; ".join(items), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", default="100,32,128", help="T,B,H of the calls")
    parser.add_argument("--seconds", type=float, default=40.0, help="length of each training loop")
    parser.add_argument(
        "--cache",
        default=None,
        help="this NUMBA_CACHE_DIR instead of new empty ones ('default': Numba's own)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps, batch, hidden = (int(v) for v in args.case.split(","))
    if args.child:
        result = (
            first_calls(steps, batch, hidden)
            if args.child == "first"
            else loop(steps, batch, hidden, args.seconds)
        )
        print(json.dumps(result))
        return

    print(f"# first calls at (T,B,H)=({args.case}), float32; a new empty disk cache for each part")
    with tempfile.TemporaryDirectory() as folder:
        caches = [args.cache or os.path.join(folder, name) for name in ("first", "background", "wait")]
        show("empty cache, wait", run("first", args, caches[0], "wait"))
        show("filled cache", run("first", args, caches[0], "wait"))
        show(f"training loop of {args.seconds:g} s, background", run("loop", args, caches[1], "background"))
        show(f"training loop of {args.seconds:g} s, wait", run("loop", args, caches[2], "wait"))


if __name__ == "__main__":
    main()
