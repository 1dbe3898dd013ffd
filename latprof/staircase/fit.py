"""Fit the latency staircase of one sweep line: sloped plateaus, edges, outliers, efficient counts.

Latency as a function of a channel count c is a staircase: plateaus separated by jumps (tile
and wave quantization on GPUs; vector blocking and library algorithm switches on CPUs, where
latency can also *fall* as c grows). Inside a plateau latency may still rise a little with c
(more data to move). `fit_steps` recovers the plateaus from noisy measurements, says how
significant each edge is, and names the channel counts worth pruning to.

Contract
--------
- Inputs: ``channels`` strictly increasing integer counts (>= 1), not necessarily contiguous;
  ``latency`` the matching positive latencies, any time unit (levels come back in that unit);
  optionally ``rel_se``, each row's own relative standard error of its median (NaN: unknown).
- A segment is an inclusive range ``[start, end]`` of *measured* counts; ``start`` and ``end``
  are used points. Its latency is ``level * exp(slope * (c - end))``: ``level`` is the fitted
  latency at ``end`` (the median of its points when the segment is flat) and ``slope`` the
  rise of log-latency per channel, 0 for a flat segment. A plateau rises by at most
  ``max_rise`` noise sigmas across; a steeper rise is a staircase and is cut into segments.
  Unmeasured counts inside a segment follow its line.
- An edge is the first count of a new segment (``segments[k].start`` for k >= 1). Unmeasured
  counts between two segments belong to neither: the true edge lies in ``edge_intervals[k-1] =
  (segments[k-1].end + 1, segments[k].start)`` (inclusive), and the reported edge is its right
  end, the first measured count known to be at the new level. With contiguous measurements
  the interval is one count and the edge is exact. With a ``period`` (a tile width w, given or
  found, see Method 5) an interval that holds exactly one count ``m*w + 1`` reports that count
  as the edge (tile quantization puts every tile edge there); ``edge_intervals`` stay as
  measured.
- ``jumps[k]`` is the relative level change at edge k (the two segments' lines compared at the
  middle of the interval) and ``z_scores[k]`` that change over its standard error.
- One-point spikes and dips are outliers, never segments: a single point above both
  neighbouring segments or below both (as their lines predict at its count) is listed in
  ``outliers`` and takes no part in the fit; so is a point more than 5 sigma from its
  segment's line. The exception is a point at an edge: when its neighbouring segments differ
  from each other by more than it differs from the nearer of them, it is a one-count plateau
  between two edges (an algorithm switch one count from a tile edge), which is likelier than
  an outlier landing exactly there. A single point *between* the levels of its neighbours is kept as a one-point
  segment (a narrow plateau, or the only point of a plateau in a sparse sweep); so is a single
  point at either end of the line, which has one neighbour only.
- Flagged points (those the caller excludes: `latprof.staircase.lines` excludes rows measured
  on a throttling GPU, see `staircase.lines.excluded_rows`) take no part in the fit; they act
  like unmeasured counts and are listed in ``flagged``.
- Efficient counts (the Pareto frontier of channels vs latency): the ``end`` of segment k is
  efficient when its level is faster, by more than the noise, than every later count:
  ``level_k * exp(noise) < min over later segments of their lowest fitted latency``. The last
  segment's end is always efficient. Pruning to a count that is not efficient buys no
  measurable speed over keeping more channels.

Method
------
(`latprof.staircase.changepoint`; constants there, names in capitals)

1. Work on log-latency y, where relative noise is additive. Each point's sigma is
   ``sqrt(se_i^2 + tau^2)``, floored at ``min_noise_rel``: se_i its own standard error
   (``rel_se``, at least SE_FLOOR_SHARE of its neighbours' median; rows without one take the
   median of the others, else ``noise_rel``), and tau the scatter between rows that no row
   reports (drift between rows). On a dense line (DENSE_PAIRS) tau is set so that the TAU_Q
   quantile of the squared differences of neighbouring counts, less the common slope, in
   units of their variance, is that of a chi-square with one degree of freedom (steps sit in
   the upper tail); on a sparse line neighbours are measured where an edge was bisected, so
   tau is 0 there.
2. Segment cost: weighted least squares (weights 1 / sigma^2) of a level on the line's common
   slope; a segment of OWN_SLOPE_MIN_N points or more may take a slope of its own when that
   lowers the cost by SLOPE_PENALTY, its rise across (beyond the common slope) bounded by
   ``max_rise`` sigma. The common slope is the weighted median of the segments' own slopes:
   first over a flat, permissive segmentation, then over the fit's segments (and tau again).
   Change points: ruptures PELT with this cost, penalty ``penalty``; deliberately permissive.
3. Outliers (see the contract) are taken out and step 2 runs again, up to OUTLIER_ROUNDS times.
4. Merge rule: adjacent segments A, B merge while one segment over both costs less than
   ``z^2 + 2 ln((n_A + n_B) / 2)`` more than the two (a likelihood-ratio test whose threshold
   grows with the number of places an edge could have been put; ONE_POINT_EXTRA more for a
   level seen at a single count between close neighbours), or while their jump is below one
   sigma or below 2 standard errors. The weakest pair merges first. Each boundary then moves
   to the split of least cost between its neighbours, and the merge runs again.
5. Period (``period="auto"``; `latprof.staircase.period`): on a dense line, the tile width w
   in 2..128 at whose counts ``m*w + 1`` the neighbour differences, each in units of its own
   standard error and clipped, stand out from the rest (`step_period`); else, after a first
   fit, the largest w whose counts ``m*w + 1`` hold the exactly located edges beyond chance
   (`infer_period`). With a period the common slope and tau come from neighbours inside one
   tile, a boundary at ``m*w + 1`` gets a lower PELT penalty and merge threshold and any other
   a higher one (PRIOR_ON, PRIOR_OFF, Z_ALIGNED), a segment spanning several tiles is cut into
   its tiles when a line plus one step per tile fits it better by STAIR_CHI2, and edges in
   unmeasured intervals are placed as the contract says. Then the periodic prior pass
   (`period.tile_steps`): when the differences across tile starts inside segments exceed those
   within tiles (TILE_GATE: the line steps at its tiles, a sloped plateau does not), every
   tile start left inside a segment whose local jump (its tile against the one before, each
   row's own error) reaches TILE_Z standard errors becomes an edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from latprof.errors import LatprofError
from latprof.staircase.changepoint import SE_FLOOR_SHARE, Segmenter, WlsCost, infer_period, local_median, step_period

__all__ = ["Segment", "StepFit", "fit_steps", "estimate_noise_rel", "infer_period", "step_period"]

@dataclass(frozen=True)
class Segment:
    """One plateau: measured counts ``start..end`` (inclusive) whose latency is
    ``level * exp(slope * (c - end))``; ``spread`` is the interquartile range of the ``n`` used
    points around that line, in the caller's latency unit."""

    start: int
    end: int
    level: float
    spread: float
    n: int
    slope: float = 0.0

    def at(self, c: float) -> float:
        """Fitted latency at count c."""
        return self.level * math.exp(self.slope * (c - self.end))


