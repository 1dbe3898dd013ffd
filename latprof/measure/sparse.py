"""Sparse sampling of one sweep line c = lo..hi: find the staircase edges while measuring a
small, bounded share of the counts.

`SparseLine` is a state machine that never measures anything itself: a driver asks each
line for `next_points()`, measures the points of many lines together (interleaved, so
machine drift is shared out evenly) and hands the latencies back with `feed()`, each with
its own relative standard error when known (the profiler's ``0.93 * rel_iqr / sqrt(n)``).
`sample_line` runs the loop with a callable, for tests and small jobs.

Budget
------
At most ``max_points`` counts are measured: by default 10 % of the line from 256 counts on
(``LONG_SHARE``), 20 % below (``SHORT_SHARE``), never fewer than ``MIN_POINTS`` (a line that
short is measured whole). When the budget runs out, edges not yet pinned keep the interval
the fit reports (``StepFit.edge_intervals``).

Strategy
--------
1. Coarse grid: ``lo``, ``hi`` and every count m*coarse + 1 in between (``coarse`` 16, or 32
   from 256 counts on, so that the grid takes a third of the budget). These are tile starts
   for every width dividing ``coarse``: a count m*k + 1 is the first of a new tile, so a grid
   interval whose level changed holds its edge at its right end when that is its only tile
   start, and the fit's reported edge (the interval's right end) is the true one even before
   a period is known. With ``prior_multiple`` k (a tile or vector width the device is believed
   to use) the grid spacing is a multiple of k.
2. Each round the points so far are fitted with `latprof.staircase.fit.fit_steps` (each
   row's own error, sloped plateaus, outliers; pooled plateau levels decide what differs) and
   the next points are, in this order, while the budget lasts:
   a. edge intervals wider than one count are split, the most significant edges first (the
      fit's z), and only as many as the budget can finish: each interval's probes still needed
      are counted (halvings to two counts, or to one tile start) and an edge that does not fit
      in what is left gets none (a half-bisected edge is a miss and a false edge at once).
      With a period p (``prior_multiple``, else the one the fit infers from the edges found
      exactly, `fit.infer_period`), an interval holding one count m*p + 1 needs no probe when
      that count is its right end, else one (the tile start) until the edges show the period;
      one holding several is split at a tile start (at a tile end when its right end is not a
      tile start). Without one, an interval whose right end is m*``align`` + 1 (8) first gets
      the count before that end (a right guess pins a tile edge exactly, which is what shows
      the period), else the midpoint (bisection, which keeps to tile starts on the grid);
   b. the neighbours c - 1 and c + 1 of every point the fit calls an outlier, once: a single
      high or low point may be a timing outlier or a plateau narrower than the grid. (Probing
      also the one-point segments above or below both neighbours, whose neighbours are too far
      for the fit to call them outliers, cost more edges than it saved on the benchmark.)
   c. the midpoint of every gap inside a segment whose two ends differ, beyond the segment's
      slope, by more than ``z_gap`` standard errors of the two rows: more than a sloped
      plateau allows, so an edge may hide there;
   d. once nothing else is asked for and a period p is known: the count before every measured
      tile start (pairs m*p, m*p + 1: each plateau gets a second point and each edge is exact,
      so that small steps stand out and the fit of these points infers the period);
   e. then the midpoints of the ``verify`` widest gaps, once.
3. A count fed as None or NaN (a shape that failed) is never asked for again and is treated
   as unmeasured.

Flat assumption and its failure mode: a gap whose ends lie on one plateau line is assumed to
hold no edge. A bump or dip that starts and ends inside one grid interval (a library
algorithm switch narrower than ``coarse``) is missed unless a verification point lands in it;
use a smaller ``coarse`` where narrower switches are expected.
"""

from __future__ import annotations

import math
from typing import Callable


from latprof.errors import LatprofError
from latprof.staircase.fit import StepFit, fit_steps, infer_period

