"""Change points of one sweep line: the segment cost, PELT, merging, outliers, the period prior.

The method of `latprof.staircase.fit` (see its docstring, Method 1-5): `Segmenter` holds one
line's log-latencies and their sigmas and segments them; `WlsCost` is the ruptures cost it
runs PELT with; `step_period` and `infer_period` find a tile width. `fit_steps` turns the
result into a `StepFit`.
"""

from __future__ import annotations

import math

import numpy as np
import ruptures as rpt
from ruptures.base import BaseCost
from scipy.stats import chi2

from latprof.staircase.period import DENSE_PAIRS, infer_period, step_period  # noqa: F401 (re-exported)
from latprof.staircase.period import aligned as _aligned, dense as _dense, tile_steps

#: Cost units are chi-square; a sloped segment must buy this much over a flat one.
SLOPE_PENALTY = 6.0
#: A point this many sigma from its segment's line is an outlier (p ~ 6e-7 if normal).
OUTLIER_SD = 5.0
#: A row's own standard error comes from a handful of samples and is itself noisy: none is taken
#: below this share of the median of its neighbours' (rows within 8 places).
SE_FLOOR_SHARE = 0.5
#: The period prior (Method 5): change in the PELT penalty of a boundary just after a count m*w
#: (on) and anywhere else (off, also added to the merge threshold); an aligned boundary's merge
#: threshold drops by 2 ln w, to no less than Z_ALIGNED^2.
PRIOR_ON, PRIOR_OFF, Z_ALIGNED = -2.0, 6.0, 2.5
#: Extra merge threshold (chi-square) of a one-point segment whose neighbours are measured close
#: by: a level seen at a single count of a dense line is more often noise than a plateau.
ONE_POINT_EXTRA = 6.0
#: Rounds of segmenting again after outliers were taken out.
OUTLIER_ROUNDS = 5
#: A one-point spike or dip is an outlier when its measured neighbours are this close (counts);
#: farther away it may be a plateau narrower than the gaps, and stays a segment.
OUTLIER_REACH = 2
#: tau is set so that this quantile of the squared neighbour differences, in units of their
#: variance, is that of a chi-square with one degree of freedom: low, because the differences
#: that straddle an edge sit in the upper tail (a quarter of them with 4-count tiles).
TAU_Q = 0.30
#: With a period, a segment becomes a staircase of its tiles when that lowers its chi-square by this.
STAIR_CHI2 = 12.0
#: Fewest points of a segment with a slope of its own (others share the line's common slope).
OWN_SLOPE_MIN_N = 12
#: Fewest points of a sloped piece when the common slope is estimated.
_SLOPE_MIN_N = 3
_CHI2_1_Q50 = 0.4549


class WlsCost(BaseCost):
    """ruptures cost: weighted least squares of one segment of log-latency, flat or sloped.

    Sums are cumulative, so every segment costs O(1) (ruptures' own costs are O(n) per call).
    One-point segments are allowed: a level measured at a single count is normal in sparse
    sweeps. ``max_slope_rise``: largest rise of log-latency across a sloped segment.
    """

    model = "latprof_wls"
    min_size = 1

    def __init__(self, max_slope_rise: float, start_cost=None, min_slope_n: int = 3,
                 slope_penalty: float = SLOPE_PENALTY) -> None:
        self.max_slope_rise, self.min_slope_n, self.slope_penalty = max_slope_rise, min_slope_n, slope_penalty
        self.start_cost = start_cost  # extra cost of a segment starting at each index (the period prior)

    def fit(self, signal) -> "WlsCost":
        self.signal = signal
        x, y, w = signal[:, 0], signal[:, 1], signal[:, 2]
        self.x = x

        def cum(v):
            return np.concatenate([[0.0], np.cumsum(v)])

        self.s = [cum(w), cum(w * x), cum(w * x * x), cum(w * y), cum(w * x * y), cum(w * y * y)]
        return self

    def model_of(self, start: int, end: int) -> tuple[float, float, float, float, float, float]:
        """(chi-square, mean y, slope, mean x, sum of weights, centred sum of w x^2) of the
        points start..end-1; the slope is 0 unless it pays SLOPE_PENALTY."""
        W, Sx, Sxx, Sy, Sxy, Syy = (v[end] - v[start] for v in self.s)
        xm, ym = Sx / W, Sy / W
        flat = max(Syy - Sy * ym, 0.0)
        if end - start < self.min_slope_n:
            return flat, ym, 0.0, xm, W, 0.0
        sxx, sxy = max(Sxx - Sx * xm, 0.0), Sxy - Sx * ym
        span = self.x[end - 1] - self.x[start]
        if sxx <= 0 or span <= 0:
            return flat, ym, 0.0, xm, W, 0.0
        bmax = self.max_slope_rise / span
        b = min(max(sxy / sxx, -bmax), bmax)
        sloped = max(flat - 2 * b * sxy + b * b * sxx, 0.0)
        if sloped + self.slope_penalty < flat:
            return sloped, ym, b, xm, W, sxx
        return flat, ym, 0.0, xm, W, 0.0

    def error(self, start: int, end: int) -> float:
        chi2, _, slope, *_ = self.model_of(start, end)
        extra = self.start_cost[start] if self.start_cost is not None and start else 0.0
        return chi2 + (self.slope_penalty if slope else 0.0) + extra


