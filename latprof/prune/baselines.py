"""What latprof's pick is compared against: FLOPs-driven pruning at the same MACs (a uniform keep
ratio, and Torch-Pruning's L1 magnitude pruner with round_to=8), priced by the same latency model."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from latprof.prune import flops, latmodel, surgery
from latprof.prune import graph as graphs


def predict_model(lm: latmodel.LatencyModel, model: nn.Module) -> float | None:
    """Predicted latency (us) of any pruned variant, from its conv shapes; None if the table lacks one."""
    counts = surgery.channel_counts(model)
    total = 0.0
    before = set(lm.missing)
    for t in lm.terms:
        ci, co = counts[t.name]
        v = lm.lookup(t, ci, co)
        if v is None:
            lm.missing = before
            return None
        total += v
    return lm.scale * total + lm.rest_us


def at_equal_macs(original: nn.Module, size, macs_target: int, keep_residual: bool | None = None) -> list[tuple[str, nn.Module]]:
    """Uniform keep ratio, and Torch-Pruning's magnitude pruner (round_to=8), at the same MACs."""
    import torch_pruning as tp

    def uniform(r):
        g = graphs.analyse(copy.deepcopy(original), size, keep_residual=keep_residual)
        counts = [max(grp.step, int(round(r * grp.channels / grp.step)) * grp.step) for grp in g.groups]
        return surgery.prune(g, surgery.choose(g, counts, "l1"))

    def magnitude(r):
        m = copy.deepcopy(original)
        pruner = tp.pruner.MagnitudePruner(m, torch.zeros(1, *size), importance=tp.importance.MagnitudeImportance(p=1),
                                           pruning_ratio=r, ignored_layers=graphs.classifier(m), round_to=8)
        pruner.step()
        return m

    out = []
    for name, make in (("uniform ratio", lambda r: uniform(1 - r)), ("torch-pruning L1, round_to=8", magnitude)):
        lo, hi, best = 0.0, 0.95, None
        for _ in range(12):  # bisection on the pruning ratio until MACs match
            mid = (lo + hi) / 2
            m = make(mid)
            macs = flops.count(m, size)[0]
            best = (m, macs) if best is None or abs(macs - macs_target) < abs(best[1] - macs_target) else best
            lo, hi = (mid, hi) if macs > macs_target else (lo, mid)
        out.append((name, best[0]))
    return out
