"""Proxy search vs accuracy-driven evo, abc and ddpg, on the bundled digits data set (CPU).

A small CNN (small_cifar10 at 16x16) is trained on digits; its conv layers are swept on this
CPU (sparse lines + grid); then it is pruned to 60% of its table latency by
- `dp` maximising retained L1 importance (the table-only proxy), and
- `evo`, `abc`, `ddpg` maximising validation accuracy after brief training of each candidate,
and every pruned model is fine-tuned with the same budget. Reported: test accuracy before and
after fine-tuning, predicted latency, search time and fitness evaluations. Search budgets are
reduced from the papers' (stated in the output) so the benchmark runs in minutes on 2 cores.

    python bench/accuracy_bench.py --out bench/results
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import write_results

from latprof import models
from latprof.train import data as data
from latprof.prune import pipeline as pruning
from latprof.measure import sweep as sweep
from latprof.tables import io as tbl
from latprof.measure.timing import Protocol
from latprof.train.loop import eval_loader, evaluate, train

BUDGETS = {"dp": {}, "evo": dict(population=8, cycles=3, mutations=4, crossovers=4, parents=4),
           "abc": dict(sources=4, cycles=4), "ddpg": dict(episodes=16, warmup=6, updates=5)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--fitness-steps", type=int, default=20)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="latprof-acc-bench-"))
    size = (3, 16, 16)
    splits = data.load("digits", image_size=16)
    torch.manual_seed(0)
    net, _ = models.load("small_cifar10", size)
    t0 = time.perf_counter()
    train(net, splits, epochs=4, lr=0.05, lr_step=3, batch_size=64, progress=False, seed=0)
    train_s = time.perf_counter() - t0
    net.latprof_input_size = size
    base_acc = evaluate(net, eval_loader(splits.test))
    torch.save(net, work / "trained.pt")
    table = work / "cpu.parquet"
    sweep.run(sweep.SweepConfig(model="small_cifar10", input_size=size, batches=(8,), out=table,
                                protocol=Protocol.quick(), progress=False))
    rows = []
    for algo, budget in BUDGETS.items():
        cfg = pruning.PruneConfig(model=str(work / "trained.pt"), table=str(table), target_ratio=0.6, algo=algo,
                                  fitness="importance" if algo == "dp" else "accuracy", data="digits",
                                  fitness_steps=args.fitness_steps, measure=False, out=work / algo,
                                  search_options=budget)
        t0 = time.perf_counter()
        r = pruning.run(cfg)
        wall = time.perf_counter() - t0
        pruned = torch.load(r.files["model"], weights_only=False)
        before = evaluate(pruned, eval_loader(splits.test))
        train(pruned, splits, epochs=args.finetune_epochs, lr=0.01, batch_size=64, progress=False, seed=0)
        after = evaluate(pruned, eval_loader(splits.test))
        rows.append({"algo": algo, "fitness": cfg.fitness, "budget": budget, "search_s": round(r.search_seconds, 2),
                     "prune_wall_s": round(wall, 1), "evaluations": r.evaluations,
                     "predicted_ms": r.pruned.predicted_ms, "target_ms": r.target_ms, "macs": r.pruned.macs,
                     "test_acc_pruned": before, "test_acc_finetuned": after,
                     "kept": [g["kept"] for g in r.groups]})
    meta = tbl.read(table).meta
    report = {"command": "python bench/accuracy_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
              "machine": {"cpu": meta["device"]["name"], "threads": meta["protocol"]["threads"],
                          "platform": platform.platform()},
              "when": tbl.now_iso(), "train_seconds": round(train_s, 1), "unpruned_test_acc": base_acc,
              "fitness_steps": args.fitness_steps, "finetune_epochs": args.finetune_epochs, "results": rows}
    slug = meta["device"]["slug"]
    md = [f"# Proxy vs accuracy-driven search on digits ({report['when']})", "",
          f"Command: `{report['command']}`", "",
          f"small_cifar10 at 16x16, trained 4 epochs: unpruned test accuracy {base_acc:.3f}. Target: 60% of the "
          f"table latency. Accuracy fitness: {args.fitness_steps} SGD steps per candidate, scored on the "
          f"validation split. Every pruned model fine-tuned {args.finetune_epochs} epochs.", "",
          "| searcher | fitness | budget | search s | evaluations | predicted ms (target) | MMACs | "
          "test acc pruned | test acc fine-tuned |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['algo']} | {r['fitness']} | {r['budget'] or 'exact'} | {r['search_s']} | {r['evaluations']} | "
                  f"{r['predicted_ms']:.3f} ({r['target_ms']:.3f}) | {r['macs'] / 1e6:.2f} | "
                  f"{r['test_acc_pruned']:.3f} | {r['test_acc_finetuned']:.3f} |")
    write_results(args.out, f"accuracy_{slug}", report, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