def _tau_from(stat: np.ndarray, base: np.ndarray, q: float, target: float) -> float:
    """Smallest tau >= 0 with quantile_q(stat / (base + k * tau^2)) <= target (k folded into base)."""
    if stat.size < 4:
        return 0.0
    base = np.maximum(base, 1e-18)
    if np.quantile(stat / base, q) <= target:
        return 0.0
    lo, hi = 0.0, math.sqrt(float(np.quantile(stat, q)) / target) + 1e-12
    for _ in range(40):
        mid = (lo + hi) / 2
        if np.quantile(stat / (base + mid * mid), q) > target:
            lo = mid
        else:
            hi = mid
    return hi


class Segmenter:
    """The state of one fit: used points, their sigmas, the current segmentation."""

    def __init__(self, x, y, s2, sigma_floor, max_rise, z, penalty, min_size, period=None):
        self.x, self.y, self.s2 = x, y, s2
        self.floor, self.max_rise, self.z, self.penalty, self.min_size = sigma_floor, max_rise, z, penalty, min_size
        self.period = period  # tile width of the prior on edge positions, or None
        self.set_tau(self.neighbour_tau(0.0))
        self.b0 = self.common_slope()

    def neighbour_tau(self, b0: float) -> float:
        """tau from the differences of neighbours (counts c - 1, c) less the common slope b0; 0
        unless the line is dense (Method 1)."""
        if not _dense(self.x):
            return 0.0
        adj = np.diff(self.x) == 1  # far apart points differ by whatever lies between
        d, base = np.diff(self.y)[adj] - b0, (self.s2[1:] + self.s2[:-1])[adj]
        return _tau_from(d * d, base, TAU_Q, chi2.ppf(TAU_Q, 1)) / math.sqrt(2)

    def common_slope(self, keep=None, bounds=None) -> float:
        """The slope plateaus share (log-latency per channel): of the segments ``bounds`` over the
        points ``keep``, or of a flat, permissive segmentation (whose cuts tend to fall where the
        data look flat, so it errs towards 0). The median of the segments' own slopes, each
        weighted by how well it is known (so that a segment hiding a small step does not tilt
        every other), over segments of 3 points or more. 0 unless it is 3 standard errors from 0."""
        keep = np.arange(self.x.size) if keep is None else keep
        if keep.size < 6:
            return 0.0
        cost = WlsCost(0.0).fit(np.column_stack([self.x[keep], self.y[keep], 1.0 / self.sigma[keep] ** 2]))
        if bounds is None:
            cuts = rpt.Pelt(custom_cost=cost, min_size=1, jump=1).fit(cost.signal).predict(pen=self.penalty)
        else:
            cuts = list(bounds[1:]) + [keep.size]
        slopes, weights = [], []
        for a, b in zip([0] + cuts[:-1], cuts):
            if b - a >= _SLOPE_MIN_N:
                W, Sx, Sxx, Sy, Sxy, _ = (v[b] - v[a] for v in cost.s)
                if Sxx - Sx * Sx / W > 0:
                    slopes.append((Sxy - Sx * Sy / W) / (Sxx - Sx * Sx / W))
                    weights.append(Sxx - Sx * Sx / W)
        if not slopes:
            return 0.0
        order = np.argsort(slopes)
        cum = np.cumsum(np.array(weights)[order])
        b0 = float(np.array(slopes)[order][np.searchsorted(cum, cum[-1] / 2)])
        sxx = cum[-1]
        return b0 if abs(b0) * math.sqrt(sxx) >= 3.0 else 0.0

    def retile(self) -> None:
        """With a period: the common slope and tau again, from neighbours inside one tile (no tile
        edge between them): the median of their differences and of their squared differences in
        units of their variance. Kept as they are with fewer than 8 such pairs, or on a line that
        is not dense: a sparse sampler measures neighbours where it bisected an edge that is not
        a tile edge (an algorithm switch) or probed around an outlier, so their differences are
        steps, not noise (as for `neighbour_tau`)."""
        x, y = self.x, self.y
        same = (np.diff(x) == 1) & ((x[1:] - 1) // self.period == (x[:-1] - 1) // self.period)
        if same.sum() < 8 or not _dense(x):
            return
        d = np.diff(y)[same]
        base = (self.s2[1:] + self.s2[:-1])[same]
        b0 = float(np.median(d))
        tau = _tau_from((d - b0) ** 2, base, 0.5, _CHI2_1_Q50) / math.sqrt(2)
        self.set_tau(tau)
        se = 1.2533 * float(np.median(self.sigma)) * math.sqrt(2) / math.sqrt(d.size)
        self.b0 = b0 if abs(b0) >= 3 * se else 0.0

    def set_tau(self, tau: float) -> None:
        self.tau = tau
        self.sigma = np.maximum(np.sqrt(self.s2 + tau * tau), self.floor)
        self.sigma_ref = float(np.median(self.sigma))

    def cost_for(self, keep: np.ndarray) -> WlsCost:
        sig = np.column_stack([self.x[keep], self.y[keep] - self.b0 * self.x[keep], 1.0 / self.sigma[keep] ** 2])
        start_cost = None
        if self.period:
            self.aligned = _aligned(self.x[keep], self.period)
            start_cost = np.where(self.aligned, PRIOR_ON, PRIOR_OFF)
        return WlsCost(self.max_rise * self.sigma_ref, start_cost, OWN_SLOPE_MIN_N).fit(sig)

    def threshold(self, n: int, at: int) -> float:
        """Merge threshold (chi-square) of a boundary at index ``at`` between segments of n points."""
        thr = self.z**2 + 2 * math.log(max(n, 2) / 2)
        if self.period:
            thr = max(thr - 2 * math.log(self.period), Z_ALIGNED**2) if self.aligned[at] else thr + PRIOR_OFF
        return thr

    def run(self) -> tuple[np.ndarray, list[int], WlsCost, set[int]]:
        """Segment, take outliers out, merge, refine; returns (kept indices, bounds, cost, outliers)."""
        keep = np.arange(self.x.size)
        outliers: set[int] = set()
        bounds: list[int] = []
        self.protected: set[float] = set()  # counts opening a tile of a staircase (split_staircases)
        for rounds_left in range(OUTLIER_ROUNDS, -1, -1):
            cost = self.cost_for(keep)
            n = keep.size
            if n >= 2 * self.min_size:
                algo = rpt.Pelt(custom_cost=cost, min_size=self.min_size, jump=1).fit(cost.signal)
                bounds = [0] + [int(e) for e in algo.predict(pen=self.penalty)[:-1]]
            else:
                bounds = [0]
            for _ in range(6):
                before = list(bounds)
                bounds = self.merge(cost, bounds)
                bounds = self.refine(cost, bounds)
                bounds = self.merge(cost, bounds)
                if bounds == before:
                    break
            bounds = self.split_staircases(cost, bounds)
            bounds = self.tile_edges(cost, bounds)
            new = self.find_outliers(cost, bounds) if n > 2 else set()
            if not new or not rounds_left:
                break
            outliers |= {int(keep[i]) for i in new}
            keep = np.array([k for i, k in enumerate(keep) if i not in new])
        return keep, bounds, cost, outliers

    def jump(self, cost: WlsCost, a: tuple[int, int], b: tuple[int, int]) -> tuple[float, float]:
        """(jump of log-latency, its standard error) between segments a and b at the middle of their gap."""
        xs = (cost.x[a[1] - 1] + cost.x[b[0]]) / 2
        preds = []
        for s, e in (a, b):
            _, ym, slope, xm, W, sxx = cost.model_of(s, e)
            var = 1.0 / W + ((xs - xm) ** 2 / sxx if sxx > 0 else 0.0)
            preds.append((ym + slope * (xs - xm), var))
        return preds[1][0] - preds[0][0], math.sqrt(preds[0][1] + preds[1][1])

    def weak(self, cost: WlsCost, a: tuple[int, int], b: tuple[int, int]) -> float:
        """How far the pair a, b is from being kept apart (< 1: merge)."""
        n = b[1] - a[0]
        gain = cost.model_of(a[0], b[1])[0] - cost.model_of(*a)[0] - cost.model_of(*b)[0]
        thr = self.threshold(n, b[0])
        x = cost.x
        for s, e in (a, b):  # a level seen at one count between close neighbours needs more
            if e - s == 1 and (s == 0 or x[s] - x[s - 1] <= OUTLIER_REACH) and (
                    e == x.size or x[e] - x[s] <= OUTLIER_REACH):
                thr += ONE_POINT_EXTRA
                break
        d, sd = self.jump(cost, a, b)
        sig = math.sqrt((cost.signal[a[1] - 1, 2] ** -1 + cost.signal[b[0], 2] ** -1) / 2)
        return min(gain / thr, abs(d) / sig, abs(d) / sd / 2.0)

    def merge(self, cost: WlsCost, bounds: list[int]) -> list[int]:
        b = list(bounds)
        n = cost.x.size
        while len(b) > 1:
            segs = list(zip(b, b[1:] + [n]))
            ratios = [math.inf if cost.x[segs[k + 1][0]] in self.protected else self.weak(cost, segs[k], segs[k + 1])
                      for k in range(len(segs) - 1)]
            k = int(np.argmin(ratios))
            if ratios[k] >= 1.0:
                break
            del b[k + 1]
        return b

    def refine(self, cost: WlsCost, bounds: list[int]) -> list[int]:
        """Move each boundary to the split of least cost between its neighbours."""
        b = list(bounds)
        n, m = cost.x.size, self.min_size
        for k in range(1, len(b)):
            if cost.x[b[k]] in self.protected:
                continue
            left, right = b[k - 1], (b[k + 1] if k + 1 < len(b) else n)
            cands = [(cost.error(left, t) + cost.error(t, right), abs(t - b[k]), t)
                     for t in range(left + m, right - m + 1)]
            if cands:
                b[k] = min(cands)[2]  # ties go to the split nearest the current one
        return b

    def split_staircases(self, cost: WlsCost, bounds: list[int]) -> list[int]:
        """With a period: cut a segment at every tile it spans when a staircase (a line plus one
        step per tile) fits it better than a line by STAIR_CHI2; one tile's step may be too small
        to show, while the same step at every tile does."""
        if not self.period:
            return bounds
        n, out = cost.x.size, []
        for s, e in zip(bounds, bounds[1:] + [n]):
            out.append(s)
            inside = [i for i in range(s + 1, e) if self.aligned[i]]
            if len(inside) < 2:
                continue
            x, y, w = cost.x[s:e], cost.signal[s:e, 1], np.sqrt(cost.signal[s:e, 2])
            tile = (x - 1) // self.period
            rss = []
            for cols in ((np.ones_like(x), x), (np.ones_like(x), x, tile)):
                a = np.column_stack(cols) * w[:, None]
                coef, *_ = np.linalg.lstsq(a, y * w, rcond=None)
                rss.append(float(np.sum((y * w - a @ coef) ** 2)))
            if rss[0] - rss[1] > STAIR_CHI2:
                out.extend(inside)
                self.protected |= {float(cost.x[i]) for i in inside}
        return out

    def tile_edges(self, cost: WlsCost, bounds: list[int]) -> list[int]:
        """With a period: every tile start inside a segment that `period.tile_steps` finds a step
        at becomes a boundary (protected from merging, as a staircase's tiles are)."""
        if not self.period:
            return bounds
        new = tile_steps(cost.x, cost.signal[:, 1], cost.signal[:, 2], self.period, bounds)
        self.protected |= {float(cost.x[i]) for i in new}
        return sorted(set(bounds) | set(new))

    def find_outliers(self, cost: WlsCost, bounds: list[int]) -> set[int]:
        """One-point spikes and dips between two segments, and points > OUTLIER_SD from their line."""
        n = cost.x.size
        segs = list(zip(bounds, bounds[1:] + [n]))
        out: set[int] = set()
        spikes: list[tuple[int, float, int]] = []  # (wider neighbours, smaller deviation, index)
        y, x = cost.signal[:, 1], cost.x
        for k, (s, e) in enumerate(segs):
            if (e - s == 1 and 0 < k < len(segs) - 1 and self.min_size == 1
                    and x[s] - x[s - 1] <= OUTLIER_REACH and x[s + 1] - x[s] <= OUTLIER_REACH):
                sides = []
                for nb in (segs[k - 1], segs[k + 1]):
                    _, ym, slope, xm, _, _ = cost.model_of(*nb)
                    sides.append(y[s] - (ym + slope * (x[s] - xm)))
                # neighbours further apart than the point is from the nearer: a one-count plateau
                # between two edges (a switch next to a tile edge), likelier than an outlier
                # that happens to sit at an edge
                at_edge = abs(sides[0] - sides[1]) > min(abs(sides[0]), abs(sides[1]))
                if sides[0] * sides[1] > 0 and not at_edge:
                    wide = (segs[k - 1][1] - segs[k - 1][0] > 1) + (segs[k + 1][1] - segs[k + 1][0] > 1)
                    spikes.append((wide, min(abs(sides[0]), abs(sides[1])), s))
            elif e - s >= 4:
                _, ym, slope, xm, _, _ = cost.model_of(s, e)
                r = (y[s:e] - ym - slope * (x[s:e] - xm)) * np.sqrt(cost.signal[s:e, 2])
                out |= {s + int(i) for i in np.flatnonzero(np.abs(r) > OUTLIER_SD)}
        # A spike between two wider segments is surely one; next to another one-point segment
        # (two spikes with one good point between) only the likeliest goes this round: one with
        # a wider neighbour, the largest.
        sure = {i for wide, _, i in spikes if wide == 2}
        return out | (sure or {max(spikes)[2]} if spikes else set())

    def residual_tau(self, cost: WlsCost, bounds: list[int]) -> float:
        """tau from the residuals of segments with room to spare (leverage-corrected)."""
        n = cost.x.size
        stats, base = [], []
        for s, e in zip(bounds, bounds[1:] + [n]):
            if e - s < 4:
                continue
            _, ym, slope, xm, W, sxx = cost.model_of(s, e)
            p = 2 if slope else 1
            r = cost.signal[s:e, 1] - ym - slope * (cost.x[s:e] - xm)
            stats.extend(r * r * (e - s) / (e - s - p))
            base.extend(cost.signal[s:e, 2] ** -1 - self.tau**2)
        if len(stats) < 8:
            return self.tau
        return _tau_from(np.array(stats), np.maximum(np.array(base), 0.0), 0.5, _CHI2_1_Q50)


def local_median(v: np.ndarray, half: int = 8) -> np.ndarray:
    """Median of v over each point's 2 * half + 1 neighbours (fewer at the ends)."""
    return np.array([np.median(v[max(i - half, 0) : i + half + 1]) for i in range(v.size)])
