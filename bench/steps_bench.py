"""Sparse vs dense sweeps on real CPU measurements: how many measurements, how many edges found.

For each model: a sparse sweep (the default; lines only, no grid) into one fresh table and a
dense sweep into another, with the same protocol. Every line is fitted in both tables with
the same fitter; an edge of the dense fit counts as recovered when the sparse fit has an edge
within +-1 channel. A second figure replays the sparse sampler on the dense measurements
themselves (same noise, no second sweep): what sparse sampling can recover from this data at
all. Writes `steps_<device>.json` and `.md` under --out. `--work DIR` keeps the tables there;
a rerun with the same DIR measures nothing new (sweeps resume) and recomputes the figures.

    python bench/steps_bench.py --out bench/results
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import tempfile
from pathlib import Path

from common import write_results

from latprof import models, plan, steps, sweep, table as tbl
from latprof.sparse import SparseLine
from latprof.stepfit import fit_steps
from latprof.timing import Protocol

MODELS = {"vgg16_cifar10": 8, "resnet18": 1}


def run_model(model: str, batch: int, work: Path, protocol: Protocol) -> dict:
    out = {}
    for mode in ("sparse", "dense"):
        cfg = sweep.SweepConfig(model=model, batches=(batch,), dense=mode == "dense", measure_grid=False,
                                out=work / f"{model}_{mode}.parquet", protocol=protocol, progress=True)
        s = sweep.run(cfg)
        rows = len(tbl.read(cfg.out).df)
        out[mode] = {"measured": rows, "seconds": round(s.seconds, 1) if s.measured else None}
    net, size = models.load(model)
    lines = plan.model_lines(models.conv_layers(net, size), batch=batch, dtype="float32", layout="nchw",
                             backend="cpu")
    idx = {mode: steps.TableIndex(tbl.read(work / f"{model}_{mode}.parquet")) for mode in ("sparse", "dense")}
    dense_edges = found = replay_found = replay_points = 0
    per_line = []
    for line in lines:
        d, s = (steps.fit_line(idx[m], line) for m in ("dense", "sparse"))
        hit = sum(any(abs(e - f) <= 1 for f in s.fit.edges) for e in d.fit.edges)
        dense_edges += len(d.fit.edges)
        found += hit
        replay = replay_edges(d)
        replay_points += replay[0]
        replay_found += sum(any(abs(e - f) <= 1 for f in replay[1]) for e in d.fit.edges)
        per_line.append({"line": line.label(), "dense_points": len(d.channels), "sparse_points": len(s.channels),
                         "dense_edges": list(d.fit.edges), "sparse_edges": list(s.fit.edges)})
    out.update({
        "model": model, "batch": batch, "lines": len(lines),
        "measurement_share": out["sparse"]["measured"] / out["dense"]["measured"],
        "dense_edges": dense_edges, "recovered_within_1": found,
        "edge_recall": found / dense_edges if dense_edges else 1.0,
        "replay_share": replay_points / out["dense"]["measured"],
        "replay_recall": replay_found / dense_edges if dense_edges else 1.0,
        "per_line": per_line,
    })
    return out


def replay_edges(dense: steps.LineFit) -> tuple[int, tuple[int, ...]]:
    """Run the sparse sampler against a dense line's own measurements: (points used, edges found)."""
    value = dict(zip(dense.channels, dense.latency_us))
    sampler = SparseLine(1, len(dense.channels), noise_rel=steps.FIT_NOISE_REL)
    while points := sampler.next_points():
        sampler.feed({p: value[dense.channels[p - 1]] for p in points})
    got = sampler.measured
    chans = [dense.channels[p - 1] for p in sorted(got)]
    fit = fit_steps(chans, [got[p] for p in sorted(got)], noise_rel=steps.FIT_NOISE_REL)
    return len(got), fit.edges


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--full-protocol", action="store_true", help="the default protocol instead of --quick's")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--work", type=Path, help="keep (and reuse) the sweep tables here")
    args = ap.parse_args()
    protocol = Protocol() if args.full_protocol else Protocol.quick()
    work = args.work or Path(tempfile.mkdtemp(prefix="latprof-steps-bench-"))
    results = [run_model(m, MODELS.get(m, 1), work, protocol) for m in args.models.split(",")]
    meta = tbl.read(work / f"{results[0]['model']}_dense.parquet").meta
    report = {
        "command": "python bench/steps_bench.py " + " ".join(shlex.quote(x) for x in sys.argv[1:]),
        "machine": {"cpu": meta["device"]["name"], "logical_cpus": meta["device"].get("logical_cpus"),
                    "threads": meta["protocol"]["threads"], "torch": meta["versions"]["torch"],
                    "platform": platform.platform()},
        "protocol": "full" if args.full_protocol else "quick",
        "when": tbl.now_iso(),
        "models": results,
    }
    slug = meta["device"]["slug"]
    md = [f"# Sparse vs dense sweeps on {report['machine']['cpu']} ({report['when']})", "",
          f"Command: `{report['command']}` ({report['protocol']} protocol; lines only, no grid)", "",
          "| model | batch | lines | dense measurements | sparse measurements | share | dense edges | "
          "recovered (+-1) | recall | replay: share | replay: recall |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        md.append(f"| {r['model']} | {r['batch']} | {r['lines']} | {r['dense']['measured']} | "
                  f"{r['sparse']['measured']} | {r['measurement_share']:.1%} | {r['dense_edges']} | "
                  f"{r['recovered_within_1']} | {r['edge_recall']:.1%} | {r['replay_share']:.1%} | "
                  f"{r['replay_recall']:.1%} |")
    md += ["", "replay = the sparse sampler run on the dense sweep's own measurements (no second sweep)."]
    md += ["", "Sweep times (s; None when --work tables were reused): " + ", ".join(f"{r['model']} sparse {r['sparse']['seconds']}, dense "
                                                 f"{r['dense']['seconds']}" for r in results)]
    write_results(args.out, f"steps_{slug}", report, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
