"""Sparse vs dense sweeps on real CPU measurements: how many measurements, how many edges found.

For each model: a sparse sweep (the default; lines only, no grid) into one fresh table, and a
dense sweep into another, with the same protocol; then a *second* dense sweep into a third.
Every line is fitted in each table with the same fitter. An edge of the first dense fit counts
as recovered when the other fit has an edge within +-1 channel. The figures are computed
twice: with the rows flagged noisy fitted (latprof's policy) and left out (`drop_noisy`).

Figures per model, each against the first dense sweep's edges:
- sparse: what the sparse sweep recovers (the issue's figure);
- dense re-sweep: what an identical dense sweep recovers. This is the ceiling: a sparse sweep
  cannot be expected to agree with one noisy dense sweep better than a second dense sweep does;
- replay: the sparse sampler run on the first dense sweep's own measurements (same noise, no
  new measurement), i.e. what sparse sampling can recover from this data at all;
- confirmed edges: recall of the edges both dense sweeps find (those the machine reproduces);
- recall by the size of each dense edge's step (relative level change).
`--sparse-full` adds a sparse sweep with the default (full) protocol; `--tune` replays the
sampler settings of SAMPLER_VARIANTS on the dense data.

Writes `steps_<device>.json` and `.md` under --out. `--work DIR` keeps the tables (and each
sweep's time) there; a rerun with the same DIR measures nothing new (sweeps resume) and
recomputes the figures. As `make bench` runs it:

    python bench/steps_bench.py --out bench/results --tune --sparse-full
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import tempfile
from pathlib import Path

from common import write_results

from latprof.models import lines as plan
from latprof.spec import Context
from latprof.staircase import lines as steps
from latprof.measure import sweep as sweep
from latprof.tables import io as tbl
from latprof.measure.sparse import SparseLine
from latprof.staircase.fit import StepFit, fit_steps
from latprof.measure.timing import Protocol

MODELS = {"vgg16_cifar10": 8, "resnet18": 1}
SWEEPS = ("sparse", "dense", "dense2")
#: Step-size bins (relative level change at the edge) for the recall breakdown.
STEP_BINS = (0.0, 0.05, 0.10, 0.20, math.inf)
#: SparseLine settings replayed on the dense data with --tune (the first is latprof's default).
SAMPLER_VARIANTS = ({}, {"z": 1.5}, {"z": 3.0}, {"coarse": 8}, {"coarse": 24}, {"coarse": 32}, {"verify": 0},
                    {"align": 16}, {"align": None}, {"coarse": 32, "verify": 0})


def bin_label(i: int) -> str:
    lo, hi = STEP_BINS[i], STEP_BINS[i + 1]
    return f">= {lo:.0%}" if math.isinf(hi) else f"{lo:.0%}-{hi:.0%}"


def edge_steps(fit: StepFit) -> list[tuple[int, float]]:
    """(edge, relative step) for each edge of a fit: |level after / level before - 1|."""
    return [(b.start, abs(b.level / a.level - 1.0)) for a, b in zip(fit.segments, fit.segments[1:])]


def recovered(edge: int, other: tuple[int, ...]) -> bool:
    return any(abs(edge - f) <= 1 for f in other)


def run_model(model: str, batch: int, work: Path, protocol: Protocol, sparse_full: bool = False,
              tune_sampler: bool = False) -> dict:
    out = {}
    modes = SWEEPS + (("sparse_full",) if sparse_full else ())
    for mode in modes:
        cfg = sweep.SweepConfig(model=model, batches=(batch,), dense=mode.startswith("dense"), measure_grid=False,
                                out=work / f"{model}_{mode}.parquet", progress=True,
                                protocol=Protocol() if mode == "sparse_full" else protocol)
        s = sweep.run(cfg)
        rows = len(tbl.read(cfg.out).df)
        timing = cfg.out.with_suffix(".seconds.json")  # the sweep's time, summed over resumed runs
        kept = json.loads(timing.read_text()) if timing.exists() else None
        if s.measured:
            kept = {"seconds": round((kept or {}).get("seconds", 0.0) + s.seconds, 1),
                    "measured": (kept or {}).get("measured", 0) + s.measured}
            timing.write_text(json.dumps(kept))
        out[mode] = {"measured": rows, "seconds": kept["seconds"] if kept else None}
    lines = plan.load_lines(model, Context(batch=batch))[1]
    tables = {mode: tbl.read(work / f"{model}_{mode}.parquet") for mode in modes}
    fitted = compare(lines, {m: steps.TableIndex(t) for m, t in tables.items()}, replay=True)
    pairs = fitted.pop("dense_pairs")
    dropped = compare(lines, {m: steps.TableIndex(t, drop_noisy=True) for m, t in tables.items()}, replay=False)
    if tune_sampler:
        out["sampler_variants"] = tune(pairs)
    dense_n = out["dense"]["measured"]
    out.update({
        "model": model, "batch": batch, "lines": len(lines),
        "measurement_share": out["sparse"]["measured"] / dense_n,
        "noisy_share": {m: float(t.df["flag_noisy"].mean()) for m, t in tables.items()},
        **({"sparse_full_share": out["sparse_full"]["measured"] / dense_n} if sparse_full else {}),
        **fitted,
        "noisy_dropped": {k: dropped[k] for k in ("dense_edges", "edge_recall", "dense2_recall", "confirmed_edges",
                                                  "sparse_recall_confirmed")},
    })
    if out["sparse"]["seconds"] and out["dense"]["seconds"]:
        out["time_share"] = out["sparse"]["seconds"] / out["dense"]["seconds"]
    return out


def compare(lines: list[plan.Line], idx: dict, replay: bool) -> dict:
    """Edge recall of the sparse sweep, the dense re-sweep and (optionally) the replay against
    the first dense sweep's fit, with every line read through the given table indexes."""
    kinds = ("sparse", "dense2", *(["replay"] if replay else []), *(["sparse_full"] if "sparse_full" in idx else []))
    found = {k: 0 for k in kinds}
    by_bin = {k: [0] * (len(STEP_BINS) - 1) for k in (*kinds, "edges")}
    dense_edges = replay_points = line_points = confirmed = 0
    found_confirmed = {k: 0 for k in kinds if k != "dense2"}
    per_line, skipped, pairs = [], [], []
    for line in lines:
        fits = {m: steps.fit_line(i, line) for m, i in idx.items()}
        if any(f.missing for f in fits.values()):  # e.g. a sweep in --work that was cut short
            skipped.append(line.label())
            continue
        s, d, d2 = (fits[m] for m in SWEEPS)
        pairs.append((d, d2))
        others = {"sparse": s.fit.edges, "dense2": d2.fit.edges}
        if "sparse_full" in fits:
            others["sparse_full"] = fits["sparse_full"].fit.edges
        if replay:
            n, others["replay"] = replay_edges(d)
            replay_points, line_points = replay_points + n, line_points + len(d.channels)
        for edge, step in edge_steps(d.fit):
            b = next(i for i in range(len(STEP_BINS) - 1) if step < STEP_BINS[i + 1])
            dense_edges += 1
            by_bin["edges"][b] += 1
            sure = recovered(edge, others["dense2"])
            confirmed += sure
            for k in kinds:
                hit = recovered(edge, others[k])
                found[k] += hit
                by_bin[k][b] += hit
                if sure and k in found_confirmed:
                    found_confirmed[k] += hit
        per_line.append({"line": line.label(), "dense_points": len(d.channels), "sparse_points": len(s.channels),
                         **{f"{k}_edges": list(v) for k, v in (("dense", d.fit.edges), *others.items())}})
    out = {"dense_edges": dense_edges, "recovered_within_1": found["sparse"],
           **{("edge_recall" if k == "sparse" else f"{k}_recall"): found[k] / dense_edges if dense_edges else 1.0
              for k in kinds},
           "confirmed_edges": confirmed,
           **{f"{k}_recall_confirmed": found_confirmed[k] / confirmed if confirmed else 1.0 for k in found_confirmed},
           "recall_by_step": {bin_label(i): {"edges": by_bin["edges"][i], **{k: by_bin[k][i] for k in kinds}}
                              for i in range(len(STEP_BINS) - 1)},
           "per_line": per_line, "lines_skipped": skipped, "dense_pairs": pairs}
    if replay:  # a count shared by two lines is a point of each (table rows count it once)
        out["replay_share"] = replay_points / line_points
    return out


