"""The fair peers: Torch-Pruning's L1 pruner with round_to 8 and 16, pruned to the target by
measurement (`baselines.at_target`), compared with latprof's pick at equal measured latency."""

import numpy as np
import pytest

from latprof import models
from latprof.prune import baselines, flops


class MacsTimer:
    """Stands in for `prune.timer.Timer`: a model's latency is its share of the original's MACs."""

    def __init__(self, original, size):
        self.size, self.full = size, flops.count(original, size)[0]
        self.sessions = 0

    def ratios(self, nets):
        self.sessions += 1
        return [np.full(5, flops.count(m, self.size)[0] / self.full) for m in nets]

    def scale_us(self):
        return 1000.0


def test_peers_reach_the_target_by_measurement_keeping_the_most_macs():
    original, size = models.load("small_cifar10")
    timer = MacsTimer(original, size)
    peers = baselines.at_target(original, size, timer, target_us=500.0)
    assert [p[0] for p in peers] == ["torch-pruning L1, round_to=8", "torch-pruning L1, round_to=16"]
    assert timer.sessions == 4                           # a coarse and a fine session per peer
    for name, model, ratio, curve in peers:
        got = float(np.median(ratio))
        assert got <= 0.5                                # meets the target, measured
        # the one with the most MACs that does: no model tried lies between it and the target
        assert not any(got < share <= 0.5 for share, _ in curve)
        assert len(curve) == len(baselines.PEER_COARSE) + baselines.PEER_FINE_STEPS
        assert [m for _, m in curve] == sorted(m for _, m in curve)    # MACs rise with latency


def test_macs_at_equal_latency_interpolates_and_never_extrapolates():
    curve = [(0.2, 100), (0.4, 300), (0.8, 700)]
    assert baselines.macs_at(curve, 0.3) == pytest.approx(200)
    assert baselines.macs_at(curve, 0.8) == 700
    assert baselines.macs_at(curve, 0.9) is None and baselines.macs_at([], 0.5) is None


def test_importance_kept_is_the_top_k_share_over_every_group():
    import torch

    from latprof.prune import graph as graphs
    from latprof.prune import importance, surgery

    original, size = models.load("small_cifar10")
    keeps = baselines.importance_kept(original, size)
    assert keeps(original) == pytest.approx(1.0)
    # a peer that prunes half of every group by L1 keeps each group's top half: by hand
    peer = baselines.magnitude(original, size, 0.5, 8)
    graph = graphs.analyse(original, size, keep_residual=False)
    counts = surgery.channel_counts(peer)
    by_hand = []
    for g in graph.groups:
        s = torch.sort(surgery.group_scores(graph, g, "l1"), descending=True).values.double()
        by_hand.append(float(s[:counts[g.root][1]].sum() / s.sum()))
    assert keeps(peer) == pytest.approx(np.mean(by_hand))
    assert 0.5 < keeps(peer) < 1.0               # the top half of L1 holds more than half of it
    assert importance.retained([], []) == 1.0
