"""What other processes did to the CPUs while a row was sampled.

A busy process on another core of a small machine makes some convolution kernels run up to 2x
slower for as long as it runs (shared caches, memory bandwidth, a hypervisor that steals the
vCPU), and not others: the reference workload does not see it, so drift normalisation cannot
remove it. It has to be detected. `Activity` reads the kernel's CPU counters (`/proc/stat`:
busy and steal time of every CPU) and this process's own CPU time (`time.process_time`, all its
threads) at the moments the scheduler asks (`mark`, once per interleaved round), and answers how
many CPUs' worth of work *others* did over any span between two marks (`others_cores`): all the
busy and stolen time less this process's own, divided by the wall time.

The counters tick in jiffies (10 ms), so a single round of some 40 ms reads others' load to
about +-0.5 CPUs; a row spans its rounds (hundreds of ms) and reads it to a few hundredths.
Where `/proc/stat` does not exist (not Linux) the answer is NaN: unknown, never flagged.
"""

from __future__ import annotations

import bisect
import math
import os
import time

#: Others' average busy CPUs over a row's samples above which the row is flagged
#: `flag_contended` (measured on the development machine: quiet, 0.02-0.08; one busy process
#: on the second core, 0.9-1.0).
CONTENTION_THRESHOLD = 0.25

_STAT = "/proc/stat"


def read_cpu_seconds(path: str = _STAT) -> tuple[float, float] | None:
    """(busy, stolen) seconds of all CPUs together since boot, from the aggregate `cpu` line of
    `/proc/stat` (user nice system idle iowait irq softirq steal ...; guest time is already in
    user); None where it cannot be read."""
    try:
        with open(path, "rb") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != b"cpu":
        return None
    ticks = [int(v) for v in fields[1:9]]
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq) / hz, steal / hz


class Activity:
    """A timeline of (wall time, others' busy CPU-seconds) marks. `read` and `own` are
    replaceable so that a simulated machine can drive it in tests."""

    def __init__(self, read=read_cpu_seconds, own=time.process_time, now=time.perf_counter):
        self.read, self.own, self.now = read, own, now
        self.times: list[float] = []
        self.others: list[float] = []     # cumulative CPU-seconds of everything but this process
        self.available = read() is not None

    def mark(self) -> None:
        """Record the counters now (the scheduler calls this once per round)."""
        if not self.available:
            return
        got = self.read()
        if got is None:
            self.available = False
            return
        busy, steal = got
        self.times.append(self.now())
        self.others.append(max(busy - self.own(), 0.0) + steal)

    def others_cores(self, t0: float, t1: float) -> float:
        """Others' average busy CPUs over the marks that enclose [t0, t1] (the last mark at or
        before t0 to the first at or after t1); NaN when unknown (no counters, or no two marks)."""
        if len(self.times) < 2:
            return math.nan
        i = max(bisect.bisect_right(self.times, t0) - 1, 0)
        j = max(min(bisect.bisect_left(self.times, t1), len(self.times) - 1), i + 1)   # at least two marks
        if j >= len(self.times):
            i, j = len(self.times) - 2, len(self.times) - 1
        span = self.times[j] - self.times[i]
        return max(self.others[j] - self.others[i], 0.0) / span if span > 0 else math.nan