def replay_edges(dense: steps.LineFit, **sampler_kw) -> tuple[int, tuple[int, ...]]:
    """Run the sparse sampler against a dense line's own measurements: (points used, edges found)."""
    value = dict(zip(dense.channels, dense.latency_us))
    excluded = dict(zip(dense.channels, dense.excluded))
    sampler = SparseLine(1, len(dense.channels), noise_rel=steps.FIT_NOISE_REL, **sampler_kw)
    while points := sampler.next_points():
        sampler.feed({p: value[dense.channels[p - 1]] for p in points})
    got = sampler.measured
    chans = [dense.channels[p - 1] for p in sorted(got)]
    fit = fit_steps(chans, [got[p] for p in sorted(got)], noise_rel=steps.FIT_NOISE_REL,
                    flagged=steps.fit_flags([excluded[c] for c in chans]))
    return len(got), fit.edges


def tune(fits: list[tuple[steps.LineFit, steps.LineFit]]) -> list[dict]:
    """Replay each of SAMPLER_VARIANTS on the first dense sweep's fitted lines (paired with the
    second dense sweep's, for the confirmed edges): points, recall, precision."""
    rows = []
    for kw in SAMPLER_VARIANTS:
        n = {"points": 0, "dense_points": 0, "edges": 0, "hits": 0, "confirmed": 0, "hits_confirmed": 0,
             "found": 0, "false": 0}
        for d, d2 in fits:
            points, got = replay_edges(d, **kw)
            n["points"] += points
            n["dense_points"] += len(d.channels)
            n["found"] += len(got)
            n["false"] += sum(not recovered(e, d.fit.edges) for e in got)
            for e in d.fit.edges:
                hit, sure = recovered(e, got), recovered(e, d2.fit.edges)
                n["edges"] += 1
                n["hits"] += hit
                n["confirmed"] += sure
                n["hits_confirmed"] += hit and sure
        rows.append({"sampler": kw, "share": n["points"] / max(n["dense_points"], 1),
                     "recall": n["hits"] / n["edges"] if n["edges"] else 1.0,
                     "recall_confirmed": n["hits_confirmed"] / n["confirmed"] if n["confirmed"] else 1.0,
                     "precision": 1 - n["false"] / max(n["found"], 1)})
    return rows


