"""The one interleaved scheduler: conv shapes of a sweep (`Profiler`, one table row per shape)
and whole models (`modeltime.measure_models`) are sampled by the same loop (`interleaved_round`).

Why interleaved: the machines drift (one matrix product's speed switched between two levels
1.74x apart for seconds at a time on this project's CPUs). Measuring one shape to completion
and then the next bakes such a switch into the table as a fake step. Instead, a *window* of
shapes is sampled round-robin in a shuffled order, so a slow stretch hits all of them, and a
fixed reference workload is timed between samples. Each sample is scaled by
`baseline / reference-at-that-moment`; tables keep both the raw and the normalised figures.

A shape stops when its normalised samples' relative IQR is under the protocol's threshold
(after `min_samples`), or when `max_samples` / its time budget is reached. It is flagged
`flag_noisy` when the standard error of its median is still above the protocol's limit.

A shape the device cannot run (out of memory, a combination the library does not support)
becomes a row flagged `flag_failed` with the reason in `error`, whether it fails while its
runner is built and warmed up or while it is sampled; the sweep goes on with the others.
"""

from __future__ import annotations

import math
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from latprof.errors import LatprofError
from latprof.measure import backends as backends
from latprof.measure.device import Device
from latprof.spec import ConvSpec, Measurement
from latprof.tables.store import TableStore
from latprof.tables.io import now_iso
from latprof.measure.activity import Activity
from latprof.measure.cpu import cpu_kernel_names
from latprof.measure.timing import Clock, Protocol, Reference, cuda_kernel_names, summarize

#: Most bytes of inputs, weights and outputs held by one window of shapes.
MAX_WINDOW_BYTES = 2 * 1024**3

#: Reference readings at the start of a sweep that set the baseline of a new table.
BASELINE_READINGS = 7

#: Shortest span other processes' load is read over (and the step of waiting for quiet), seconds.
QUIET_SPAN_S = 0.1


@dataclass
class _Shape:
    """One thing being sampled: a conv shape of a sweep, or (spec None) a whole model."""

    spec: ConvSpec | None
    run: Callable
    reps: int
    algo: str = ""
    samples: list = field(default_factory=list)
    times: list = field(default_factory=list)
    sampled_s: float = 0.0
    gpu: list = field(default_factory=list)
    prime: bool = False        # call once, untimed, right before each sample (a whole model: warm)

    def reset(self) -> None:
        self.samples, self.times, self.sampled_s, self.gpu = [], [], 0.0, []


@dataclass
class _Group:
    """One spec's instances: the same shape allocated afresh `Protocol.instances` times and
    sampled side by side, so that the row averages over where its tensors landed in memory
    (alignment, cache-set and TLB conflicts, the kernel variant an allocation triggers) instead of
    carrying one draw of it. One table row."""

    spec: ConvSpec
    members: list[_Shape]
    redone: list = field(default_factory=list)   # why each earlier attempt was thrown away

    def pooled(self, key: str) -> list:
        return [v for m in self.members for v in getattr(m, key)]

    @property
    def sampled_s(self) -> float:
        return sum(m.sampled_s for m in self.members)

    def reset(self, why: str) -> None:
        for m in self.members:
            m.reset()
        self.redone.append(why)


@dataclass
class MeasureResult:
    measured: int = 0          # rows written by this call
    skipped: int = 0           # already in the table (a resumed or overlapping sweep)
    left: list = field(default_factory=list)   # not measured because the budget ran out
    noisy: int = 0
    drifted: int = 0
    failed: int = 0            # rows flagged failed by this call (the shape could not run)
    contended: int = 0         # rows flagged contended (another process was busy throughout)
    timed_s: float = 0.0       # time spent inside the timed samples of the rows written


def shape_failure(exc: BaseException) -> str | None:
    """One line saying why a shape could not run, or None when `exc` is not a shape's failure but
    a bug or an interruption (then it propagates). A shape's failures: out of memory (torch's
    OutOfMemoryError is a RuntimeError), errors of the device or library (RuntimeError, cuDNN's
    and Triton's), unsupported combinations (NotImplementedError, ValueError, LatprofError)."""
    failures = (RuntimeError, MemoryError, NotImplementedError, ValueError, LatprofError)
    if not isinstance(exc, failures) and not type(exc).__module__.startswith("triton"):
        return None
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


