"""The closed loop (`pipeline.search` with a timer): candidates chosen by measurement, and one
more round between the winner and the next candidate over when the winner lands far under."""

import copy

import numpy as np
import pytest

from latprof.prune import baselines
from latprof.prune import loop
from latprof.prune import pipeline as pruning
from synthetic import model_table


class OptimisticTimer:
    """Measures every model `slow` times its latency predicted by the model as it stands now (a
    latency model that reads low): the truth stays fixed when the search refits the model."""

    def __init__(self, lm, full_us, slow):
        self.lm, self.full, self.slow, self.sessions = lm, full_us, slow, 0
        self.truth = copy.copy(lm)

    def ratios(self, nets):
        self.sessions += 1
        return [np.full(5, baselines.predict_model(self.truth, m) * self.slow / self.full) for m in nets]

    def scale_us(self):
        return self.full


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = model_table(tmp_path_factory.mktemp("loop") / "vgg.parquet", "vgg16_cifar10", every=8, grid=True)
    cfg = pruning.PruneConfig(model="vgg16_cifar10", table=str(path), target_ratio=0.6, measure=False,
                              out=tmp_path_factory.mktemp("out"))
    return cfg, pruning.load(cfg)


@pytest.fixture(autouse=True)
def unshifted(setup):
    """The module's latency model is shared: each test starts from it as `load` made it."""
    lm = setup[1].lm
    lm.rest_us -= lm.local_shift_us
    lm.local, lm.local_shift_us = 0, 0.0


@pytest.mark.parametrize("slow", [1.0, 1.04, 1.08, 1.12])
def test_the_loop_lands_close_under_the_target_by_measurement(setup, slow):
    cfg, s = setup
    full = s.lm.predict(s.lm.full_counts())
    timer = OptimisticTimer(s.lm, full, slow)
    target = 0.6 * full
    best = pruning.search(cfg, s, timer, lambda: target)
    got = float(np.median(best.ratios)) * full
    limit = target * (1 - loop.MEASURE_MARGIN)
    assert got <= limit
    # nothing measured that kept more value also met the limit
    assert all(a["measured_ms"] * 1e3 > limit or a["value"] <= best.result.value + 1e-12 for a in best.attempts)
    # within LANDING of the limit (without the refinement round: 2.5-4.4% under at 1.04-1.12)
    assert got >= limit * (1 - loop.LANDING)


def test_no_refinement_round_when_the_winner_lands_close(setup):
    found = {(1,): (0.59, type("C", (), {"result": type("R", (), {"value": 1.0})()})(), 1.0)}
    assert loop.landing_shares(found, found[(1,)], 0.6) == ()


def test_after_a_measured_round_the_model_reads_true_near_the_target(setup):
    cfg, s = setup
    lm = s.lm
    full = lm.predict(lm.full_counts())
    timer = OptimisticTimer(lm, full, 1.12)
    best = pruning.search(cfg, s, timer, lambda: 0.6 * full)
    first = best.attempts[:len(loop.CANDIDATE_BUDGETS)]
    later = best.attempts[len(loop.CANDIDATE_BUDGETS):]
    error = [abs(a["predicted_ms"] / a["measured_ms"] - 1) for a in first + later]
    assert later and lm.local > 0
    # searched with the model as calibrated: 9-11% optimistic; after the shift: within 1%
    assert min(error[:len(first)]) > 0.08 and max(error[len(first):]) < 0.01
    # the winner keeps the prediction it was searched with, not one refitted on its own measurement
    assert best.predicted_us / 1e3 in [a["predicted_ms"] for a in best.attempts]


@pytest.mark.parametrize("slow", [1.04, 1.12])
def test_the_held_out_prediction_comes_from_the_other_candidates(setup, slow):
    """The pick's prediction with the constant shifted on the *other* candidates measured: close
    to its measurement when the model is off by a constant factor near the target, and not
    computed from the pick's own measurement (changing that changes nothing)."""
    cfg, s = setup
    lm = s.lm
    full = lm.predict(lm.full_counts())
    timer = OptimisticTimer(lm, full, slow)
    best = pruning.search(cfg, s, timer, lambda: 0.6 * full)
    got = float(np.median(best.ratios)) * full
    assert best.held_out_us is not None and abs(best.held_out_us / got - 1) < 0.02
    # the pick's own measurement does not enter it: alone, there is nothing to shift on
    assert loop.held_out_prediction(lm, [(best.counts, 99.0)], best.counts, full) is None
