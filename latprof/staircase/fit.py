"""Fit the latency staircase of one sweep line: plateaus, edges, efficient channel counts.

Latency as a function of a channel count c is a staircase: flat plateaus separated by
jumps (tile and wave quantization on GPUs; vector blocking and library algorithm
switches on CPUs, where latency can also *fall* as c grows). `fit_steps` recovers the
plateaus from noisy measurements and names the channel counts worth pruning to.

Contract
--------
- Inputs: ``channels`` strictly increasing integer channel counts (>= 1), not
  necessarily contiguous; ``latency`` the matching positive latencies, any time unit
  (levels and spreads come back in that unit).
- A segment is an inclusive range ``[start, end]`` of *measured* channel counts:
  ``start`` and ``end`` are measured, used (not flagged) points. Unmeasured counts
  inside a segment are assumed to share its level.
- An edge is the first channel count of a new segment (``segments[k].start`` for
  k >= 1). Unmeasured counts between two segments belong to neither: the true edge
  lies somewhere in ``edge_intervals[k-1] = (segments[k-1].end + 1, segments[k].start)``
  (inclusive both ends), and the reported edge is the right end of that interval,
  the first measured count known to be at the new level. With contiguous
  measurements the interval is a single count and the edge is exact.
- Flagged points (those the caller excludes: `latprof.staircase.lines` excludes rows measured on a
  throttling GPU, see `staircase.lines.TableIndex`) take no part in the fit; they act like
  unmeasured counts and are listed in ``StepFit.flagged``.
- Efficient counts (the Pareto frontier of channels vs latency): the ``end`` of
  segment k is efficient when its level is faster, by more than the noise, than
  every later segment: ``level_k * exp(noise) < min(level_j for j > k)``. The last
  segment's end (the largest used count, C in a full sweep) is always efficient.
  Pruning to a count that is not efficient buys no measurable speed over keeping
  more channels.

Method
------
1. Work on log-latency, so relative noise is one constant ``sigma`` along the line.
   ``sigma`` comes from ``noise_rel`` or, if not given, from the MAD of first
   differences (robust because jumps are few among the differences); it is floored
   at ``min_noise_rel`` so that noise-free data still has a scale.
2. Change points: ruptures PELT with an l1 cost (medians, robust to outliers) and
   penalty ``penalty * sigma * max(1, ln n)``. This is deliberately permissive; step 3
   removes the surplus.
3. Merge rule: adjacent segments A, B merge while
   ``|median_A - median_B| < sigma * max(1, z * sqrt(pi/2) * sqrt(1/n_A + 1/n_B))``
   (log units; ``sqrt(pi/2) * sigma / sqrt(n)`` is the standard error of a median).
   So no reported step is smaller than the noise, and short segments must differ
   by ``z`` standard errors. The closest pair merges first.
   Spike rule: an interior one-point segment *above* both neighbours whose
   neighbours would merge is a timing outlier (interference only ever adds time):
   the three merge and the point is listed in ``StepFit.outliers``. A one-point
   *dip* is kept, since it is a candidate efficient count; remeasure it if in doubt.
   A spike next to a real edge cannot be told from a one-count plateau and is kept.
   ``StepFit.outliers`` lists the absorbed spikes and every used point more than
   4 sigma above its segment's level (the l1 cost keeps such points inside a
   segment without letting them move its level).
4. Each boundary is refined by exhaustive local search between its neighbouring
   boundaries (least total l1 cost), then step 3 runs again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import ruptures as rpt
from ruptures.costs import CostL1

from latprof.errors import LatprofError

__all__ = ["Segment", "StepFit", "fit_steps", "estimate_noise_rel"]

_MAD_TO_SD = 1.4826  # MAD of a normal sample times this estimates its standard deviation
_MEDIAN_SE = math.sqrt(math.pi / 2)  # standard error of a median, in units of sd/sqrt(n)
_OUTLIER_SD = 4.0  # a point this many sd above its level is an outlier (p ~ 3e-5 if normal)


@dataclass(frozen=True)
class Segment:
    """One plateau: measured counts ``start..end`` (inclusive) at one latency level.

    ``level`` is the median latency and ``spread`` the interquartile range of the
    ``n`` used points, both in the caller's latency unit.
    """

    start: int
    end: int
    level: float
    spread: float
    n: int


@dataclass(frozen=True)
class StepFit:
    """Result of `fit_steps`; see the module docstring for the contract."""

    segments: tuple[Segment, ...]
    edges: tuple[int, ...]
    edge_intervals: tuple[tuple[int, int], ...]
    efficient: tuple[int, ...]
    noise_rel: float  # sigma of log-latency used by the fit (~ relative noise)
    flagged: tuple[int, ...] = ()
    outliers: tuple[int, ...] = ()

    def to_frame(self) -> pd.DataFrame:
        """One row per segment; ``edge_lo``/``edge_hi`` bound the edge that opens it."""
        eff = set(self.efficient)
        rows = []
        for k, s in enumerate(self.segments):
            lo, hi = self.edge_intervals[k - 1] if k else (s.start, s.start)
            rows.append(
                {"start": s.start, "end": s.end, "level": s.level, "spread": s.spread,
                 "n": s.n, "edge_lo": lo, "edge_hi": hi, "efficient": s.end in eff}
            )
        cols = ["start", "end", "level", "spread", "n", "edge_lo", "edge_hi", "efficient"]
        return pd.DataFrame(rows, columns=cols)


class _CostL1(CostL1):
    """ruptures' l1 cost allowing one-point segments (ruptures requires two).

    A level measured at a single count is normal in sparse sweeps.
    """

    def __init__(self) -> None:
        super().__init__()
        self.min_size = 1


def estimate_noise_rel(latency) -> float:
    """Robust relative noise (sd of log-latency) from the MAD of first differences.

    Differences cancel the plateau levels; the few that straddle a jump are outvoted
    by the median. Returns 0.0 for fewer than three points.
    """
    y = np.log(np.asarray(latency, dtype=float))
    if y.size < 3:
        return 0.0
    return float(_MAD_TO_SD * np.median(np.abs(np.diff(y))) / math.sqrt(2))


def _validate(channels, latency, flagged):
    c = np.asarray(channels)
    t = np.asarray(latency, dtype=float)
    if c.ndim != 1 or t.ndim != 1:
        raise LatprofError("fit_steps: channels and latency must be one-dimensional sequences.")
    if c.size != t.size:
        raise LatprofError(
            f"fit_steps: {c.size} channel counts but {t.size} latencies; pass one latency per count."
        )
    if c.size == 0:
        raise LatprofError("fit_steps: no measurements; measure the sweep line first.")
    cf = c.astype(float)
    if not np.all(np.isfinite(cf)) or np.any(cf != np.round(cf)):
        raise LatprofError("fit_steps: channel counts must be integers.")
    c = c.astype(np.int64)
    if c[0] < 1 or np.any(np.diff(c) <= 0):
        raise LatprofError(
            "fit_steps: channel counts must be >= 1 and strictly increasing; "
            "sort the line and merge duplicate counts (e.g. by median) first."
        )
    if not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise LatprofError("fit_steps: latencies must be finite and > 0.")
    if flagged is None:
        f = np.zeros(c.size, dtype=bool)
    else:
        f = np.asarray(flagged, dtype=bool)
        if f.shape != c.shape:
            raise LatprofError(f"fit_steps: flagged has {f.size} entries, expected {c.size}.")
    if f.all():
        raise LatprofError("fit_steps: every point is flagged; remeasure the line.")
    return c, t, f


def _l1(y: np.ndarray) -> float:
    return float(np.abs(y - np.median(y)).sum()) if y.size else 0.0


def _merge_threshold(sigma: float, z: float, na: int, nb: int) -> float:
    return sigma * max(1.0, z * _MEDIAN_SE * math.sqrt(1.0 / na + 1.0 / nb))


def _merge_pass(y, bounds, sigma, z, outliers) -> list[int]:
    """Apply the spike and merge rules until nothing changes. ``bounds`` are segment starts."""
    b = list(bounds)
    while True:
        ends = b[1:] + [y.size]
        segs = [y[s:e] for s, e in zip(b, ends)]
        med = [float(np.median(s)) for s in segs]
        # spike rule: interior single point above both neighbours that agree
        for k in range(1, len(segs) - 1):
            if segs[k].size != 1 or not (med[k] > med[k - 1] and med[k] > med[k + 1]):
                continue
            thr = _merge_threshold(sigma, z, segs[k - 1].size, segs[k + 1].size)
            if abs(med[k - 1] - med[k + 1]) < thr:
                outliers.add(b[k])
                del b[k : k + 2]
                break
        else:
            ratios = [
                abs(med[k] - med[k + 1]) / _merge_threshold(sigma, z, segs[k].size, segs[k + 1].size)
                for k in range(len(segs) - 1)
            ]
            if not ratios or min(ratios) >= 1.0:
                return b
            del b[int(np.argmin(ratios)) + 1]


def _refine(y, bounds, min_size) -> list[int]:
    """Move each boundary to the split of least l1 cost between its neighbours."""
    b = list(bounds)
    for k in range(1, len(b)):
        left, right = b[k - 1], (b[k + 1] if k + 1 < len(b) else y.size)
        cands = range(left + min_size, right - min_size + 1)
        costs = [(_l1(y[left:t]) + _l1(y[t:right]), abs(t - b[k]), t) for t in cands]
        if costs:
            b[k] = min(costs)[2]  # ties go to the split nearest the current one
    return b


def fit_steps(
    channels,
    latency,
    *,
    flagged=None,
    noise_rel: float | None = None,
    min_size: int = 1,
    penalty: float = 1.0,
    z: float = 3.0,
    min_noise_rel: float = 1e-3,
) -> StepFit:
    """Fit plateaus to one sweep line; contract and method in the module docstring.

    ``noise_rel``: relative noise (sd of log-latency) of one measurement, if known
    (the profiler's relative IQR / 1.35 is a fair value); estimated from the data
    otherwise. ``min_size``: fewest used points per segment. ``penalty``, ``z``:
    change-point penalty scale and merge significance (lower finds smaller steps
    and more false ones). ``min_noise_rel``: floor on the noise; timing never
    resolves steps below 0.1 %.
    """
    c, t, f = _validate(channels, latency, flagged)
    if noise_rel is not None and not (math.isfinite(noise_rel) and noise_rel >= 0):
        raise LatprofError(f"fit_steps: noise_rel must be a finite number >= 0, got {noise_rel}.")
    if int(min_size) != min_size or min_size < 1:
        raise LatprofError(f"fit_steps: min_size must be an integer >= 1, got {min_size}.")
    min_size = int(min_size)
    x, lat = c[~f], t[~f]
    y = np.log(lat)
    n = y.size
    sigma = math.log1p(noise_rel) if noise_rel is not None else estimate_noise_rel(lat)
    sigma = max(sigma, min_noise_rel)

    if n >= 2 * min_size:
        algo = rpt.Pelt(custom_cost=_CostL1(), min_size=min_size, jump=1).fit(y)
        bkps = algo.predict(pen=penalty * sigma * max(1.0, math.log(n)))
        bounds = [0] + [int(e) for e in bkps[:-1]]
    else:
        bounds = [0]
    outliers: set[int] = set()
    for _ in range(3):
        before = bounds
        bounds = _merge_pass(y, bounds, sigma, z, outliers)
        bounds = _refine(y, bounds, min_size)
        bounds = _merge_pass(y, bounds, sigma, z, outliers)
        if bounds == before:
            break

    ends = bounds[1:] + [n]
    segments = tuple(
        Segment(
            start=int(x[s]), end=int(x[e - 1]), level=float(np.median(lat[s:e])),
            spread=float(np.subtract(*np.percentile(lat[s:e], [75, 25]))), n=e - s,
        )
        for s, e in zip(bounds, ends)
    )
    edges = tuple(s.start for s in segments[1:])
    intervals = tuple((a.end + 1, b.start) for a, b in zip(segments, segments[1:]))
    for s, e in zip(bounds, ends):  # points far above their level, kept inside by l1
        outliers.update(s + np.flatnonzero(y[s:e] - np.median(y[s:e]) > _OUTLIER_SD * sigma))
    out_ch = tuple(sorted(int(x[i]) for i in outliers if i not in bounds))
    return StepFit(
        segments=segments, edges=edges, edge_intervals=intervals,
        efficient=_efficient(segments, sigma), noise_rel=sigma,
        flagged=tuple(int(v) for v in c[f]), outliers=out_ch,
    )


def _efficient(segments, sigma: float) -> tuple[int, ...]:
    """Right ends of the segments faster, by more than the noise, than all later ones."""
    out, best = [], math.inf
    for s in reversed(segments):
        if math.log(s.level) + sigma < best:
            out.append(s.end)
        best = min(best, math.log(s.level))
    return tuple(sorted(out))