@dataclass(frozen=True)
class StepFit:
    """Result of `fit_steps`; see the module docstring for the contract."""

    segments: tuple[Segment, ...]
    edges: tuple[int, ...]
    edge_intervals: tuple[tuple[int, int], ...]
    efficient: tuple[int, ...]
    noise_rel: float  # median sigma of log-latency over the used points (~ relative noise)
    flagged: tuple[int, ...] = ()
    outliers: tuple[int, ...] = ()
    jumps: tuple[float, ...] = ()      # relative level change at each edge (after / before - 1)
    z_scores: tuple[float, ...] = ()   # that change over its standard error
    tau: float = 0.0                   # scatter between rows found on top of their own errors
    period: int | None = None          # tile width used to place edges in unmeasured intervals

    def to_frame(self) -> pd.DataFrame:
        """One row per segment; ``edge_lo``/``edge_hi`` bound the edge that opens it, ``jump`` and
        ``z`` describe that edge (0 for the first segment)."""
        eff = set(self.efficient)
        rows = []
        for k, s in enumerate(self.segments):
            lo, hi = self.edge_intervals[k - 1] if k else (s.start, s.start)
            rows.append({"start": s.start, "end": s.end, "level": s.level, "spread": s.spread, "n": s.n,
                         "edge_lo": lo, "edge_hi": hi, "efficient": s.end in eff, "slope": s.slope,
                         "jump": self.jumps[k - 1] if k else 0.0, "z": self.z_scores[k - 1] if k else 0.0})
        cols = ["start", "end", "level", "spread", "n", "edge_lo", "edge_hi", "efficient", "slope", "jump", "z"]
        return pd.DataFrame(rows, columns=cols)


