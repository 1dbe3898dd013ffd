"""Independent check of a prune report's equal-MACs comparison: the saved pick, the original and
the two FLOPs-matched baselines (rebuilt the way `--compare` builds them: uniform keep ratio and
Torch-Pruning L1 round_to=8 bisected to the pick's MACs; their channel counts do not depend on the
weights' values), timed by `bench/verify_saved.py`'s plain interleaved loop, as ratios to the original.

    python bench/probes/equal_macs_independent.py 3,64,64 resnext50_32x4d OUT [ROUNDS]

(OUT: a `latprof prune --out` folder holding pruned.pt and prune.json.)
"""

import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from verify_saved import settle_malloc, time_models  # noqa: E402

from latprof import models  # noqa: E402
from latprof.prune import baselines, flops  # noqa: E402

size = tuple(int(v) for v in sys.argv[1].split(","))
model, out = sys.argv[2], Path(sys.argv[3])
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 11
torch.set_num_threads(1)
settle_malloc()
report = json.loads((out / "prune.json").read_text())
original, _ = models.load(model, size)
pruned = torch.load(out / "pruned.pt", weights_only=False)
# residual groups pruned too when the report says prune fell back to that (the baselines follow it)
fallback = any("--no-keep-residual" in w for w in report.get("warnings", []))
nets = {"original": original.eval(), "latprof": pruned.eval()}
for name, m in baselines.at_equal_macs(original, size, report["pruned"]["macs"], False if fallback else None):
    nets[name] = m.eval()
got = time_models(nets, torch.randn(report["context"]["batch"], *size), rounds, 3)
said = {c["name"]: c.get("measured_ratio") for c in report["baselines"]}
for name, samples in got.items():
    ratio = statistics.median(s / o for s, o in zip(samples, got["original"]))
    macs = flops.count(nets[name], size)[0] / 1e6
    print(f"{name:32s} {macs:8.1f} MMACs  x orig {ratio:.3f} independently"
          + (f", {said[name]:.3f} in the report" if said.get(name) else ""), flush=True)
