"""Whole-model timing for `latprof prune`: every model as a ratio to the original, timed in the
same interleaved rounds (`Timer`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch.nn as nn

from latprof.measure import device as devices
from latprof.measure.modeltime import measure_session
from latprof.measure.timing import Clock, Protocol, Stats, summarize
from latprof.spec import Context

#: Copies of the original in every whole-model timing session (`Timer.ratios`).
ORIGINAL_COPIES = 2


@dataclass
class Timer:
    """Whole-model timing on this machine, when it is the table's device, relative to the original.

    Every session times the original model next to the models asked about, and a model's latency
    is its per-round ratio to the original (both sampled in the same round) times the original's
    latency pooled over every session so far (`scale_us`: the median of its drift-normalised
    medians, on the table's scale). Measured on this project's 2-core CPU: the same two models
    timed in two sessions a minute apart read 5-7% apart in absolute terms (and the drift
    reference, a small conv, does not follow whole models), while their ratio moved by 1%; so
    the loop's measurement of a candidate, the final report's and a user's own timing of the saved
    files agree on the ratio, and differ only by how fast the machine was that minute."""

    here: devices.Device
    clock: Clock
    protocol: Protocol
    ctx: Context
    size: tuple[int, int, int]
    baseline_us: float | None
    original: nn.Module | None = None
    sessions_us: list = field(default_factory=list)   # the original's normalised median, each session

    def ratios(self, nets: list[nn.Module]) -> list[np.ndarray]:
        """Each model's per-round latency over the original's, from one interleaved session. The
        original runs as `ORIGINAL_COPIES` copies and the denominator is their mean in the round.
        With warm samples, one copy and the mean of three gave the same ratios over four sessions
        (`bench/probes/original_copies.py`: 0.567-0.575 and 0.568-0.580); the second copy is
        insurance against one copy's unlucky placement, at the cost of one more original per round."""
        k = ORIGINAL_COPIES
        session = measure_session([self.original] * k + list(nets), self.size, self.ctx.batch, self.ctx.dtype,
                                  self.here, self.clock, self.protocol, baseline_us=self.baseline_us,
                                  layout=self.ctx.layout)
        self.sessions_us.append(float(np.mean([st.p50 for st in session.stats[:k]])))
        base = np.mean(session.raw[:k], axis=0)
        return [r / base for r in session.raw[k:]]

    def scale_us(self) -> float:
        return float(np.median(self.sessions_us))

    def measure(self, nets: list[nn.Module], summary: bool = False) -> list:
        """Each model's latency (us, on the pooled original's scale), timed together with the
        original in interleaved rounds (with `summary`: the quantiles, `timing.Stats`)."""
        ratios = self.ratios(nets)
        scale = self.scale_us()
        stats = [scaled(summarize(r), scale) for r in ratios]
        return stats if summary else [st.p50 for st in stats]

    def original_stats(self) -> Stats:
        """The original's latency: its medians over the sessions (us)."""
        return summarize(self.sessions_us)


def scaled(st: Stats, k: float) -> Stats:
    return Stats(st.p10 * k, st.p25 * k, st.p50 * k, st.p75 * k, st.p90 * k, st.min * k, st.mean * k, st.n)
