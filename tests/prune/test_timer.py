"""The prune timer measures models as ratios to the original timed in the same rounds, so that a
machine running at another speed in another session (which the small drift reference does not
follow) moves no verdict. Simulated machine: `tests/simulate.py`."""

import numpy as np
import pytest

from latprof.measure import backends
from latprof.measure.device import cpu_device
from latprof.measure.timing import Protocol
from latprof.prune.timer import ORIGINAL_COPIES, Timer
from latprof.spec import Context
from simulate import REF_US, ModelClock, SimModel, SimReference


class SessionClock(ModelClock):
    """Whole models run `factor` times slower; the reference does not notice."""

    factor = 1.0

    def sample(self, fn, reps=1):
        value = super().sample(fn, reps)
        return value if self.log[-1] == "ref" else value * self.factor


@pytest.fixture
def timer(monkeypatch):
    clock = SessionClock(slow=1.0, slow_from_s=1e9)
    monkeypatch.setattr(backends, "reference_runner", lambda device, dtype: ("sim reference", SimReference(clock)))
    original = SimModel("original", 1000.0, clock)
    t = Timer(cpu_device(), clock, Protocol.quick(), Context(1, "float32", "nchw", "cpu", ""), (3, 4, 4), REF_US,
              original)
    return t, clock


def test_a_session_at_another_speed_moves_no_ratio(timer):
    t, clock = timer
    pruned = SimModel("pruned", 600.0, clock)
    got = []
    for factor in (1.0, 1.3, 1.0):
        clock.factor = factor
        got.append(t.measure([pruned])[0])
        assert np.median(t.ratios([pruned])[0]) == pytest.approx(0.6, rel=0.02)
    assert t.sessions_us[2] == pytest.approx(1.3 * t.sessions_us[0], rel=0.03)   # absolute times moved 30%
    assert t.scale_us() == pytest.approx(1000.0, rel=0.03)                       # the pool's median did not
    assert max(got) / min(got) < 1.35 and got[-1] == pytest.approx(600.0, rel=0.03)


def test_the_original_runs_as_copies_in_every_session(timer):
    t, clock = timer
    t.measure([SimModel("pruned", 600.0, clock)])
    first_round = [n for n in clock.log if n != "ref"][:ORIGINAL_COPIES + 1]
    assert sorted(first_round) == ["original"] * ORIGINAL_COPIES + ["pruned"]
    assert clock.log.count("original") == ORIGINAL_COPIES * clock.log.count("pruned")


class NoisyClock(SessionClock):
    """Whole-model samples scatter by `noise` (relative sd) around their latency."""

    noise = 0.0

    def sample(self, fn, reps=1):
        value = super().sample(fn, reps)
        return value if self.log[-1] == "ref" else value * (1 + self.noise * self.rng.standard_normal())


@pytest.mark.parametrize("noise, longer", [(0.003, False), (0.08, True)])
def test_a_session_goes_on_until_its_ratios_are_known(monkeypatch, noise, longer):
    from latprof.measure import modeltime

    clock = NoisyClock(slow=1.0, slow_from_s=1e9)
    clock.noise = noise
    monkeypatch.setattr(backends, "reference_runner", lambda device, dtype: ("sim reference", SimReference(clock)))
    t = Timer(cpu_device(), clock, Protocol.quick(), Context(1, "float32", "nchw", "cpu", ""), (3, 4, 4), REF_US,
              SimModel("original", 1000.0, clock))
    (ratios,) = t.ratios([SimModel("pruned", 600.0, clock)])
    base = max(Protocol.quick().min_samples * 2, 15)
    assert (len(ratios) > base) == longer and len(ratios) <= modeltime.MAX_SESSION_ROUNDS
    se = 1.2533 * np.std(ratios) / np.sqrt(len(ratios)) / np.median(ratios)
    assert se <= 0.01 or len(ratios) == modeltime.MAX_SESSION_ROUNDS
    assert np.median(ratios) == pytest.approx(0.6, rel=0.05)