class _GuardedClock:
    """The clock as `interleaved_round` sees it in a sweep: a sample that raises a shape's failure
    (`shape_failure`) is recorded against its runner and reads NaN instead of ending the sweep."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.failed: dict[int, str] = {}   # id(run) -> why

    def __getattr__(self, name):
        return getattr(self.clock, name)

    def sample(self, fn, reps: int = 1) -> float:
        if id(fn) in self.failed:
            return math.nan
        try:
            return self.clock.sample(fn, reps)
        except Exception as exc:
            why = shape_failure(exc)
            if why is None:
                raise
            self.failed[id(fn)] = why
            return math.nan


class Profiler:
    """Owns the clock, the reference workload and the store for one sweep on one device."""

    def __init__(self, device: Device, clock: Clock, protocol: Protocol, store: TableStore, *,
                 dtype: str, host: str, deadline: float | None = None, progress: bool = True, seed: int = 0,
                 make_runner: Callable = backends.make_runner, reference: tuple[str, Callable] | None = None,
                 activity: Activity | None = None):
        """`make_runner(spec, device)`, `reference` (label, callable) and `activity` are replaceable
        so that the scheduling, normalisation and contention checks can be tested against a
        simulated machine."""
        self.device, self.clock, self.protocol, self.store = device, clock, protocol, store
        self.host, self.deadline, self.progress = host, deadline, progress
        self.make_runner = make_runner
        self.session = uuid.uuid4().hex[:12]
        self.rng = np.random.default_rng(seed)
        self.activity = activity if activity is not None else Activity(now=clock.now)
        self.activity.mark()
        label, run = reference or backends.reference_runner(device, dtype)
        self.ref = Reference(run, clock, label)
        for _ in range(BASELINE_READINGS):
            self.ref.read()
        self.activity.mark()
        self._label = label
        self.baseline = store.reference_baseline   # None for a new table: set by the first row
        self._last_ref = clock.now()
        self._guard = _GuardedClock(clock)
        self.instances = max(1, protocol.instances) if device.kind == "cpu" else 1
        self._waited_s = 0.0            # spent waiting for other processes to finish (`_wait_for_quiet`)
        self.discarded_rounds = 0       # rounds thrown away because another process was busy

    def _settle_baseline(self) -> None:
        """A new table's baseline: the median of every reference reading this session took before
        its first row (at least `BASELINE_READINGS` plus one per round, over several rounds), not of
        the first few alone: a slow start (another process, a cold cache) would otherwise scale the
        whole table (seen once: first readings 1.7x the rest, every row of the table 1.5x high)."""
        if self.baseline is None:
            self.store.set_reference(self._label, self.ref.baseline())
            self.baseline = self.store.reference_baseline

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def measure(self, specs: list[ConvSpec], desc: str = "sweep") -> MeasureResult:
        """Measure every spec not yet in the store. Stops early (returning `left`) at the deadline."""
        result = MeasureResult()
        todo = []
        for spec in dict.fromkeys(specs):
            if self.store.has(spec):
                result.skipped += 1
            else:
                todo.append(spec)
        queue: deque[ConvSpec] = deque(todo)
        active: list[_Group] = []
        bar = tqdm(total=len(todo), desc=desc, unit="shape", disable=not self.progress or not todo,
                   dynamic_ncols=True, leave=True)
        try:
            while queue or active:
                if self.out_of_time():
                    result.left = [s.spec for s in active] + list(queue)
                    break
                failed = self._fill(active, queue)
                self._round(active)
                for group in active:
                    whys = [self._guard.failed.pop(id(m.run)) for m in group.members if id(m.run) in self._guard.failed]
                    if whys:
                        failed.append((group.spec, whys[0]))
                for spec, why in failed:
                    active[:] = [g for g in active if g.spec != spec]
                    self._fail(spec, why, result, bar)
                for group in list(active):
                    row = self._maybe_finish(group)
                    if row is None:
                        continue
                    active.remove(group)
                    self.store.append(row)
                    result.measured += 1
                    result.noisy += row["flag_noisy"]
                    result.drifted += row["flag_drift"]
                    result.contended += row["flag_contended"]
                    result.timed_s += group.sampled_s
                    bar.update(1)
                    bar.set_postfix(noisy=result.noisy, drift=result.drifted, busy=result.contended, refresh=False)
        finally:
            bar.close()
        self._settle_baseline()
        return result

    def _fill(self, active: list[_Group], queue: deque) -> list[tuple[ConvSpec, str]]:
        """Start shapes from the queue until the window is full; returns those that failed to start."""
        failed = []
        held = sum(backends.nbytes(g.spec) * len(g.members) for g in active)
        while queue and len(active) < self.protocol.window:
            need = backends.nbytes(queue[0]) * self.instances
            if active and held + need > MAX_WINDOW_BYTES:
                break
            spec = queue.popleft()
            try:
                active.append(self._start(spec))
            except Exception as exc:
                why = shape_failure(exc)
                if why is None:
                    raise
                failed.append((spec, why))
                continue
            held += need
        return failed

    def _start(self, spec: ConvSpec) -> _Group:
        """Build and warm up a shape's runners, one per instance (where a shape too big for the
        device fails). The first instance warms up for the protocol's budget and sizes the
        calls per sample; the others are called once (`Clock.touch`): the code paths and oneDNN's
        primitive cache are warm by then, and warming each for the budget would cost more than
        sampling it (measured: 4.1 of a sweep's 7.4 s)."""
        run = self.make_runner(spec, self.device)
        # CPU: oneDNN's choice is read on the first call (which also creates its primitive, so it
        # counts as warm-up); CUDA: once the shape is timed (`_row`), no profiler meanwhile
        algo = self._kernel_names(run) if self.device.kind == "cpu" else ""
        reps = self.clock.warmup(run, self.protocol.warmup_s, self.protocol.min_sample_s, min_calls=1 if algo else 2)
        members = [_Shape(spec, run, reps, algo)]
        for _ in range(self.instances - 1):
            run = self.make_runner(spec, self.device)
            self.clock.touch(run)
            members.append(_Shape(spec, run, reps))
        return _Group(spec, members)

    def _fail(self, spec: ConvSpec, why: str, result: MeasureResult, bar) -> None:
        """Write the row of a shape that could not run, say so, and free what it held."""
        if self.device.kind == "cuda":
            torch.cuda.empty_cache()
        self.store.append(self._failed_row(spec, why))
        result.failed += 1
        bar.update(1)
        tqdm.write(f"failed   {spec.label()}: {why} (kept as a failed row; the sweep goes on)", file=sys.stderr)

    def _failed_row(self, spec: ConvSpec, why: str) -> dict:
        nan = math.nan
        return Measurement(
            latency_us_p50=nan, latency_us_p10=nan, latency_us_p25=nan, latency_us_p75=nan, latency_us_p90=nan,
            latency_us_min=nan, latency_us_mean=nan, rel_iqr=nan, latency_norm_us_p50=nan,
            latency_norm_us_p25=nan, latency_norm_us_p75=nan, rel_iqr_norm=nan, ref_us_p50=nan,
            ref_baseline_us=self.baseline or nan, ref_drift_rel=nan, n_samples=0, inner_reps=0,
            threads=self.clock.threads,
            macs=spec.macs(), flag_noisy=False, flag_drift=False, flag_throttled=False, algo="",
            gpu_clock_mhz=None, gpu_temp_c=None, measured_at=now_iso(), host=self.host, session=self.session,
            flag_failed=True, error=why, n_instances=0,
        ).row(spec)

    def _round(self, active: list[_Group]) -> None:
        """One interleaved round; when other processes kept a CPU busy during it, its samples are
        thrown away and the sweep waits for the machine to be quiet (`_wait_for_quiet`)."""
        members = [m for g in active for m in g.members]
        before = [(len(m.samples), m.sampled_s) for m in members]
        start = self.clock.now()
        self._last_ref = interleaved_round(members, self._guard, self.ref, self.rng, self.protocol.ref_interval_s,
                                           self._last_ref, end_gap_s=self.protocol.ref_interval_s / 2)
        self.activity.mark()
        now = self.clock.now()
        # over at least the last 0.1 s: /proc/stat ticks every 10 ms, a shorter span reads too coarsely
        busy = self.activity.others_cores(min(start, now - QUIET_SPAN_S), now)
        if self._contended(busy) and self._waited_s < self.protocol.quiet_wait_s:
            for m, (n, sampled) in zip(members, before):
                del m.samples[n:], m.times[n:], m.gpu[n:]
                m.sampled_s = sampled
            self.discarded_rounds += 1
            if self.progress:
                tqdm.write(f"busy     other processes keep {busy:.1f} CPUs busy: this round's samples are dropped; "
                           f"waiting for quiet (at most {self.protocol.quiet_wait_s - self._waited_s:.0f} s more "
                           "in this sweep, then rows are flagged contended)", file=sys.stderr)
            self._wait_for_quiet()

    def _wait_for_quiet(self) -> None:
        """Sleep in steps of `QUIET_SPAN_S` until other processes' load over a step is under the
        protocol's threshold, for at most what is left of `Protocol.quiet_wait_s` this sweep (a
        machine that is never quiet gets its rows flagged instead of a sweep that never ends)."""
        while self._waited_s < self.protocol.quiet_wait_s:
            t0 = self.clock.now()
            self.clock.pause(QUIET_SPAN_S)
            self.activity.mark()
            t1 = self.clock.now()
            self._waited_s += t1 - t0
            if not self._contended(self.activity.others_cores(t0, t1)):
                break

    def _normalised(self, times: list, samples: list) -> tuple[np.ndarray, np.ndarray]:
        """Samples scaled by baseline / reference(t); before a new table's baseline is settled, by
        the current median reading (only ratios are used until then)."""
        ref_at = self.ref.at(times)
        return np.asarray(samples) * ((self.baseline or self.ref.baseline()) / ref_at), ref_at

    def _maybe_finish(self, group: _Group) -> dict | None:
        p = self.protocol
        samples, times = group.pooled("samples"), group.pooled("times")
        n = len(samples)
        if n < p.min_samples or any(not m.samples for m in group.members):
            return None
        norm, ref_at = self._normalised(times, samples)
        quiet = summarize(norm).rel_iqr <= p.noise_threshold
        if not (quiet or n >= p.max_samples or group.sampled_s >= p.shape_budget_s):
            return None
        drift = float(ref_at.max() / ref_at.min() - 1.0)
        busy = self.activity.others_cores(min(times), max(times))
        redo = [why for why, bad, allowed in (
            ("contended", self._contended(busy), p.remeasure_contended),
            ("drift", drift > p.drift_threshold, p.remeasure_drifted)) if bad and group.redone.count(why) < allowed]
        if redo:
            group.reset(redo[0])
            return None
        if self.baseline is None:          # the first row of a new table: normalise to the settled baseline
            self._settle_baseline()
            norm, ref_at = self._normalised(times, samples)
        return self._row(group, norm, ref_at, drift, busy)

    def _row(self, group: _Group, norm: np.ndarray, ref_at: np.ndarray, drift: float, busy: float) -> dict:
        raw, nrm = summarize(group.pooled("samples")), summarize(norm)
        gpu = group.pooled("gpu")
        clocks = [g["gpu_clock_mhz"] for g in gpu if "gpu_clock_mhz" in g]
        temps = [g["gpu_temp_c"] for g in gpu if "gpu_temp_c" in g]
        rel_se, spread = _row_error(group, norm, nrm)
        first = group.members[0]
        return Measurement(
            latency_us_p50=raw.p50, latency_us_p10=raw.p10, latency_us_p25=raw.p25,
            latency_us_p75=raw.p75, latency_us_p90=raw.p90, latency_us_min=raw.min,
            latency_us_mean=raw.mean, rel_iqr=raw.rel_iqr,
            latency_norm_us_p50=nrm.p50, latency_norm_us_p25=nrm.p25, latency_norm_us_p75=nrm.p75,
            rel_iqr_norm=nrm.rel_iqr,
            ref_us_p50=float(np.median(ref_at)), ref_baseline_us=self.baseline, ref_drift_rel=drift,
            n_samples=len(norm), inner_reps=first.reps, threads=self.clock.threads,
            macs=group.spec.macs(),
            flag_noisy=bool(rel_se > self.protocol.median_se_threshold),
            flag_drift=bool(drift > self.protocol.drift_threshold),
            flag_throttled=any(g.get("throttled") for g in gpu),
            algo=first.algo or (self._kernel_names(first.run) if self.device.kind == "cuda" else ""),
            gpu_clock_mhz=float(np.median(clocks)) if clocks else None,
            gpu_temp_c=float(max(temps)) if temps else None,
            measured_at=now_iso(), host=self.host, session=self.session,
            rel_se=rel_se, n_instances=len(group.members), instance_spread=spread,
            contention=busy, flag_contended=self._contended(busy),
        ).row(group.spec)

    def _contended(self, busy: float) -> bool:
        """Others' load flags CPU rows only: a GPU's events time the device, and GPU servers'
        host CPUs are busy with other jobs much of the time (the value is still recorded)."""
        return bool(self.device.kind == "cpu" and busy > self.protocol.contention_threshold)

    def _kernel_names(self, run: Callable) -> str:
        """cuDNN's kernels (CUDA) or oneDNN's implementations (CPU) one call of `run` uses."""
        if self.device.kind == "cuda":
            return cuda_kernel_names(run)
        return cpu_kernel_names(run) if self.make_runner is backends.make_runner else ""   # simulated: none


def _row_error(group: _Group, norm: np.ndarray, nrm) -> tuple[float, float]:
    """(relative standard error of the row's median, spread of its instances' medians). The
    error is the larger of the samples' own (0.93 rel IQR / sqrt(n)) and the instances' scatter
    (their standard deviation / sqrt(k)): where placement moves an instance's speed, the second
    is the honest one. Spread: (max - min) / median of the instance medians, NaN for one instance."""
    within = nrm.median_rel_se
    if len(group.members) < 2:
        return float(within), math.nan
    medians, at = [], 0
    for m in group.members:
        medians.append(float(np.median(norm[at:at + len(m.samples)])))
        at += len(m.samples)
    medians = np.asarray(medians)
    between = float(np.std(medians, ddof=1) / np.sqrt(len(medians)) / nrm.p50)
    return max(float(within), between), float((medians.max() - medians.min()) / nrm.p50)

def interleaved_round(items: list[_Shape], clock: Clock, ref: Reference, rng: np.random.Generator,
                      ref_interval_s: float, last_ref: float, end_gap_s: float = 0.0) -> float:
    """The one sampling loop: one sample of every item, in a shuffled order, with a reference
    reading whenever `ref_interval_s` has passed and one at the end unless the last was under
    `end_gap_s` ago (a sweep passes half the interval: rounds of small shapes last a few ms, and a
    reading after each cost a sixth of a quick sweep); each sample is placed at its mid time on the
    drift timeline. Returns the time of the last reference reading."""
    for i in rng.permutation(len(items)):
        item = items[i]
        if clock.now() - last_ref >= ref_interval_s:
            ref.read()
            last_ref = clock.now()
        if item.prime:
            clock.touch(item.run)
        t0 = clock.now()
        item.samples.append(clock.sample(item.run, item.reps))
        t1 = clock.now()
        item.times.append((t0 + t1) / 2)
        item.sampled_s += t1 - t0
        state = clock.gpu_state()
        if state:
            item.gpu.append(state)
    if clock.now() - last_ref >= end_gap_s:
        ref.read()
        last_ref = clock.now()
    return last_ref
