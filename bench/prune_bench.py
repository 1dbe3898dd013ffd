"""Latency model accuracy, search time, and latprof vs FLOPs-matched baselines, on this CPU.

1. For each model: a sparse sweep (lines + grid) into a fresh table; the latency model is
   calibrated on three whole-model measurements (full, smallest, middle options), then
   predicts `--configs` random channel configurations (held out from the calibration), which
   are built and measured in one interleaved, drift-compensated run. Reported: share of
   predictions within +-5% and +-10% of the measurement, median absolute error.
2. Search time of dp, evo and abc on resnet50 with a complete synthetic table (the search only
   reads the table; its timing does not depend on where the numbers came from).
3. For vgg16_cifar10 at 60% of its latency: latprof vs a uniform keep ratio and Torch-Pruning's
   L1 magnitude pruner (round_to=8) at the same MACs, all measured in one run.

    python bench/prune_bench.py --out bench/results
"""

from __future__ import annotations

import argparse
import copy
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import write_results

from latprof import env, models
from latprof.prune import graph as graphs
from latprof.prune import latmodel as latmodel
from latprof.prune import pipeline as pruning
from latprof.prune import surgery as surgery
from latprof.measure import sweep as sweep
from latprof.tables import io as tbl
from latprof.measure.device import cpu_device
from latprof.measure.modeltime import measure_models
from latprof.measure.timing import Clock, Protocol

MODELS = {"vgg16_cifar10": 8, "resnet18": 1, "mobilenet_v2": 1}