def estimate_noise_rel(latency) -> float:
    """Robust relative noise (sd of log-latency) from the MAD of first differences.

    Differences cancel the plateau levels; the few that straddle a jump are outvoted by the
    median. Returns 0.0 for fewer than three points.
    """
    y = np.log(np.asarray(latency, dtype=float))
    if y.size < 3:
        return 0.0
    return float(1.4826 * np.median(np.abs(np.diff(y))) / math.sqrt(2))


def _validate(channels, latency, flagged, rel_se):
    c = np.asarray(channels)
    t = np.asarray(latency, dtype=float)
    if c.ndim != 1 or t.ndim != 1:
        raise LatprofError("fit_steps: channels and latency must be one-dimensional sequences.")
    if c.size != t.size:
        raise LatprofError(f"fit_steps: {c.size} channel counts but {t.size} latencies; pass one latency per count.")
    if c.size == 0:
        raise LatprofError("fit_steps: no measurements; measure the sweep line first.")
    cf = c.astype(float)
    if not np.all(np.isfinite(cf)) or np.any(cf != np.round(cf)):
        raise LatprofError("fit_steps: channel counts must be integers.")
    c = c.astype(np.int64)
    if c[0] < 1 or np.any(np.diff(c) <= 0):
        raise LatprofError("fit_steps: channel counts must be >= 1 and strictly increasing; "
                           "sort the line and merge duplicate counts (e.g. by median) first.")
    if not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise LatprofError("fit_steps: latencies must be finite and > 0.")
    f = np.zeros(c.size, dtype=bool) if flagged is None else np.asarray(flagged, dtype=bool)
    if f.shape != c.shape:
        raise LatprofError(f"fit_steps: flagged has {f.size} entries, expected {c.size}.")
    if f.all():
        raise LatprofError("fit_steps: every point is flagged; remeasure the line.")
    se = np.full(c.size, np.nan) if rel_se is None else np.asarray(rel_se, dtype=float)
    if se.shape != c.shape:
        raise LatprofError(f"fit_steps: rel_se has {se.size} entries, expected {c.size}.")
    if np.any(se[np.isfinite(se)] < 0):
        raise LatprofError("fit_steps: rel_se must be >= 0 (NaN where a row has no error estimate).")
    return c, t, f, se


