"""Whole-model timing (`latprof.measure.modeltime.measure_models`): interleaved rounds and drift
normalisation on a simulated machine, and one real CPU run of two tiny models."""

import math

import pytest
import torch
import torch.nn as nn

from latprof.measure import backends as backends
from latprof.measure.device import cpu_device
from latprof.measure.modeltime import measure_models
from latprof.measure.timing import Clock, Protocol
from simulate import REF_US, ModelClock, SimModel, SimReference

def simulate(monkeypatch, slow_from_s, seed=0, baseline_us=REF_US, rounds=40):
    clock = ModelClock(slow=1.74, slow_from_s=slow_from_s, seed=seed)
    monkeypatch.setattr(backends, "reference_runner", lambda device, dtype: ("sim reference", SimReference(clock)))
    nets = [SimModel("small", 1000.0, clock), SimModel("large", 3000.0, clock)]
    got = measure_models(nets, (3, 4, 4), 1, "float32", cpu_device(), clock, Protocol.quick(), rounds=rounds,
                         seed=seed, baseline_us=baseline_us)
    return got, clock


def rounds_of(log):
    """The model samples between consecutive reference readings (5 reference calls each)."""
    out, current = [], []
    for name in log:
        if name == "ref":
            if current:
                out.append(current)
            current = []
        else:
            current.append(name)
    if current:
        out.append(current)
    return out


def test_models_are_sampled_in_interleaved_rounds(monkeypatch):
    _, clock = simulate(monkeypatch, slow_from_s=1e9, rounds=12)
    rounds = rounds_of(clock.log)
    assert len(rounds) == 12
    assert all(sorted(r) == ["large", "small"] for r in rounds)   # every round samples each model once
    orders = {tuple(r) for r in rounds}
    assert len(orders) == 2                                        # in a shuffled order


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_slow_stretch_is_normalised_away(monkeypatch, seed):
    # the machine turns 1.74x slower a third of the way in: most raw samples are slow ones
    _, steady = simulate(monkeypatch, slow_from_s=1e9, seed=seed)
    switch = steady.t * 0.33
    got, clock = simulate(monkeypatch, slow_from_s=switch, seed=seed)
    assert clock.t > switch and clock.slowdown(clock.t) == 1.74
    small, large = got
    # normalised to the reference's speed-1 baseline: each model's true latency, not 1.74x it
    assert small == pytest.approx(1000.0, rel=0.05)
    assert large == pytest.approx(3000.0, rel=0.05)
    assert large / small == pytest.approx(3.0, rel=0.03)


def test_without_a_baseline_results_are_on_this_calls_reference_scale(monkeypatch):
    got, _ = simulate(monkeypatch, slow_from_s=0.0, baseline_us=None)
    # always slow: the call's own median reference (1.74 x 500 us) is the scale, so the
    # normalised results are the slow machine's latencies, and the ratio is still the truth
    assert got[0] == pytest.approx(1740.0, rel=0.05)
    assert got[1] / got[0] == pytest.approx(3.0, rel=0.03)


def tiny_models():
    a = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    b = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3))
    return [a.train(), b.train()]


def test_real_clock_times_two_tiny_models():
    nets = tiny_models()
    with Clock(1) as clock:
        got = measure_models(nets, (3, 8, 8), 1, "float32", cpu_device(), clock, Protocol.quick(), rounds=3)
    assert len(got) == 2
    assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in got)
    # copies are timed: the caller's models keep their mode, dtype and device
    assert all(m.training for net in nets for m in net.modules())
    assert all(p.dtype == torch.float32 for net in nets for p in net.parameters())


def test_timing_at_another_dtype_leaves_the_callers_models_usable():
    """A bfloat16 table times bfloat16 copies; the caller's float32 models still take float32 input
    (they used to be converted in place, and FLOPs counting after timing failed)."""
    nets = tiny_models()
    with Clock(1) as clock:
        measure_models(nets, (3, 8, 8), 1, "bfloat16", cpu_device(), clock, Protocol.quick(), rounds=2,
                       layout="nhwc")
    for net in nets:
        assert net(torch.zeros(1, 3, 8, 8)).dtype == torch.float32


def test_real_clock_must_be_entered():
    nets = tiny_models()
    clock = Clock(1 if torch.get_num_threads() != 1 else 2)
    with pytest.raises(RuntimeError, match="inside `with clock:`"):
        measure_models(nets, (3, 8, 8), 1, "float32", cpu_device(), clock, Protocol.quick(), rounds=2)