__all__ = ["SparseLine", "sample_line", "default_budget"]

#: Share of a dense line's counts a sparse line may measure: lines of LONG_LINE counts or more,
#: and shorter ones; and the fewest points any line gets (shorter lines are measured whole).
LONG_SHARE, SHORT_SHARE, LONG_LINE, MIN_POINTS = 0.10, 0.20, 256, 8


def default_budget(n: int) -> int:
    """Most points a sparse line of n counts measures by default."""
    share = LONG_SHARE if n >= LONG_LINE else SHORT_SHARE
    return min(n, max(MIN_POINTS, int(share * n)))


class SparseLine:
    """Adaptive sampler for the counts ``lo..hi`` (inclusive) of one sweep line.

    ``coarse``: spacing of the initial grid in channels (default by length, see above).
    ``noise_rel``: relative noise of a row fed without its own error. ``prior_multiple``:
    believed tile/vector width k (see the module docstring). ``z``: merge significance of the
    sampler's fits (3.0, a little stricter than the fitter's 2.75: on the synthetic benchmark a
    looser one spent the budget on noise; 2.0 and 2.5 found fewer edges). ``z_gap``: significance of a difference inside a segment (step 2c).
    ``verify``: number of gaps checked once at the end. ``align``: tile-aligned guess width
    (None disables). ``max_points``: cap on the number of points measured (default:
    `default_budget`).
    """

    def __init__(
        self,
        lo: int,
        hi: int,
        *,
        coarse: int | None = None,
        noise_rel: float = 0.02,
        prior_multiple: int | None = None,
        z: float = 3.0,
        z_gap: float = 3.0,
        verify: int = 2,
        align: int | None = 8,
        max_points: int | None = None,
    ) -> None:
        for name, v in (("lo", lo), ("hi", hi), ("coarse", coarse if coarse is not None else 1)):
            if int(v) != v or v < 1:
                raise LatprofError(f"SparseLine: {name} must be an integer >= 1, got {v}.")
        if hi < lo:
            raise LatprofError(f"SparseLine: hi ({hi}) must be >= lo ({lo}).")
        if prior_multiple is not None and (int(prior_multiple) != prior_multiple or prior_multiple < 1):
            raise LatprofError(f"SparseLine: prior_multiple must be an integer >= 1, got {prior_multiple}.")
        if not (math.isfinite(noise_rel) and noise_rel >= 0):
            raise LatprofError(f"SparseLine: noise_rel must be finite and >= 0, got {noise_rel}.")
        if verify < 0 or (max_points is not None and max_points < 1):
            raise LatprofError("SparseLine: verify must be >= 0 and max_points >= 1.")
        self.lo, self.hi = int(lo), int(hi)
        n = self.hi - self.lo + 1
        self.noise_rel, self.z, self.z_gap, self.verify = float(noise_rel), float(z), float(z_gap), int(verify)
        self.max_points = int(max_points) if max_points is not None else default_budget(n)
        self.prior = int(prior_multiple) if prior_multiple and prior_multiple > 1 else None
        self.align = int(align) if align else None
        self._data: dict[int, float] = {}
        self._se: dict[int, float] = {}
        self._failed: set[int] = set()
        self._probed: set[int] = set()  # outliers whose neighbours were asked for
        self._guessed: set[int] = set()  # counts measured as tile-aligned edge guesses
        self._verified = False
        self._done = False
        step = int(coarse) if coarse is not None else (32 if n >= LONG_LINE else 16)
        if self.prior:
            step = self.prior * max(1, round(step / self.prior))
        if n <= self.max_points:
            grid = set(range(self.lo, self.hi + 1))
        else:
            grid = {self.lo, self.hi} | set(range(self.lo + (1 - self.lo) % step, self.hi + 1, step))
        self._pending = sorted(grid)

    @property
    def measured(self) -> dict[int, float]:
        """All latencies fed so far, keyed by channel count (a copy, sorted; failed counts left out)."""
        return dict(sorted(self._data.items()))

    @property
    def rel_se(self) -> dict[int, float]:
        """The relative standard error fed with each count (those fed with one)."""
        return dict(sorted(self._se.items()))

    @property
    def done(self) -> bool:
        """True once `next_points` has nothing more to ask for."""
        return self._done

    def fit(self, **kw) -> StepFit:
        """Step fit of everything measured so far, as the sampler sees it (its ``z``, its period);
        keyword arguments go to `fit_steps`."""
        if not self._data:
            raise LatprofError("SparseLine.fit: nothing measured yet; feed next_points() first.")
        ch = sorted(self._data)
        se = [self._se.get(c, math.nan) for c in ch]
        kw = {"z": self.z, "period": self.prior or "auto", **kw}
        return fit_steps(ch, [self._data[c] for c in ch], rel_se=se, noise_rel=self.noise_rel, **kw)

    def feed(self, results: dict[int, float | None], rel_se: dict[int, float] | None = None) -> None:
        """Record latencies (any unit, consistent along the line) for counts in lo..hi, and
        optionally each one's relative standard error.

        None or NaN marks a count that could not be measured: it is not asked for again.
        Unrequested counts are welcome; a count fed twice keeps the latest value.
        """
        for c, v in results.items():
            if int(c) != c or not self.lo <= c <= self.hi:
                raise LatprofError(f"SparseLine.feed: count {c} is outside {self.lo}..{self.hi}.")
            c = int(c)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                self._failed.add(c)
                self._data.pop(c, None)
                continue
            if not (math.isfinite(v) and v > 0):
                raise LatprofError(f"SparseLine.feed: latency for c={c} must be finite and > 0, got {v}.")
            self._data[c] = float(v)
            se = (rel_se or {}).get(c)
            if se is not None and math.isfinite(se) and se >= 0:
                self._se[c] = float(se)

    def next_points(self) -> list[int]:
        """Counts to measure next, ascending; empty when the line is done.

        Asking again before feeding returns the same counts minus any fed meanwhile.
        """
        if self._done:
            return []
        tried = self._data.keys() | self._failed
        self._pending = [p for p in self._pending if p not in tried]
        if not self._pending:
            self._pending = self._plan() if self._data else []
        room = self.max_points - len(tried)
        self._pending = self._pending[: max(room, 0)]
        if not self._pending:
            self._done = True
        return sorted(self._pending)

    def _free(self, lo: int, hi: int, target: int) -> int | None:
        """The untried count in lo..hi nearest target (None if every one was tried)."""
        tried = self._data.keys() | self._failed
        free = [v for v in range(lo, hi + 1) if v not in tried]
        return min(free, key=lambda v: (abs(v - target), v)) if free else None

    def _plan(self) -> list[int]:
        """The next points, most useful first (the budget cuts the tail)."""
        fit = self.fit()
        found = infer_period([hi for lo, hi in fit.edge_intervals if lo == hi])
        period = self.prior or fit.period or found
        # Edges placed by the period alone count only once the measured edges show the period
        # (so that a fit of these points alone, `fit_steps(period="auto")`, places them too).
        shown = period is not None and found == period
        edges, outl, gaps, pin = [], [], [], []
        room = self.max_points - len(self._data.keys() | self._failed)
        z_of = dict(zip(fit.edge_intervals, fit.z_scores))
        wanted = []  # (z, probes still needed to pin it, next probe)
        for a, b in fit.edge_intervals:  # the edge lies in a..b; a - 1 and b are measured
            if b == a:
                continue
            if b == a + 1:  # the reported edge b is within one count already: pin it last
                pin.append(self._free(a, a, a))
                continue
            z = z_of[(a, b)]
            if period:
                aligned = [v for v in range(a, b + 1) if (v - 1) % period == 0]
                if len(aligned) == 1:
                    v = aligned[0]
                    if not shown and v < b:  # pin it: the tile start, then the count before it
                        wanted.append((z, 1, self._free(a, b - 1, v)))
                    continue  # the fit places the edge at the tile start (or b is that start)
                if aligned:
                    k = len(aligned)
                    last = aligned[-1] == b  # tile-start probes keep the right end a tile start
                    mid = aligned[(k - 2) // 2] if last else aligned[k // 2]
                    cost = math.ceil(math.log2(k)) + (0 if shown or last else 1)
                    wanted.append((z, cost, self._free(a, b - 1, mid if last else (mid - 1 if mid - 1 >= a else mid))))
                    continue
            cost = max(1, math.ceil(math.log2(b - a + 1)) - 1)
            if self.align and (b - 1) % self.align == 0 and b - 1 not in self._guessed and self._guessing(fit):
                self._guessed.add(b - 1)  # the right end is a tile start: is the edge there?
                wanted.append((z, cost, self._free(a, b - 1, b - 1)))
            else:
                wanted.append((z, cost, self._free(a, b - 1, (a - 1 + b) // 2)))
        spend = 0
        for z, cost, probe in sorted(wanted, key=lambda t: -t[0]):  # the surest edges first
            if spend + cost <= room:
                spend += cost
                edges.append(probe)
        for c in fit.outliers:
            if c not in self._probed:
                self._probed.add(c)
                outl += [v for v in (c - 1, c + 1) if self.lo <= v <= self.hi]
        ch = sorted(self._data)
        seg_of = {}
        for k, s in enumerate(fit.segments):
            for c in ch:
                if s.start <= c <= s.end:
                    seg_of[c] = k
        pairs = [(u, v) for u, v in zip(ch, ch[1:]) if v - u > 1 and u in seg_of and seg_of.get(v) == seg_of[u]]
        for u, v in pairs:
            slope = fit.segments[seg_of[u]].slope
            diff = math.log(self._data[v] / self._data[u]) - slope * (v - u)
            se = math.hypot(self._sigma(u, fit), self._sigma(v, fit))
            if abs(diff) > self.z_gap * se:
                gaps.append(self._free(u + 1, v - 1, (u + v) // 2))
        out = [p for p in edges + outl + gaps + pin if p is not None]
        if not out and period:  # pair every measured tile start with the count before it
            out = [v - 1 for v in sorted(self._data) if (v - 1) % period == 0 and v > self.lo]
            out = [p for p in out if p not in self._data and p not in self._failed]
        if not out and not self._verified:
            self._verified = True
            widest = sorted(pairs, key=lambda uv: uv[0] - uv[1])[: self.verify]
            out = [p for p in (self._free(u + 1, v - 1, (u + v) // 2) for u, v in widest) if p is not None]
        tried = self._data.keys() | self._failed
        return [p for p in dict.fromkeys(out) if p not in tried]

    def _guessing(self, fit: StepFit) -> bool:
        """Tile-aligned guesses go on while they pay: the first two are free, later ones need a
        guess that pinned an edge (on a line whose steps are not tile-aligned they cost a point each)."""
        hits = sum(1 for lo, hi in fit.edge_intervals if lo == hi and hi - 1 in self._guessed)
        return hits > 0 or len(self._guessed) < 2

    def _sigma(self, c: int, fit: StepFit) -> float:
        """A row's noise for the gap test: its own error, at least the fit's typical noise."""
        return max(self._se.get(c, self.noise_rel), fit.noise_rel)


def sample_line(lo: int, hi: int, measure: Callable[[int], float], **kw) -> dict[int, float]:
    """Run a `SparseLine` to completion with ``measure(c) -> latency`` (or ``(latency, rel_se)``);
    return all results."""
    line = SparseLine(lo, hi, **kw)
    while pts := line.next_points():
        got = {c: measure(c) for c in pts}
        se = {c: v[1] for c, v in got.items() if isinstance(v, tuple)}
        line.feed({c: (v[0] if isinstance(v, tuple) else v) for c, v in got.items()}, se)
    return line.measured
