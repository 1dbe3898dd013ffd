"""Does latprof's verdict hold, and what does it buy? Each case as a user runs it, judged by a
plain timing of the saved files.

For each model and regime: one sparse sweep (`latprof sweep --model M --quick`), then for each
target ratio `latprof prune M --table T --target-ratio R --compare --json` (as a subprocess, as a
user runs it), then the saved pruned model and the original timed by `verify_saved.time_models`
(a plain interleaved loop, nothing from latprof.measure) in this process. Per case:

- the report's ratio pruned / original against the independent one, and whether the report's
  verdict (met or not) is the independent verdict;
- whether the target is met independently, and how far under it the model lands;
- the latency model's prediction error on the chosen configuration (predicted vs measured);
- the peers the report measured at equal MACs (uniform keep ratio; Torch-Pruning L1 with
  round_to=8), as ratios to the original.

    python bench/value_bench.py --out bench/results                      # float32 NCHW, about 15 min
    python bench/value_bench.py --out /tmp/v --models vgg16_cifar10 --ratios 0.5
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402
from verify_saved import settle_malloc, time_models  # noqa: E402

MODELS = {"vgg16_cifar10": 8, "resnet18": 1, "mobilenet_v2": 1, "googlenet": 1}
RATIOS = (0.5, 0.7)
GOAL = {"verdict_agrees": 0.95, "met": 0.95, "prediction_within_5pct": 0.90}


def latprof(*args: str) -> str:
    exe = Path(sys.executable).parent / "latprof"
    done = subprocess.run([str(exe), *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"latprof {' '.join(args)} failed:\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}")
    return done.stdout


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def one_case(model: str, batch: int, ratio: float, table: Path, work: Path, regime: list[str], rounds: int,
             dtype: str = "float32", layout: str = "nchw") -> dict:
    from latprof import models

    out = work / f"{model}_{ratio}"
    t0 = time.time()
    latprof("prune", model, "--table", str(table), "--target-ratio", str(ratio), "--compare", "--quick",
            "--out", str(out), "--json", str(out / "prune.json"), *regime)
    seconds = time.time() - t0
    report = json.loads((out / "prune.json").read_text())
    original, size = models.load(model)
    pruned = torch.load(report["files"]["model"], weights_only=False)
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    dt = DTYPES[dtype]
    x = torch.randn(batch, *size).to(dt).contiguous(memory_format=fmt)
    nets = {k: m.eval().to(dt, memory_format=fmt) for k, m in (("original", original), ("pruned", pruned))}
    got = time_models(nets, x, rounds, 3)    # in the table's regime, as the report measured
    indep = statistics.median(p / o for p, o in zip(got["pruned"], got["original"]))
    said = report["pruned"]["measured_ratio"]
    met_said, met_indep = bool(report["target_met"]), indep <= ratio
    # "within noise": the report says the measurement cannot settle it to within noise_rel; it
    # agrees when the independent timing is that close to the target too
    close_call = "within noise" in report["verdict"] and abs(indep / ratio - 1) <= (report.get("noise_rel") or 0)
    pr = report["pruned"]
    return {
        "model": model, "batch": batch, "target_ratio": ratio, "prune_seconds": round(seconds, 1),
        "report_ratio": said, "independent_ratio": indep, "ratio_error": said / indep - 1,
        "verdict": report["verdict"], "noise_rel": report.get("noise_rel"),
        "verdict_agrees": met_said == met_indep or close_call,
        "session_ratios": pr.get("session_ratios"), "attempts": report.get("attempts"), "met_independently": met_indep,
        "landing": indep / ratio - 1,
        "prediction_error": pr["predicted_ms"] / pr["measured_ms"] - 1 if pr["predicted_ms"] else None,
        # the model with its constant shifted on the other candidates the closed loop measured
        "held_out_error": report["held_out_ms"] / pr["measured_ms"] - 1 if report.get("held_out_ms") else None,
        "loop_ratio": report.get("loop_ratio"),
        "independent_ms": {k: statistics.median(v) for k, v in got.items()},
        "macs": {c["name"]: c["macs"] for c in [report["original"], pr] + report["baselines"]},
        "peers_ratio": {c["name"]: c.get("measured_ratio") for c in report["baselines"]},
        "latprof_macs_share": pr["macs"] / report["original"]["macs"],
        # the share of the original's l1 importance each keeps (top-k per group, over every group)
        "importance": {"latprof": pr.get("importance"),
                       **{f"equal MACs: {c['name']}": c.get("importance") for c in report["baselines"]},
                       **{f"peer: {c['name']}": c.get("importance") for c in report.get("peers", [])}},
        # latprof's MACs over each fair peer's (round_to 8 / 16, pruned to the target by measurement) at
        # latprof's measured latency, interpolated on the peer's measured models; None outside them
        "macs_vs_peer_at_equal_latency": {k: (pr["macs"] / v if v else None)
                                          for k, v in report.get("peer_macs_at_equal_latency", {}).items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--ratios", default=",".join(map(str, RATIOS)))
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--layout", default="nchw")
    ap.add_argument("--rounds", type=int, default=11)
    args = ap.parse_args()
    torch.set_num_threads(1)
    settle_malloc()   # as verify_saved.py does by default
    ratios = [float(r) for r in args.ratios.split(",")]
    cases, unreachable, t_start = [], [], time.time()
    regime_sweep = ["--dtype", args.dtype, "--layout", args.layout]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for model in args.models.split(","):
            batch = MODELS.get(model, 1)
            table = work / f"{model}.parquet"
            latprof("sweep", "--model", model, "--batch", str(batch), "--quick", "--no-progress", "--out", str(table),
                    *regime_sweep)
            for ratio in ratios:
                try:
                    case = one_case(model, batch, ratio, table, work, [], args.rounds, args.dtype, args.layout)
                except RuntimeError as exc:
                    if "unreachable" not in str(exc):
                        raise
                    why = str(exc).split("error: ", 1)[-1].strip().splitlines()[0]
                    unreachable.append({"model": model, "batch": batch, "target_ratio": ratio, "why": why})
                    print(f"{model} {ratio}: unreachable ({why})", flush=True)
                    continue
                cases.append(case)
                print(f"{model} {ratio}: report {case['report_ratio']:.4f} independent {case['independent_ratio']:.4f} "
                      f"({case['ratio_error']:+.1%}), verdict {'agrees' if case['verdict_agrees'] else 'DISAGREES'}, "
                      f"met {case['met_independently']}, prediction {case['prediction_error']:+.1%}, held out "
                      f"{case['held_out_error'] if case['held_out_error'] is None else format(case['held_out_error'], '+.1%')}",
                      flush=True)
    n = len(cases)
    summary = {
        "verdict_agrees": sum(c["verdict_agrees"] for c in cases) / n,
        "met": sum(c["met_independently"] for c in cases) / n,
        "prediction_within_5pct": sum(abs(c["prediction_error"]) <= 0.05 for c in cases) / n,
        "held_out_within_5pct": sum(c["held_out_error"] is not None and abs(c["held_out_error"]) <= 0.05
                                    for c in cases) / n,
        "median_abs_ratio_error": statistics.median(abs(c["ratio_error"]) for c in cases),
    }
    from latprof.measure.device import cpu_device

    dev = cpu_device()
    report = {"machine": {"cpu": dev.name, "python": platform.python_version(), "torch": torch.__version__},
              "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "regime": regime_sweep,
              "seconds": round(time.time() - t_start, 1), "goal": GOAL, "summary": summary, "cases": cases,
              "unreachable": unreachable}
    md = [f"# Value benchmark on {dev.name} ({report['when']}), {args.dtype} {args.layout}, one thread", "",
          f"`{report['command']}`. Each case: quick sparse sweep, `latprof prune --target-ratio R --compare --quick`, "
          "then the saved pruned model and the original timed by a plain interleaved loop "
          f"(`bench/verify_saved.py`'s, {args.rounds} rounds, median of 3 calls per sample) in this process. "
          "Ratios are pruned / original in the same rounds; the report's is pooled over `prune --confirm`'s fresh "
          "processes (3).", "",
          "| model (batch) | target | report ratio (fresh processes) | independent | report/indep | verdict (report) | agrees | "
          "met indep. | prediction error: searched / held out | uniform | TP L1 r8 | latprof MACs | MACs vs r8 / r16 at equal latency | "
          "importance kept: latprof / r8 / r16 peers |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        peers = list(c["peers_ratio"].values()) + [None, None]
        md.append(f"| {c['model']} ({c['batch']}) | {c['target_ratio']:g} | {c['report_ratio']:.4f} | "
                  f"{c['independent_ratio']:.4f} | {c['ratio_error']:+.1%} | {c['verdict'].split(',')[0]} | "
                  f"{'yes' if c['verdict_agrees'] else 'NO'} | {'yes' if c['met_independently'] else 'NO'} "
                  f"({c['landing']:+.1%}) | {c['prediction_error']:+.1%} / "
                  + (f"{c['held_out_error']:+.1%}" if c["held_out_error"] is not None else "n/a") + " | "
                  + " | ".join(f"{p:.3f}" if p else "n/a" for p in peers[:2])
                  + f" | {c['latprof_macs_share']:.0%} | "
                  + " / ".join(f"{v:.2f}x" if v else "n/a" for v in c["macs_vs_peer_at_equal_latency"].values())
                  + " | " + " / ".join(f"{v:.3f}" if v is not None else "n/a" for k, v in c.get("importance", {}).items()
                                       if k == "latprof" or k.startswith("peer: "))
                  + " |")
    md += ["", f"Verdict agrees with the independent timing in {summary['verdict_agrees']:.0%} of cases "
           f"(goal {GOAL['verdict_agrees']:.0%}; a verdict \"within noise\" agrees when the independent ratio is as close to "
           f"the target as the report's noise_rel); target met independently in {summary['met']:.0%} "
           f"(goal {GOAL['met']:.0%}); chosen configuration predicted within 5% in "
           f"{summary['prediction_within_5pct']:.0%} (goal {GOAL['prediction_within_5pct']:.0%}), "
           f"{summary['held_out_within_5pct']:.0%} held out (the model's constant shifted on the other candidates "
           "the closed loop measured); median "
           f"|report ratio / independent - 1| {summary['median_abs_ratio_error']:.1%}. \"uniform\" and \"TP L1 r8\" "
           "are at latprof's MACs (equal MACs), as ratios to the original measured in the report's final session. "
           "The last column: latprof's MACs over those of Torch-Pruning's L1 pruner with round_to 8 and 16, each "
           "pruned to the target by measurement, at latprof's measured latency (goal: 1.15x or more). Importance "
           "kept: the share of the original's l1 importance each model keeps (mean over every channel group of the "
           "top-k share of its scores), latprof's pick and the two peers.",
           f"Run time {report['seconds']} s."]
    md += [f"Unreachable (prune refused, as it should): {u['model']} at {u['target_ratio']:g}: {u['why']}"
           for u in unreachable]
    write_results(args.out, f"value_{dev.slug}_{args.dtype}_{args.layout}", report, md)


if __name__ == "__main__":
    main()
