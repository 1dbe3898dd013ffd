"""Independent check of `latprof prune` runs made at a small input size: each saved pruned model
against its original, timed by `bench/verify_saved.py`'s plain interleaved loop (one thread, 11
rounds, median of 3 calls), as a ratio next to the report's and the target's.

    python bench/probes/e2e_independent.py 3,64,64 googlenet=/tmp/e2e3/googlenet.out ...

(each OUT is a `latprof prune --out` folder holding prune.json and pruned.pt).
"""

import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from verify_saved import settle_malloc, time_models  # noqa: E402

from latprof import models  # noqa: E402

size = tuple(int(v) for v in sys.argv[1].split(","))
torch.set_num_threads(1)
settle_malloc()
for arg in sys.argv[2:]:
    model, out = arg.split("=", 1)
    report = json.loads((Path(out) / "prune.json").read_text())
    original, _ = models.load(model, size)
    pruned = torch.load(Path(out) / "pruned.pt", weights_only=False)
    got = time_models({"o": original.eval(), "p": pruned.eval()}, torch.randn(report["context"]["batch"], *size),
                      11, 3)
    ratio = statistics.median(p / o for p, o in zip(got["p"], got["o"]))
    target = report["target_ratio"]
    print(f"{model}: independent ratio {ratio:.4f}, report {report['pruned']['measured_ratio']:.4f} "
          f"({report['pruned']['measured_ratio'] / ratio - 1:+.1%}), target {target}: "
          f"{'met' if ratio <= target else 'MISSED'} independently, the report said {report['verdict']}", flush=True)
