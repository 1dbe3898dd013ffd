"""The timing primitives (`latprof.measure.timing`): sample statistics, the protocol, the CPU
clock's thread-count scoping and the drift reference's interpolation."""

import time
from dataclasses import fields

import numpy as np
import pytest
import torch

from latprof.measure.timing import Clock, Protocol, Reference, Stats, summarize


# --- summarize and Stats ------------------------------------------------------------------

def test_summarize_matches_numpy_quantiles():
    rng = np.random.default_rng(0)
    a = rng.lognormal(mean=3.0, sigma=0.4, size=101)
    s = summarize(a.tolist())
    want = np.quantile(a, [0.10, 0.25, 0.50, 0.75, 0.90])
    assert [s.p10, s.p25, s.p50, s.p75, s.p90] == pytest.approx(want.tolist(), rel=1e-12)
    assert s.min == a.min() and s.mean == pytest.approx(a.mean()) and s.n == 101


def test_summarize_on_a_known_array():
    s = summarize(range(1, 12))          # 1..11: every quantile falls on a sample
    assert (s.p10, s.p25, s.p50, s.p75, s.p90, s.min, s.mean, s.n) == (2.0, 3.5, 6.0, 8.5, 10.0, 1.0, 6.0, 11)


def test_summarize_refuses_no_samples():
    with pytest.raises(ValueError, match="no samples"):
        summarize([])


def test_rel_iqr_and_median_rel_se():
    s = Stats(p10=80.0, p25=90.0, p50=100.0, p75=110.0, p90=120.0, min=70.0, mean=100.0, n=25)
    assert s.rel_iqr == pytest.approx(0.2)
    assert s.median_rel_se == pytest.approx(0.93 * 0.2 / 5.0)
    # more samples of the same spread: a more certain median
    assert Stats(80.0, 90.0, 100.0, 110.0, 120.0, 70.0, 100.0, n=100).median_rel_se < s.median_rel_se
    # a zero median has no relative spread
    assert Stats(0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.5, n=4).rel_iqr == float("inf")


def test_median_rel_se_with_no_count_treats_n_as_one():
    s = Stats(p10=1.0, p25=1.0, p50=2.0, p75=3.0, p90=3.0, min=1.0, mean=2.0)
    assert s.n == 0
    assert s.median_rel_se == pytest.approx(0.93 * 1.0)


# --- Protocol -----------------------------------------------------------------------------

BUDGETS = {"warmup_s", "min_samples", "max_samples", "shape_budget_s", "min_sample_s", "ref_interval_s",
           "remeasure_drifted", "instances", "remeasure_contended", "quiet_wait_s"}


def test_quick_protocol_differs_only_in_budgets_and_only_downwards():
    default, quick = Protocol().to_dict(), Protocol.quick().to_dict()
    assert set(default) == {f.name for f in fields(Protocol)}
    changed = {k for k in default if default[k] != quick[k]}
    assert changed and changed <= BUDGETS
    for k in changed:
        assert quick[k] < default[k], k
    for k in ("noise_threshold", "median_se_threshold", "drift_threshold", "window", "l2_flush"):
        assert quick[k] == default[k]
    assert quick["min_samples"] <= quick["max_samples"]


# --- Clock --------------------------------------------------------------------------------

@pytest.fixture
def threads():
    """torch's thread count before the test, restored after it whatever the test did."""
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def other_count(n: int) -> int:
    return 1 if n != 1 else 2


def test_clock_sets_threads_on_enter_and_restores_on_exit(threads):
    want = other_count(threads)
    clock = Clock(want)
    assert torch.get_num_threads() == threads     # constructing changes nothing
    with clock as c:
        assert c is clock
        assert torch.get_num_threads() == want
    assert torch.get_num_threads() == threads


def test_clock_restores_on_exit_after_an_exception(threads):
    with pytest.raises(KeyError):
        with Clock(other_count(threads)):
            raise KeyError("boom")
    assert torch.get_num_threads() == threads


