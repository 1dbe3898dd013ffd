"""Sparse sampling of one sweep line c = lo..hi: find every staircase edge exactly
while measuring a small fraction of the counts.

`SparseLine` is a state machine that never measures anything itself: a driver asks
each line for `next_points()`, measures the points of many lines together
(interleaved, so machine drift is shared out evenly) and hands the latencies back
with `feed()`. `sample_line` runs the loop with a callable, for tests and small jobs.

Strategy
--------
1. Coarse grid: ``lo``, ``hi`` and every multiple of ``coarse`` in between. With a
   ``prior_multiple`` k (a tile or vector width the device is believed to use), also
   every ``m*k`` and ``m*k + 1``: a count of ``m*k`` fills m tiles exactly, so tile
   quantization puts the first count of a new level at ``m*k + 1``, and such an edge
   is then located by the grid alone, without bisection.
2. Bisection: the points measured so far are fitted with `latprof.staircase.fit.fit_steps`
   (pooled plateau levels, not single noisy points, decide what differs). Every edge
   interval wider than one count, i.e. every gap whose two ends lie on levels that
   differ by more than the noise, gets its midpoint measured; this repeats until
   each edge sits between two adjacent measured counts, so it is located exactly.
   Tile-aligned guess: when the gap's left end L is a multiple of ``align`` (8, the
   smallest common tile/vector width), the first probe is L + 1 instead of the
   midpoint, for the reason in step 1. A right guess ends the search at once (one
   point instead of log2(coarse)); a wrong one costs one point.
   A point the fit absorbs as a one-point spike has the gaps to its neighbours
   probed once, since it may be a narrow plateau and not a timing outlier.
3. Verification: once nothing is left to bisect, the midpoints of the ``verify``
   widest flat gaps are measured once; a new level found there restarts step 2.

Flat assumption and its failure mode: a gap whose two ends share a level is assumed
flat. A bump or dip that starts and ends inside one coarse interval (a library
algorithm switch narrower than ``coarse``) is therefore missed unless a verification
point lands in it. The default spacing of 16 catches every such region at least 16
counts wide (the CPU switch this project measured spanned 22 counts); use a smaller
spacing where narrower switches are expected. A false "differs" costs a few points;
a false "flat" loses an edge, so the sampler's merge significance ``z`` is looser
than the fitter's default.
"""

from __future__ import annotations

import math
from typing import Callable

from latprof.errors import LatprofError
from latprof.staircase.fit import StepFit, fit_steps

__all__ = ["SparseLine", "sample_line"]


class SparseLine:
    """Adaptive sampler for the counts ``lo..hi`` (inclusive) of one sweep line.

    ``coarse``: spacing of the initial grid, in channels. ``noise_rel``: relative
    noise (sd of log-latency) of one measurement, in the driver's protocol.
    ``prior_multiple``: believed tile/vector width k (see the module docstring).
    ``z``: merge significance handed to `fit_steps`. ``verify``: number of flat gaps
    checked once at the end. ``align``: tile-aligned guess width (None disables).
    ``max_points``: hard cap on the number of points measured.
    """

    def __init__(
        self,
        lo: int,
        hi: int,
        *,
        coarse: int = 16,
        noise_rel: float = 0.02,
        prior_multiple: int | None = None,
        z: float = 2.0,
        verify: int = 2,
        align: int | None = 8,
        max_points: int | None = None,
    ) -> None:
        for name, v in (("lo", lo), ("hi", hi), ("coarse", coarse)):
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
        self.noise_rel, self.z, self.verify = float(noise_rel), float(z), int(verify)
        self.max_points = max_points
        self._data: dict[int, float] = {}
        self._probed: set[int] = set()  # spikes whose neighbourhood was probed
        self._guessed: set[int] = set()  # counts measured as tile-aligned edge guesses
        self.align = int(align) if align else None
        self._verified = False
        self._done = False
        grid = {self.lo, self.hi} | set(range(-(-self.lo // coarse) * coarse, self.hi + 1, coarse))
        if prior_multiple:
            k = int(prior_multiple)
            for m in range(self.lo // k, self.hi // k + 1):
                grid |= {m * k, m * k + 1}
        self._pending = sorted(p for p in grid if self.lo <= p <= self.hi)

    @property
    def measured(self) -> dict[int, float]:
        """All latencies fed so far, keyed by channel count (a copy, sorted)."""
        return dict(sorted(self._data.items()))

    @property
    def done(self) -> bool:
        """True once `next_points` has nothing more to ask for."""
        return self._done

    def fit(self) -> StepFit:
        """Step fit of everything measured so far, with this line's noise settings."""
        if not self._data:
            raise LatprofError("SparseLine.fit: nothing measured yet; feed next_points() first.")
        ch = sorted(self._data)
        return fit_steps(ch, [self._data[c] for c in ch], noise_rel=self.noise_rel, z=self.z)

    def feed(self, results: dict[int, float]) -> None:
        """Record latencies (any unit, consistent along the line) for counts in lo..hi.

        Unrequested counts are welcome; a count fed twice keeps the latest value
        (merge repeats upstream, e.g. by median).
        """
        for c, v in results.items():
            if int(c) != c or not self.lo <= c <= self.hi:
                raise LatprofError(f"SparseLine.feed: count {c} is outside {self.lo}..{self.hi}.")
            if not (math.isfinite(v) and v > 0):
                raise LatprofError(f"SparseLine.feed: latency for c={c} must be finite and > 0, got {v}.")
            self._data[int(c)] = float(v)

    def next_points(self) -> list[int]:
        """Counts to measure next, ascending; empty when the line is done.

        Asking again before feeding returns the same counts minus any fed meanwhile.
        """
        if self._done:
            return []
        self._pending = [p for p in self._pending if p not in self._data]
        if not self._pending:
            self._pending = self._plan()
        if self.max_points is not None:
            room = self.max_points - len(self._data)
            self._pending = self._pending[: max(room, 0)]
        if not self._pending:
            self._done = True
        return list(self._pending)

    def _plan(self) -> list[int]:
        fit = self.fit()
        pts: set[int] = set()
        for a, b in fit.edge_intervals:  # edge somewhere in a..b; a-1 and b measured
            if b == a:
                continue
            if self.align and (a - 1) % self.align == 0 and a not in self._guessed:
                self._guessed.add(a)  # tile-aligned guess: edge right after a multiple
                pts.add(a)
            else:
                pts.add((a - 1 + b) // 2)
        ch = sorted(self._data)
        for c in fit.outliers:
            if c in self._probed:
                continue
            self._probed.add(c)
            i = ch.index(c)
            for a, b in zip(ch[max(i - 1, 0) : i + 1], ch[i : i + 2]):
                if b - a > 1:  # the gaps either side of c (one at the ends of the line)
                    pts.add((a + b) // 2)
        if not pts and not self._verified:
            self._verified = True
            edges = set(fit.edges)
            flat = [(b - a, a, b) for a, b in zip(ch, ch[1:]) if b - a > 1 and b not in edges]
            pts = {(a + b) // 2 for _, a, b in sorted(flat, reverse=True)[: self.verify]}
        return sorted(p for p in pts if p not in self._data)


def sample_line(lo: int, hi: int, measure: Callable[[int], float], **kw) -> dict[int, float]:
    """Run a `SparseLine` to completion with ``measure(c) -> latency``; return all results."""
    line = SparseLine(lo, hi, **kw)
    while pts := line.next_points():
        line.feed({c: measure(c) for c in pts})
    return line.measured
