"""A simulated machine whose speed switches between levels, for testing the profiler's logic
deterministically (real CPU timings are too noisy to assert on)."""

from __future__ import annotations

import numpy as np

from latprof.measure.timing import Clock


class SimRunner:
    """Stands in for a conv: its true latency in microseconds at speed level 1."""

    def __init__(self, true_us: float, noise: float = 0.01):
        self.true_us, self.noise = true_us, noise

    def __call__(self):
        raise AssertionError("the simulated clock never calls runners")


class SimClock(Clock):
    """Virtual time; every sample takes true latency x the machine's slowdown at that moment.

    The slowdown is 1.0, switching to `slow` during [k*period + period/2, (k+1)*period)."""

    def __init__(self, slow: float = 1.74, period_s: float = 0.4, seed: int = 0, overhead_s: float = 1e-4):
        self.t, self.slow, self.period, self.overhead = 0.0, slow, period_s, overhead_s
        self.rng = np.random.default_rng(seed)
        self.threads = 1
        self.calls = 0

    def slowdown(self, t: float) -> float:
        return self.slow if (t % self.period) >= self.period / 2 else 1.0

    def now(self) -> float:
        return self.t

    def sample(self, fn, reps: int = 1) -> float:
        self.calls += 1
        value = fn.true_us * self.slowdown(self.t) * (1 + fn.noise * self.rng.standard_normal())
        self.t += value * 1e-6 * reps + self.overhead
        return value

    def warmup(self, fn, budget_s: float, min_sample_s: float) -> int:
        self.t += budget_s
        return 1
