"""The report's verdict says "met" or "missed" only when the measurement settles it."""

import pytest

from latprof.prune.report import Candidate, PruneReport


def report(measured_ms, target_ms, iqr, sessions):
    pick = Candidate("latprof (dp)", {}, 4.0, 1, 1, measured_ms, iqr, measured_ms / 10.0, session_ratios=sessions)
    original = Candidate("original", {}, 9.0, 2, 2, 10.0, (9.9, 10.1), 1.0)
    return PruneReport(model="m", device="d", context={}, algo="dp", importance="l1", target_ms=target_ms,
                       calibrated=True, scale=1.0, rest_ms=0.0, original=original, pruned=pick, groups=[],
                       search_seconds=0.0, evaluations=0)


def test_sessions_that_disagree_more_than_the_miss_make_it_a_close_call():
    r = report(5.0, 4.95, (4.97, 5.03), [0.485, 0.515])       # the target just outside the IQR
    assert not r.met
    assert r.noise_rel == pytest.approx(0.03)
    assert r.verdict.startswith("missed, within noise (the median is +1.0% from the target")
    assert r.to_dict()["noise_rel"] == pytest.approx(0.03)


def test_a_clear_miss_and_a_clear_hit_say_so():
    assert report(5.0, 4.8, (4.97, 5.03), [0.499, 0.501]).verdict == "missed"
    hit = report(4.7, 5.0, (4.65, 4.75), [0.468, 0.472])
    assert hit.met and hit.verdict == "met"
    assert hit.noise_rel == pytest.approx(max(0.05 / 4.7, 0.002 / 0.47), rel=1e-6)


def test_the_target_inside_the_samples_iqr_is_within_noise():
    assert report(5.0, 4.98, (4.9, 5.1), [0.5]).verdict.startswith("missed, within noise (the target lies between")


def test_the_closed_loops_session_counts_in_the_noise_but_not_in_the_median():
    """The loop chose the pick partly because it read low there: not pooled, but a measurement of
    the same model, so a target between it and the final sessions is a close call."""
    r = report(5.0, 4.9, (4.97, 5.03), [0.499, 0.501])        # the final sessions agree: a clear miss
    assert r.verdict == "missed"
    r.loop_ratio = 0.47                                         # the loop read the pick 6% lower
    assert r.pruned.measured_ms == 5.0 and not r.met            # the median stays the final sessions'
    assert r.noise_rel == pytest.approx(0.06)
    assert r.verdict.startswith("missed, within noise (the median is +2.0% from the target; the sessions' "
                                "medians, the closed loop's included")