def pct(n: int, d: int) -> str:
    return f"{n / d:.0%}" if d else "-"


def markdown(report: dict) -> list[str]:
    res = report["models"]
    md = [f"# Sparse vs dense sweeps on {report['machine']['cpu']} ({report['when']})", "",
          f"Command: `{report['command']}` ({report['protocol']} protocol; lines only, no grid)", "",
          "Edges are those of the first dense sweep's fit; a recovered edge is one the other fit places "
          "within +-1 channel.", "",
          "| model | batch | lines | dense measurements | sparse measurements | share | sparse time share | "
          "dense edges | sparse: recovered | dense re-sweep: recovered | replay: share, recovered |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res:
        ts = f"{r['time_share']:.0%}" if "time_share" in r else "-"
        md.append(f"| {r['model']} | {r['batch']} | {r['lines']} | {r['dense']['measured']} | "
                  f"{r['sparse']['measured']} | {r['measurement_share']:.1%} | {ts} | {r['dense_edges']} | "
                  f"{r['recovered_within_1']} ({r['edge_recall']:.0%}) | {r['dense2_recall']:.0%} | "
                  f"{r['replay_share']:.1%}, {r['replay_recall']:.0%} |")
    md += ["", "Confirmed edges: those of the first dense sweep that the dense re-sweep also finds (within "
           "+-1), i.e. the edges this machine reproduces:", "",
           "| model | confirmed edges | sparse: recovered | replay: recovered |", "|---|---|---|---|"]
    for r in res:
        md.append(f"| {r['model']} | {r['confirmed_edges']} | {r['sparse_recall_confirmed']:.0%} | "
                  f"{r['replay_recall_confirmed']:.0%} |")
    if "sparse_full" in res[0]:
        md += ["", "A sparse sweep with latprof's default (full) protocol instead of the quick one (--sparse-full):",
               "", "| model | rows (share of dense) | noisy rows | time (s) | recovered | confirmed edges: recovered |",
               "|---|---|---|---|---|---|"]
        for r in res:
            md.append(f"| {r['model']} | {r['sparse_full']['measured']} ({r['sparse_full_share']:.1%}) | "
                      f"{r['noisy_share']['sparse_full']:.0%} | {r['sparse_full']['seconds']} | "
                      f"{r['sparse_full_recall']:.0%} | {r['sparse_full_recall_confirmed']:.0%} |")
    md += ["", "The same sweeps with the rows flagged noisy left out of every fit (the fitter's policy "
           "before this benchmark showed that fitting them recovers more):", "",
           "| model | noisy rows (sparse / dense / dense re-sweep) | dense edges | sparse: recovered | "
           "dense re-sweep: recovered | confirmed edges: sparse recovers |", "|---|---|---|---|---|---|"]
    for r in res:
        nd, ns = r["noisy_dropped"], r["noisy_share"]
        md.append(f"| {r['model']} | " + " / ".join(f"{ns[m]:.0%}" for m in SWEEPS)
                  + f" | {nd['dense_edges']} | {nd['edge_recall']:.0%} | {nd['dense2_recall']:.0%} | "
                  f"{nd['confirmed_edges']}: {nd['sparse_recall_confirmed']:.0%} |")
    md += ["", "Recall by the size of the dense edge's step (sparse / dense re-sweep / replay):", "",
           "| model | " + " | ".join(bin_label(i) for i in range(len(STEP_BINS) - 1)) + " |",
           "|---|" + "---|" * (len(STEP_BINS) - 1)]
    for r in res:
        cells = []
        for b in r["recall_by_step"].values():
            n = b["edges"]
            cells.append(f"{n} edges: {pct(b['sparse'], n)} / {pct(b['dense2'], n)} / {pct(b['replay'], n)}")
        md.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    if "sampler_variants" in res[0]:
        md += ["", "Sampler settings replayed on the first dense sweep (--tune): share of its points / recall of "
               "its edges / recall of the confirmed edges / precision:", "",
               "| sampler | " + " | ".join(r["model"] for r in res) + " |", "|---|" + "---|" * len(res)]
        for i, v in enumerate(res[0]["sampler_variants"]):
            cells = [r["sampler_variants"][i] for r in res]
            md.append(f"| {json.dumps(v['sampler']) if v['sampler'] else 'default'} | " + " | ".join(
                f"{c['share']:.1%} / {c['recall']:.0%} / {c['recall_confirmed']:.0%} / {c['precision']:.0%}"
                for c in cells) + " |")
    md += ["", "dense re-sweep = a second dense sweep with the same protocol, minutes later: the ceiling for "
           "any sweep's agreement with one noisy dense sweep.",
           "replay = the sparse sampler run on the dense sweep's own measurements (no new measurement); its "
           "share counts points per line (a count on two lines counts twice), the sweeps' share counts table rows.",
           "", "Lines left out (missing in a table): " + (", ".join(f"{r['model']}: {len(r['lines_skipped'])}"
                                                             for r in res)), "",
           "Sweep times (s; None when a --work table was made by an earlier version of this script): "
           + ", ".join(f"{r['model']} " + ", ".join(f"{m} {r[m]['seconds']}" for m in SWEEPS) for r in res)]
    return md


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--full-protocol", action="store_true", help="the default protocol instead of --quick's")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--work", type=Path, help="keep (and reuse) the sweep tables here")
    ap.add_argument("--tune", action="store_true", help="also replay SAMPLER_VARIANTS on the dense data")
    ap.add_argument("--sparse-full", action="store_true",
                    help="also a sparse sweep with the default (full) protocol, whatever --full-protocol says")
    args = ap.parse_args()
    protocol = Protocol() if args.full_protocol else Protocol.quick()
    work = args.work or Path(tempfile.mkdtemp(prefix="latprof-steps-bench-"))
    results = [run_model(m, MODELS.get(m, 1), work, protocol, args.sparse_full, args.tune)
               for m in args.models.split(",")]
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
    write_results(args.out, f"steps_{meta['device']['slug']}", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
