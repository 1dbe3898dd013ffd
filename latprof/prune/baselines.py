"""What latprof's pick is compared against: FLOPs-driven pruning at the same MACs (a uniform keep
ratio, and Torch-Pruning's L1 magnitude pruner with round_to=8), priced by the same latency model;
and the fair peers, Torch-Pruning's L1 pruner with round_to 8 and 16 at the pruning ratio whose
*measured* latency meets the same target (`at_target`)."""

from __future__ import annotations

import copy

import numpy as np
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
    def uniform(r):
        g = graphs.analyse(copy.deepcopy(original), size, keep_residual=keep_residual)
        counts = [max(grp.step, int(round(r * grp.channels / grp.step)) * grp.step) for grp in g.groups]
        return surgery.prune(g, surgery.choose(g, counts, "l1"))

    out = []
    for name, make in (("uniform ratio", lambda r: uniform(1 - r)),
                       ("torch-pruning L1, round_to=8", lambda r: magnitude(original, size, r, 8))):
        lo, hi, best = 0.0, 0.95, None
        for _ in range(12):  # bisection on the pruning ratio until MACs match
            mid = (lo + hi) / 2
            m = make(mid)
            macs = flops.count(m, size)[0]
            best = (m, macs) if best is None or abs(macs - macs_target) < abs(best[1] - macs_target) else best
            lo, hi = (mid, hi) if macs > macs_target else (lo, mid)
        out.append((name, best[0]))
    return out


def magnitude(original: nn.Module, size, ratio: float, round_to: int) -> nn.Module:
    """Torch-Pruning's L1 magnitude pruner at a uniform pruning ratio, channel counts rounded to
    multiples of `round_to` (the classifier, and channels a shuffle reads or writes, kept)."""
    import torch_pruning as tp

    m = copy.deepcopy(original)
    with graphs.pruner_view(m, size) as (traced, ignored):
        pruner = tp.pruner.MagnitudePruner(traced, torch.zeros(1, *size),
                                           importance=tp.importance.MagnitudeImportance(p=1),
                                           pruning_ratio=ratio, ignored_layers=ignored, round_to=round_to)
    pruner.step()
    return m


#: round_to values of the peers pruned to the target by measurement.
PEER_ROUND_TO = (8, 16)
#: Pruning ratios of the first session; the second halves the gap below the first that met the
#: target in 4 steps (a resolution of 0.04 in the pruning ratio).
PEER_COARSE = (0.1, 0.3, 0.5, 0.7, 0.9)
PEER_FINE_STEPS = 4


def at_target(original: nn.Module, size, timer, target_us: float,
              round_tos=PEER_ROUND_TO) -> list[tuple[str, nn.Module, object, list]]:
    """For each round_to: the Torch-Pruning L1 model with the most MACs whose *measured* latency
    meets the target, as (name, model, its per-round ratios to the original, every model tried
    as (median ratio to the original, MACs): the peer's latency-MACs curve). Found by
    measurement alone (the table need not hold the peers' channel counts): one session with
    the pruning ratios `PEER_COARSE`, one with `PEER_FINE_STEPS` ratios evenly between the first
    that met the target and the one before it. A fair peer: like latprof's pick, it reaches the
    target by measuring, so the two can be compared at equal measured latency."""
    out = []
    for rt in round_tos:
        tried: dict[float, tuple] = {}

        def measure(ratios):
            models = [magnitude(original, size, r, rt) for r in ratios]
            for r, m, ratio in zip(ratios, models, timer.ratios(models)):
                tried[r] = (m, ratio, float(np.median(ratio)) * timer.scale_us() <= target_us)

        measure(list(PEER_COARSE))
        under = sorted(r for r, t in tried.items() if t[2])
        if under:
            hi = under[0]
            lo = max([r for r in PEER_COARSE if r < hi], default=0.0)
            step = (hi - lo) / (PEER_FINE_STEPS + 1)
            measure([round(lo + step * (i + 1), 4) for i in range(PEER_FINE_STEPS)])
        macs = {r: flops.count(t[0], size)[0] for r, t in tried.items()}
        under = [r for r, t in tried.items() if t[2]]
        # the most MACs under the target (channel rounding can make a smaller ratio keep fewer)
        r = max(under, key=lambda k: macs[k]) if under else max(tried)   # none under: the most pruned
        curve = sorted((float(np.median(t[1])), macs[k]) for k, t in tried.items())
        out.append((f"torch-pruning L1, round_to={rt}", tried[r][0], tried[r][1], curve))
    return out


def importance_kept(original: nn.Module, size, criterion: str = "l1", prev=None):
    """A function of any pruned variant of `original` -> the share of importance it keeps
    (`importance.retained`, over every channel group with residual groups pruned too), reading
    each group's kept count from its root layer's outputs in the variant."""
    from latprof.prune.importance import retained

    graph = graphs.analyse(copy.deepcopy(original), size, keep_residual=False)
    scores = [surgery.group_scores(graph, g, criterion, prev) for g in graph.groups]

    def kept(model: nn.Module) -> float:
        counts = surgery.channel_counts(model)
        return retained(scores, [counts[g.root][1] for g in graph.groups])
    return kept


def macs_at(curve: list[tuple[float, int]], ratio: float) -> float | None:
    """A peer's MACs at a measured latency ratio, interpolated between the two of its measured
    models around it (None outside them: no extrapolation)."""
    xs = [c[0] for c in curve]
    if not curve or not min(xs) <= ratio <= max(xs):
        return None
    return float(np.interp(ratio, xs, [c[1] for c in curve]))