def fit_steps(
    channels,
    latency,
    *,
    flagged=None,
    rel_se=None,
    noise_rel: float | None = None,
    min_size: int = 1,
    penalty: float = 3.0,
    z: float = 2.75,
    min_noise_rel: float = 1e-3,
    max_rise: float = 3.0,
    period: int | str | None = "auto",
) -> StepFit:
    """Fit sloped plateaus to one sweep line; contract and method in the module docstring.

    ``rel_se``: each row's relative standard error of its median (the profiler's
    ``0.93 * rel_iqr / sqrt(n)``), NaN where unknown. ``noise_rel``: one relative noise for
    every row without its own (estimated from the data when neither is given). ``min_size``:
    fewest used points per segment. ``penalty``: PELT penalty (chi-square units); ``z``: merge
    significance (lower finds smaller steps and more false ones). ``min_noise_rel``: floor on
    each point's noise; timing never resolves steps below 0.1 %. ``max_rise``: most a plateau
    rises across, in sigmas. ``period``: tile width to place edges in unmeasured intervals, or
    "auto" to infer it from the exactly located edges.
    """
    c, t, f, se = _validate(channels, latency, flagged, rel_se)
    if noise_rel is not None and not (math.isfinite(noise_rel) and noise_rel >= 0):
        raise LatprofError(f"fit_steps: noise_rel must be a finite number >= 0, got {noise_rel}.")
    if int(min_size) != min_size or min_size < 1:
        raise LatprofError(f"fit_steps: min_size must be an integer >= 1, got {min_size}.")
    if period not in (None, "auto") and (int(period) != period or period < 2):
        raise LatprofError(f"fit_steps: period must be an integer >= 2, 'auto' or None, got {period!r}.")
    used = ~f
    x, lat = c[used], t[used]
    y = np.log(lat)
    s = se[used]
    known = np.isfinite(s)
    if known.any():
        s = np.where(known, s, float(np.median(s[known])))
    elif noise_rel is not None:
        s = np.full(x.size, float(noise_rel))
    else:
        s = np.zeros(x.size)  # all scatter is found as tau
    s = np.maximum(s, SE_FLOOR_SHARE * local_median(s))
    st = Segmenter(x.astype(float), y, np.log1p(s) ** 2, min_noise_rel, max_rise, z, penalty, int(min_size),
              None if period == "auto" else period)
    if period == "auto":
        st.period = step_period(x, y, st.sigma)
    if st.period:
        st.retile()
    keep, bounds, cost, outliers = st.run()
    if not st.period:  # the plateaus' slope once the edges are known (the first estimate errs to 0)
        b0 = st.common_slope(keep, bounds)
        if b0 != st.b0:
            st.b0 = b0
            st.set_tau(st.neighbour_tau(b0))
            keep, bounds, cost, outliers = st.run()
    if period == "auto" and not st.period:
        xs = x[keep]
        st.period = infer_period([xs[b] for b in bounds[1:] if xs[b] == xs[b - 1] + 1])
        if st.period:
            st.retile()
            keep, bounds, cost, outliers = st.run()
    return _result(st, c, t, f, x, lat, keep, bounds, cost, outliers)


def _result(st: Segmenter, c, t, f, x, lat, keep, bounds, cost: WlsCost, outliers) -> StepFit:
    n = keep.size
    segs = list(zip(bounds, bounds[1:] + [n]))
    segments = []
    for s, e in segs:
        idx = keep[s:e]
        _, ym, slope, xm, _, _ = cost.model_of(s, e)
        xe = float(x[idx[-1]])
        if slope or st.b0:  # fitted log-latency: ym + slope (c - xm) + b0 c
            level = math.exp(ym + slope * (xe - xm) + st.b0 * xe)
            resid = lat[idx] / np.exp(ym + slope * (x[idx] - xm) + st.b0 * x[idx]) * level
            slope += st.b0
        else:
            level, resid = float(np.median(lat[idx])), lat[idx]
        segments.append(Segment(start=int(x[idx[0]]), end=int(xe), level=level,
                                spread=float(np.subtract(*np.percentile(resid, [75, 25]))), n=e - s,
                                slope=float(slope)))
    intervals = tuple((a.end + 1, b.start) for a, b in zip(segments, segments[1:]))
    jumps, zs = [], []
    for a, b in zip(segs, segs[1:]):
        d, sd = st.jump(cost, a, b)
        jumps.append(math.expm1(d))
        zs.append(abs(d) / sd if sd > 0 else math.inf)
    period = st.period
    edges = []
    for lo, hi in intervals:
        aligned = [v for v in range(lo, hi + 1) if period and (v - 1) % period == 0]
        edges.append(aligned[0] if len(aligned) == 1 else hi)
    return StepFit(
        segments=tuple(segments), edges=tuple(edges), edge_intervals=intervals,
        efficient=_efficient(segments, st.sigma_ref), noise_rel=st.sigma_ref,
        flagged=tuple(int(v) for v in c[f]), outliers=tuple(sorted(int(x[i]) for i in outliers)),
        jumps=tuple(jumps), z_scores=tuple(zs), tau=float(st.tau), period=period,
    )


def _efficient(segments, sigma: float) -> tuple[int, ...]:
    """Right ends of the segments faster, by more than the noise, than every later count."""
    out, best = [], math.inf
    for s in reversed(segments):
        if math.log(s.level) + sigma < best:
            out.append(s.end)
        best = min(best, math.log(s.level), math.log(s.at(s.start)))
    return tuple(sorted(out))
