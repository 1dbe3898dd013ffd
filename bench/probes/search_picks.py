"""Where the latency model is wrong: whole-model measurements of the configurations a search
picks, against random ones, under the calibration `latprof prune` fits; and, for the full model
and the 45% pick, each conv's time inside the running model (forward hooks) against the table.

    latprof sweep --model googlenet --input-size 3,64,64 --batch 1 --quick --out g.parquet
    python bench/probes/search_picks.py googlenet g.parquet

Prints the error of `scale x conv sum + rest` (fitted on full, smallest, halfway and two random
configurations, as `pipeline.calibrate` does) on those five, on dp's picks at 45-85% of the
conv sum, and on six more random ones; then the split of the two models' time into convs
(hooked) and the rest.
"""

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from latprof.prune import latmodel, pipeline
from latprof.search import run_search

warnings.simplefilter("ignore")
model, table = sys.argv[1], sys.argv[2]
cfg = pipeline.PruneConfig(model=model, table=table, input_size=(3, 64, 64), batch=1, quick=True,
                           out=Path("/tmp/latprof_search_picks"), algo="dp")
setup = pipeline.load(cfg)
lm = setup.lm
timer = pipeline.make_timer(cfg, setup)
rng = np.random.default_rng(0)
cal = [lm.full_counts(), [o[0] for o in lm.options], [o[len(o) // 2] for o in lm.options]]
cal += [[o[rng.integers(len(o))] for o in lm.options] for _ in range(2)]
full = lm.conv_sum(lm.full_counts())
picks = []
for share in (0.45, 0.55, 0.65, 0.75, 0.85):
    r = run_search("dp", lm.problem(setup.values, share * full), seed=0)
    picks.append([lm.options[g][i] for g, i in enumerate(r.choice)])
rand = [[o[rng.integers(len(o))] for o in lm.options] for _ in range(6)]
configs = cal + picks + rand
nets = [pipeline._pruned_copy(setup.original, setup.size, cfg, c) for c in configs]


def hooked(net, reps=25):
    """Median time of each conv / Linear inside the model, and of the whole forward pass (us)."""
    mods = {n: m for n, m in net.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    took, start, hooks = {n: [] for n in mods}, {}, []
    for n, m in mods.items():
        hooks.append(m.register_forward_pre_hook(lambda mod, a, n=n: start.__setitem__(n, time.perf_counter()) or None))
        hooks.append(m.register_forward_hook(lambda mod, a, o, n=n: took[n].append(time.perf_counter() - start[n]) or None))
    x, whole = torch.randn(1, *setup.size), []
    with torch.inference_mode():
        for _ in range(3):
            net(x)
        for v in took.values():
            v.clear()
        for _ in range(reps):
            t0 = time.perf_counter()
            net(x)
            whole.append(time.perf_counter() - t0)
    for h in hooks:
        h.remove()
    return {k: float(np.median(v)) * 1e6 for k, v in took.items()}, float(np.median(whole)) * 1e6


with timer.clock:
    measured = np.array(timer.measure(nets))
    split = [hooked(nets[0]), hooked(nets[5])]
sums = np.array([lm.conv_sum(c) for c in configs])
scale, rest = latmodel.fit_calibration(sums[:5].tolist(), measured[:5].tolist())
err = 100 * ((scale * sums + rest) / measured - 1)
print(f"scale {scale:.3f} x conv sum + {rest:.0f} us, fitted on the first five")
print(f"calibration (full, smallest, halfway, 2 random): {np.round(err[:5], 1)} %")
print(f"dp picks at 45/55/65/75/85% of the conv sum:     {np.round(err[5:10], 1)} %")
print(f"6 more random configurations:                     {np.round(err[10:], 1)} %")
for name, counts, (convs, whole) in (("full", configs[0], split[0]), ("45% pick", configs[5], split[1])):
    table_sum = sum(lm.term_cost(t, counts) for t in lm.terms)
    inside = sum(convs.values())
    print(f"{name:9s} whole {whole:7.0f} us (hooked): convs {inside:6.0f} us (table {table_sum:6.0f}), "
          f"outside the convs {whole - inside:6.0f} us ({(whole - inside) / whole:.0%})")