def test_nested_clocks_restore_in_order(threads):
    a, b = other_count(threads), threads
    with Clock(a):
        assert torch.get_num_threads() == a
        with Clock(b):
            assert torch.get_num_threads() == b
        assert torch.get_num_threads() == a
        with Clock(a):                               # the same count nested is fine too
            assert torch.get_num_threads() == a
        assert torch.get_num_threads() == a
    assert torch.get_num_threads() == threads


def test_one_clock_entered_twice_restores_both_levels(threads):
    clock = Clock(other_count(threads))
    with clock:
        with clock:
            assert torch.get_num_threads() == clock.threads
        assert torch.get_num_threads() == clock.threads
    assert torch.get_num_threads() == threads


def test_default_clock_uses_the_current_thread_count(threads):
    assert Clock().threads == threads


def test_warmup_outside_with_raises(threads):
    clock = Clock(other_count(threads))
    with pytest.raises(RuntimeError, match="inside `with clock:`"):
        clock.warmup(lambda: None, 0.0, 0.0)


def test_warmup_runs_at_least_twice_and_sizes_reps(threads):
    calls = []
    with Clock(1) as clock:
        reps = clock.warmup(lambda: calls.append(1), 0.0, 0.0)
        assert len(calls) == 2          # two warm-up calls; the last one sizes the sample
        assert reps == 1                # no minimum sample time: one call per sample
        calls.clear()
        clock.warmup(lambda: calls.append(1), 0.0, 0.0, min_calls=1)
        assert len(calls) == 1


def test_sample_returns_microseconds_per_call():
    clock = Clock(1)
    calls = []

    def nap():
        calls.append(1)
        time.sleep(0.002)

    assert clock.sample(nap) >= 1500.0          # sleep(2 ms) lasts at least ~2 ms: a lower bound
    assert clock.sample(nap, reps=3) >= 1500.0  # per call, not per sample (3 x 2 ms)
    assert len(calls) == 4


# --- Reference ----------------------------------------------------------------------------

class ScriptedClock(Clock):
    """Virtual time; each sample returns the next scripted value and lasts one second."""

    def __init__(self, values):
        super().__init__(1)
        self.values, self.t = list(values), 0.0

    def now(self):
        return self.t

    def sample(self, fn, reps=1):
        self.t += 1.0
        return self.values.pop(0)

    def warmup(self, fn, budget_s, min_sample_s):
        return 1


def test_reference_interpolates_and_holds_beyond_the_ends():
    ref = Reference(lambda: None, ScriptedClock([10.0, 20.0, 40.0]), "scripted", calls=1, smooth=1)
    for _ in range(3):
        ref.read()
    assert ref.times == [0.5, 1.5, 2.5]          # each reading sits at the middle of its samples
    assert ref.values_us == [10.0, 20.0, 40.0]
    got = ref.at([-5.0, 0.5, 1.0, 2.0, 2.5, 99.0])
    np.testing.assert_allclose(got, [10.0, 10.0, 15.0, 30.0, 40.0, 40.0])
    assert ref.baseline() == 20.0


def test_reference_reading_is_the_median_of_its_calls():
    ref = Reference(lambda: None, ScriptedClock([5.0, 100.0, 7.0]), "scripted", calls=3, smooth=1)
    assert ref.read() == 7.0
    assert ref.times == [1.5]                    # t went 0 -> 3


def test_reference_smoothing_removes_a_single_spike():
    ref = Reference(lambda: None, ScriptedClock([10.0, 10.0, 90.0, 10.0, 10.0]), "scripted", calls=1, smooth=3)
    for _ in range(5):
        ref.read()
    np.testing.assert_allclose(ref.at(ref.times), [10.0] * 5)


def test_reference_smoothing_follows_a_lasting_level_switch():
    values = [10.0] * 6 + [17.4] * 6
    ref = Reference(lambda: None, ScriptedClock(values), "scripted", calls=1, smooth=5)
    for _ in values:
        ref.read()
    got = ref.at(ref.times)
    np.testing.assert_allclose(got[:5], 10.0)
    np.testing.assert_allclose(got[-5:], 17.4)


def test_reference_at_before_any_reading_raises():
    ref = Reference(lambda: None, ScriptedClock([]), "scripted")
    with pytest.raises(RuntimeError, match="never read"):
        ref.at([0.0])
