"""Time saved models independently of latprof's timing code, as a user would check a prune report.

A plain loop: one thread, the models interleaved in a shuffled order each round, each sample the
median of a few back-to-back calls, `time.perf_counter` only (no reference workload, no drift
normalisation, nothing from latprof.measure). Compares each model's median with what the prune
report (`--json`) says it measured, and the pruned model with the target: in milliseconds, and as
the ratio pruned / original in the same rounds (what the report's verdict rests on, and what does
not move with the machine's speed from one minute to the next).

    python bench/verify_saved.py out/demo/prune.json --original vgg16_cifar10 --batch 8
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch


def time_models(named: dict[str, torch.nn.Module], x: torch.Tensor, rounds: int, calls: int) -> dict[str, list[float]]:
    out = {name: [] for name in named}
    order = list(named)
    with torch.inference_mode():
        for m in named.values():       # warm-up
            for _ in range(3):
                m(x)
        for _ in range(rounds):
            random.shuffle(order)
            for name in order:
                per_call = []
                for _ in range(calls):
                    t0 = time.perf_counter()
                    named[name](x)
                    per_call.append(time.perf_counter() - t0)
                out[name].append(statistics.median(per_call) * 1e3)
    return out


def settle_malloc() -> None:
    """glibc: large blocks from the heap (mmap threshold 32 MiB) and freed memory kept (trim
    threshold 1 GiB), as a long-running process's allocator ends up; no-op elsewhere."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 32 * 1024 * 1024)   # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1024 * 1024 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path, help="the prune report written with --json")
    ap.add_argument("--original", required=True, help="the model name or file.py:factory that was pruned")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fresh-malloc", action="store_true",
                    help="leave glibc malloc's thresholds as a fresh process has them (default: fixed, as a "
                         "long-running process's settle; a fresh process page-faults large activations for a while)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not args.fresh_malloc:
        settle_malloc()
    report = json.loads(args.report.read_text())
    from latprof import models  # only to build the unpruned model; its weights do not matter for latency

    original, size = models.load(args.original)
    pruned = torch.load(report["files"]["model"], weights_only=False)
    named = {"original": original.eval(), "pruned": pruned.eval()}
    x = torch.randn(args.batch, *size)
    got = time_models(named, x, args.rounds, args.calls)
    said = {"original": report["original"]["measured_ms"], "pruned": report["pruned"]["measured_ms"]}
    print(f"{'model':10s} {'independent ms':>15s} {'p25-p75':>17s} {'report ms':>10s} {'report/indep':>12s}")
    for name, samples in got.items():
        q = statistics.quantiles(samples, n=4)
        med = statistics.median(samples)
        ratio = f"{said[name] / med:12.3f}" if said[name] else f"{'n/a':>12s}"
        print(f"{name:10s} {med:15.3f} {q[0]:8.3f}-{q[2]:8.3f} {said[name] or float('nan'):10.3f} {ratio}")
    target, med = report["target_ms"], statistics.median(got["pruned"])
    print(f"target {target:.3f} ms: independently {'met' if med <= target else 'MISSED'} "
          f"({med:.3f} ms, {med / target - 1:+.1%}); the report said {report.get('verdict', report['target_met'])}")
    # the same rounds: the pruned model's time over the original's cancels this minute's machine speed
    ratio = statistics.median(p / o for p, o in zip(got["pruned"], got["original"]))
    said_ratio = report["pruned"].get("measured_ratio")
    line = f"ratio pruned / original {ratio:.4f} independently"
    if said_ratio:
        line += f", {said_ratio:.4f} in the report ({said_ratio / ratio - 1:+.1%})"
    if report.get("target_ratio"):
        r = report["target_ratio"]
        line += f"; target ratio {r:g}: independently {'met' if ratio <= r else 'MISSED'} ({ratio / r - 1:+.1%})"
    print(line)


if __name__ == "__main__":
    main()