def accuracy(model: str, batch: int, work: Path, n_configs: int, protocol: Protocol, seed: int) -> dict:
    path = work / f"{model}.parquet"
    t0 = time.monotonic()
    s = sweep.run(sweep.SweepConfig(model=model, batches=(batch,), out=path, protocol=protocol, progress=True))
    sweep_s = time.monotonic() - t0
    t = tbl.read(path)
    ctx = tbl.context(t)
    net, size = models.load(model)
    g = graphs.analyse(copy.deepcopy(net), size)
    lm = latmodel.build(g, t, ctx)
    rng = np.random.default_rng(seed)
    full = lm.full_counts()
    calib = [full, [o[0] for o in lm.options], [o[len(o) // 2] for o in lm.options]]
    configs = [[o[rng.integers(len(o))] for o in lm.options] for _ in range(n_configs)]
    nets = [pruning._pruned_copy(net, size, pruning.PruneConfig(model, str(path)), c) for c in calib + configs]
    dev, clock = cpu_device(), Clock(t.meta["protocol"]["threads"])
    measured = measure_models(nets, size, batch, ctx.dtype, dev, clock, protocol,
                              baseline_us=t.meta["reference"]["baseline_us"])
    lm.scale, lm.rest_us = latmodel.fit_calibration([lm.conv_sum(c) for c in calib], measured[:3])
    pred = np.array([lm.predict(c) for c in configs])
    meas = np.array(measured[3:])
    err = pred / meas - 1
    return {"model": model, "batch": batch, "sweep_shapes": s.measured, "sweep_seconds": round(sweep_s, 1),
            "configs": n_configs, "scale": lm.scale, "rest_us": lm.rest_us,
            "within_5pct": float(np.mean(np.abs(err) <= 0.05)), "within_10pct": float(np.mean(np.abs(err) <= 0.10)),
            "median_abs_error": float(np.median(np.abs(err))), "max_abs_error": float(np.max(np.abs(err))),
            "table": str(path)}


def search_times(work: Path) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from synthetic import model_table
    from latprof.search import run_search
    from latprof.prune.importance import option_values

    path = model_table(work / "resnet50_synthetic.parquet", "resnet50", every=1, grid=True)
    t = tbl.read(path)
    net, size = models.load("resnet50")
    g = graphs.analyse(net, size)
    lm = latmodel.build(g, t, tbl.context(t))
    values = [option_values(surgery.group_scores(g, grp, "l1"), o) for grp, o in zip(g.groups, lm.options)]
    problem = lm.problem(values, 0.6 * lm.predict(lm.full_counts()))
    out = {"groups": len(g.groups), "options": [len(o) for o in lm.options]}
    for algo in ("dp", "evo", "abc"):
        t0 = time.perf_counter()
        r = run_search(algo, problem, seed=0)
        out[algo] = {"seconds": round(time.perf_counter() - t0, 3), "value": r.value, "latency": r.latency,
                     "target": problem.target}
    return out


def versus(table: str, work: Path, protocol: Protocol) -> dict:
    cfg = pruning.PruneConfig("vgg16_cifar10", table, target_ratio=0.6, compare=True, out=work / "versus",
                              quick=protocol == Protocol.quick())
    r = pruning.run(cfg)
    rows = [{"name": c.name, "macs": c.macs, "predicted_ms": c.predicted_ms, "measured_ms": c.measured_ms}
            for c in [r.original, r.pruned] + r.baselines]
    return {"target_ms": r.target_ms, "target_met": r.met, "candidates": rows, "searches": r.attempts}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--configs", type=int, default=30)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--quick", action="store_true", help="the short protocol (faster, noisier)")
    args = ap.parse_args()
    protocol = Protocol.quick() if args.quick else Protocol()
    work = Path(tempfile.mkdtemp(prefix="latprof-prune-bench-"))
    acc = [accuracy(m, MODELS.get(m, 1), work, args.configs, protocol, seed=i)
           for i, m in enumerate(args.models.split(","))]
    times = search_times(work)
    vs = versus(acc[0]["table"], work, protocol) if acc[0]["model"] == "vgg16_cifar10" else None
    report = {"command": "python bench/prune_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
              "machine": {"cpu": cpu_device().name, "threads": env.cpu_threads(), "platform": platform.platform()},
              "when": tbl.now_iso(), "protocol": "quick" if args.quick else "full",
              "accuracy": acc, "search_resnet50": times, "versus": vs}
    slug = cpu_device().slug
    md = [f"# Pruning benchmark on {report['machine']['cpu']} ({report['when']})", "",
          f"Command: `{report['command']}` ({report['protocol']} protocol)", "",
          "## Predicted vs measured whole-model latency (held-out random configurations)", "",
          "| model | batch | configs | within 5% | within 10% | median abs error | max abs error | sweep shapes |",
          "|---|---|---|---|---|---|---|---|"]
    for a in acc:
        md.append(f"| {a['model']} | {a['batch']} | {a['configs']} | {a['within_5pct']:.0%} | {a['within_10pct']:.0%} | "
                  f"{a['median_abs_error']:.1%} | {a['max_abs_error']:.1%} | {a['sweep_shapes']} |")
    md += ["", f"## Search time, resnet50 ({times['groups']} groups), complete synthetic table", "",
           "| searcher | seconds | retained importance |", "|---|---|---|"]
    md += [f"| {k} | {times[k]['seconds']} | {times[k]['value']:.3f} |" for k in ("dp", "evo", "abc")]
    if vs:
        md += ["", f"## vgg16_cifar10 at 60% of its latency (target {vs['target_ms']:.2f} ms)", "",
               "| candidate | MMACs | predicted ms | measured ms |", "|---|---|---|---|"]
        md += [f"| {c['name']} | {c['macs'] / 1e6:.1f} | "
               f"{c['predicted_ms'] if c['predicted_ms'] is None else round(c['predicted_ms'], 3)} | "
               f"{c['measured_ms'] if c['measured_ms'] is None else round(c['measured_ms'], 3)} |"
               for c in vs["candidates"]]
        md += ["", "Closed-loop searches (budget, predicted, measured, ms): " + "; ".join(
            f"{a['budget_ms']:.2f}, {a['predicted_ms']:.2f}, {a['measured_ms']:.2f}" for a in vs["searches"])]
    write_results(args.out, f"prune_{slug}", report, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
