"""A simulated machine whose speed switches between levels, for testing the profiler's logic
deterministically (real CPU timings are too noisy to assert on)."""

from __future__ import annotations

import numpy as np
import torch.nn as nn

from latprof.measure.activity import Activity
from latprof.measure.timing import Clock


class SimRunner:
    """Stands in for a conv: its true latency in microseconds at speed level 1. `contended`: how
    much slower it runs while another process is busy (`SimClock.episodes`); the reference is 1."""

    def __init__(self, true_us: float, noise: float = 0.01, contended: float = 1.0):
        self.true_us, self.noise, self.contended = true_us, noise, contended

    def __call__(self):
        raise AssertionError("the simulated clock never calls runners")


class SimClock(Clock):
    """Virtual time; every sample takes true latency x the machine's slowdown at that moment.

    The slowdown is 1.0, switching to `slow` during [k*period + period/2, (k+1)*period)."""

    def __init__(self, slow: float = 1.74, period_s: float = 0.4, seed: int = 0, overhead_s: float = 1e-4,
                 episodes: tuple[tuple[float, float, float], ...] = ()):
        """`episodes`: (start s, end s, busy CPUs) of other processes' work in virtual time."""
        self.t, self.slow, self.period, self.overhead = 0.0, slow, period_s, overhead_s
        self.episodes = episodes
        self.rng = np.random.default_rng(seed)
        self.threads = 1
        self.calls = 0

    def others_busy(self, t: float) -> float:
        return sum(load for a, b, load in self.episodes if a <= t < b)

    def activity(self) -> Activity:
        """An `Activity` reading the episodes' CPU-seconds on this clock's virtual timeline."""
        def read():
            return sum(load * min(max(self.t - a, 0.0), b - a) for a, b, load in self.episodes), 0.0
        return Activity(read=read, own=lambda: 0.0, now=self.now)

    def slowdown(self, t: float) -> float:
        return self.slow if (t % self.period) >= self.period / 2 else 1.0

    def now(self) -> float:
        return self.t

    def sample(self, fn, reps: int = 1) -> float:
        self.calls += 1
        busy = fn.contended if self.others_busy(self.t) > 0 else 1.0
        value = fn.true_us * self.slowdown(self.t) * busy * (1 + fn.noise * self.rng.standard_normal())
        self.t += value * 1e-6 * reps + self.overhead
        return value

    def warmup(self, fn, budget_s: float, min_sample_s: float, min_calls: int = 2) -> int:
        self.t += budget_s
        return 1

    def pause(self, seconds: float) -> None:
        self.t += seconds

    def touch(self, fn) -> None:
        self.t += fn.true_us * 1e-6


# --- whole models ---------------------------------------------------------------------------------

REF_US = 500.0


class ModelClock(SimClock):
    """`SimClock` for whole models: a sample runs the callable, and whatever it ran (a `SimModel`
    or the `SimReference`) reports its true latency to the clock. Slow from `slow_from_s` on."""

    def __init__(self, slow: float, slow_from_s: float, seed: int = 0):
        super().__init__(slow=slow, seed=seed)
        self.slow_from_s = slow_from_s
        self.ran = None
        self.log = []        # names of what each sample ran, in order

    def slowdown(self, t: float) -> float:
        return self.slow if t >= self.slow_from_s else 1.0

    def touch(self, fn) -> None:
        """An untimed call (a warm sample's first): runs, and takes its time, but is not logged."""
        self.ran = None
        fn()
        name, true_us = self.ran
        self.t += true_us * self.slowdown(self.t) * 1e-6

    def sample(self, fn, reps: int = 1) -> float:
        self.ran = None
        fn()
        assert self.ran is not None, "the sampled callable ran no simulated workload"
        name, true_us = self.ran
        self.log.append(name)
        value = true_us * self.slowdown(self.t) * (1 + 0.01 * self.rng.standard_normal())
        self.t += value * 1e-6 * reps + self.overhead
        return value


class SimModel(nn.Module):
    def __init__(self, name: str, true_us: float, clock: ModelClock):
        super().__init__()
        self.name, self.true_us, self.clock = name, true_us, clock

    def forward(self, x):
        self.clock.ran = (self.name, self.true_us)
        return x

    def __deepcopy__(self, memo):  # measure_models times copies; they report to the same clock
        return SimModel(self.name, self.true_us, self.clock)


class SimReference:
    def __init__(self, clock: ModelClock):
        self.clock = clock

    def __call__(self):
        self.clock.ran = ("ref", REF_US)
