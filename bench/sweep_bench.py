"""Sweep benchmark: throughput, noise, and re-sweep agreement with and without drift normalisation.

Sweeps the same shapes twice, `--gap` seconds apart, into two fresh tables with the default
(full) protocol, then compares them shape by shape. Writes `sweep_<device>.json` and `.md`
under --out, with the machine info and the command that reproduces them.

    python bench/sweep_bench.py --out bench/results
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import write_results

from latprof.measure import sweep as sweep
from latprof.tables import io as tbl
from latprof.spec import KEY_FIELDS
from latprof.measure.timing import Protocol


def rel_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) / np.minimum(a, b)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vgg16_cifar10")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--every", type=int, default=16, help="every k-th channel count of each line")
    ap.add_argument("--gap", type=float, default=60.0, help="seconds between the two sweeps")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="latprof-bench-"))
    runs = []
    for i in (1, 2):
        cfg = sweep.SweepConfig(model=args.model, batches=(args.batch,), every=args.every,
                                out=work / f"sweep{i}.parquet", protocol=Protocol(), progress=True)
        summary = sweep.run(cfg)
        runs.append(summary)
        if i == 1:
            time.sleep(args.gap)
    a, b = (tbl.read(work / f"sweep{i}.parquet") for i in (1, 2))
    # put both sweeps on the first one's reference baseline (what `latprof tables merge` does)
    scale = a.meta["reference"]["baseline_us"] / b.meta["reference"]["baseline_us"]
    j = a.df.merge(b.df, on=list(KEY_FIELDS), suffixes=("_1", "_2"))
    raw = rel_diff(j["latency_us_p50_1"].to_numpy(), j["latency_us_p50_2"].to_numpy())
    norm = rel_diff(j["latency_norm_us_p50_1"].to_numpy(), scale * j["latency_norm_us_p50_2"].to_numpy())
    both = np.concatenate([a.df["rel_iqr"], b.df["rel_iqr"]])
    both_norm = np.concatenate([a.df["rel_iqr_norm"], b.df["rel_iqr_norm"]])
    result = {
        "command": "python bench/sweep_bench.py " + " ".join(shlex.quote(x) for x in sys.argv[1:]),
        "machine": {"cpu": a.meta["device"]["name"], "logical_cpus": a.meta["device"].get("logical_cpus"),
                    "threads": a.meta["protocol"]["threads"], "python": platform.python_version(),
                    "torch": a.meta["versions"]["torch"], "platform": platform.platform()},
        "workload": f"{args.model} conv lines, batch {args.batch}, every {args.every}th channel count",
        "protocol": Protocol().to_dict(),
        "shapes": int(len(j)),
        "shapes_per_minute": [round(60 * r.measured / r.seconds, 1) for r in runs],
        "median_rel_iqr_raw": float(np.median(both)),
        "median_rel_iqr_norm": float(np.median(both_norm)),
        "noisy_rows": int(a.df["flag_noisy"].sum() + b.df["flag_noisy"].sum()),
        "drift_rows": int(a.df["flag_drift"].sum() + b.df["flag_drift"].sum()),
        "reference_baseline_us": [a.meta["reference"]["baseline_us"], b.meta["reference"]["baseline_us"]],
        "resweep_gap_s": args.gap,
        "resweep_rel_diff_raw": {"median": float(np.median(raw)), "p90": float(np.quantile(raw, 0.9))},
        "resweep_rel_diff_norm": {"median": float(np.median(norm)), "p90": float(np.quantile(norm, 0.9))},
        "when": tbl.now_iso(),
    }
    slug = a.meta["device"]["slug"]
    md = [f"# Sweep benchmark on {result['machine']['cpu']} ({result['when']})", "",
          f"Command: `{result['command']}`", "",
          f"Workload: {result['workload']}; {result['shapes']} shapes, swept twice {args.gap:.0f} s apart.", "",
          "| figure | value |", "|---|---|",
          f"| shapes per minute (sweep 1, sweep 2) | {result['shapes_per_minute'][0]}, "
          f"{result['shapes_per_minute'][1]} |",
          f"| median relative IQR, raw | {result['median_rel_iqr_raw']:.3f} |",
          f"| median relative IQR, drift-normalised | {result['median_rel_iqr_norm']:.3f} |",
          f"| rows flagged noisy / drifted (of {2 * result['shapes']}) | {result['noisy_rows']} / "
          f"{result['drift_rows']} |",
          f"| re-sweep relative difference, raw: median / p90 | {result['resweep_rel_diff_raw']['median']:.3f} / "
          f"{result['resweep_rel_diff_raw']['p90']:.3f} |",
          f"| re-sweep relative difference, normalised: median / p90 | "
          f"{result['resweep_rel_diff_norm']['median']:.3f} / {result['resweep_rel_diff_norm']['p90']:.3f} |"]
    write_results(args.out, f"sweep_{slug}", result, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
