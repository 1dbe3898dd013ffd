"""The tile period of a sweep line: which width w puts staircase edges at counts m*w + 1.

Tile quantization (a GEMM tile, a vector width) makes every tile of w channels a step, so edges
sit at counts m*w + 1. `step_period` reads w from the neighbour differences of a dense line,
`infer_period` from the edges a fit located exactly, and `tile_steps` tests every tile start a
fit left inside a segment once w is known (Method 5 of `latprof.staircase.fit`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom

#: A line is *dense* when it has this many neighbour pairs (counts c - 1 and c both measured)
#: and holds at least half the counts of its span. Only then are tau and the period read from neighbour
#: differences: in a sparse sweep neighbours are measured where an edge was bisected, so their
#: differences are steps, not noise.
DENSE_PAIRS = 16
#: Neighbour differences, in units of their standard error, are clipped to this when the tile
#: width is read from them (`step_period`); a divisor of the best width wins when its further
#: counts stand out by STEP_SUB_T.
STEP_CLIP, STEP_SUB_T = 2.0, 3.0
#: A tile width is inferred only when its alignment with the edges has this chance probability or less.
PERIOD_P = 1e-4
#: `tile_steps`: the tile starts inside segments, taken together, must show steps of one sign with
#: this significance (the sum of their z over its square root) before any of them is tested on
#: its own; then a tile start whose own z (that sign) reaches TILE_Z is an edge. The prior is
#: strong by then: tile quantization steps at every tile, and the line showed it.
TILE_GATE, TILE_Z = 3.0, 2.0


def aligned(x: np.ndarray, w: int) -> np.ndarray:
    """For each point: does a count m*w + 1 lie in (previous point, this point]?"""
    tile = (x.astype(np.int64) - 1) // w
    return np.concatenate([[False], tile[1:] > tile[:-1]])


def dense(x: np.ndarray) -> bool:
    """Enough neighbour pairs (DENSE_PAIRS) and at least half the counts of the span measured."""
    return int(np.sum(np.diff(x) == 1)) >= DENSE_PAIRS and x.size >= (x[-1] - x[0] + 1) / 2


def step_period(x: np.ndarray, y: np.ndarray, sigma: np.ndarray | None = None, max_width: int = 128,
                min_t: float = 4.0) -> int | None:
    """The tile width whose neighbour differences at counts m*w + 1 stand out, or None.

    Each difference y(c) - y(c - 1) of measured neighbours is put in units of its own standard
    error (``sigma``, each point's; 1 when not given), centred on the median and clipped to
    +-STEP_CLIP: a tile step counts as one moderate step however large, so a few large steps
    (algorithm switches, wave edges) that happen to fall on one width's counts cannot make that
    width, while many small steps of one sign at every tile do. For each width w the mean of the
    differences at c = m*w + 1 is compared with the mean of the others (a t statistic, the spread
    from the others); the largest t >= ``min_t`` wins (chance over 127 widths stays below it).
    A divisor v of the winner whose own further counts (m*v + 1 but not m*w + 1) also stand out
    (t >= STEP_SUB_T) wins instead: the multiple of a tile width skips tile edges. Needs a dense
    line (`DENSE_PAIRS`).
    """
    if not dense(x):
        return None
    adj = np.diff(x) == 1
    d = np.diff(y)[adj]
    if sigma is not None:
        d = d / np.sqrt(sigma[1:] ** 2 + sigma[:-1] ** 2)[adj]
    c = x[1:][adj].astype(np.int64)
    q = np.clip(d - np.median(d), -STEP_CLIP, STEP_CLIP)

    def t_of(on: np.ndarray, off: np.ndarray) -> float:
        if on.sum() < 4 or off.sum() < 4:
            return 0.0
        a, b = q[on], q[off]
        se = float(np.std(b)) * math.sqrt(1.0 / a.size + 1.0 / b.size)
        return float(a.mean() - b.mean()) / se if se > 0 else 0.0

    best, best_t = None, 0.0
    for w in range(2, min(max_width, int(c.max()) // 2) + 1):
        on = (c - 1) % w == 0
        t = t_of(on, ~on)
        if abs(t) > abs(best_t):
            best, best_t = w, t
    if best is None or abs(best_t) < min_t:
        return None
    for v in range(2, best):  # steps of the same sign at the divisor's further counts
        if best % v == 0:
            on_v = (c - 1) % v == 0
            if math.copysign(1.0, best_t) * t_of(on_v & ((c - 1) % best != 0), ~on_v) >= STEP_SUB_T:
                return v
    return best


def infer_period(edges_exact, max_width: int = 128) -> int | None:
    """The tile width w whose counts m*w + 1 hold the exactly located edges (Method 5), or None.

    A width qualifies when at least 3 edges sit at such counts, chance would put that many there
    with probability under PERIOD_P (an edge lands on one by chance with probability 1/w), and
    it keeps at least 3/4 of the edges that width 2 keeps (so a multiple of the true width,
    which skips every other tile edge, loses to it). The largest qualifying width wins.
    """
    e = np.asarray(sorted(set(int(v) for v in edges_exact)), dtype=int)
    if e.size < 3:
        return None
    counts = {w: int(np.sum((e - 1) % w == 0)) for w in range(2, max_width + 1)}
    for w in range(max_width, 1, -1):
        k = counts[w]
        if k >= 3 and k >= 0.75 * counts[2] and binom.sf(k - 1, e.size, 1.0 / w) < PERIOD_P:
            return w
    return None


def tile_steps(x: np.ndarray, y: np.ndarray, wt: np.ndarray, w: int, bounds: list[int]) -> list[int]:
    """Indices of tile starts inside segments that are edges by a local two-sided test.

    ``x`` counts, ``y`` log-latency less the common slope, ``wt`` weights (1 / sigma^2), ``w``
    the tile width, ``bounds`` the segment starts. First the gate: inside the segments, the
    differences of measured neighbours across a tile start must exceed those within a tile (each
    in units of its standard error, clipped as in `step_period`) by TILE_GATE: a staircase
    steps at the tile starts, a sloped plateau rises as much within tiles as across them. Then
    each point opening a tile that is not a segment start is an edge when the weighted mean of
    its tile's points less that of the tile before (both inside its segment, less the slope
    within tiles) reaches TILE_Z standard errors, from the rows' own errors, in the gate's sign.
    """
    n = x.size
    tile = (x.astype(np.int64) - 1) // w
    seg = np.zeros(n, dtype=np.int64)
    seg[[b for b in bounds if b]] = 1
    seg = np.cumsum(seg)
    pair = (np.diff(x) == 1) & (seg[1:] == seg[:-1])
    across = tile[1:] > tile[:-1]
    sd = np.sqrt(1.0 / wt[1:] + 1.0 / wt[:-1])
    q = np.clip(np.diff(y) / sd, -STEP_CLIP, STEP_CLIP)
    on, off = q[pair & across], q[pair & ~across]
    if on.size < 3 or off.size < 3:
        return []
    t = (on.mean() - off.mean()) / (np.std(off) * math.sqrt(1.0 / on.size + 1.0 / off.size) + 1e-12)
    if abs(t) < TILE_GATE:
        return []
    sign = 1.0 if t > 0 else -1.0
    wd = (1.0 / sd[pair & ~across] ** 2)
    slope = float(wd @ np.diff(y)[pair & ~across] / wd.sum())  # per count, within tiles
    starts, ends = set(bounds), list(bounds[1:]) + [n]
    out = []
    for s, e in zip(bounds, ends):
        for i in range(s + 1, e):
            if tile[i] == tile[i - 1] or i in starts:
                continue
            lo = i - 1
            while lo > s and tile[lo - 1] == tile[i - 1]:
                lo -= 1
            hi = i + 1
            while hi < e and tile[hi] == tile[i]:
                hi += 1
            a, b = slice(lo, i), slice(i, hi)
            wa, wb = wt[a].sum(), wt[b].sum()
            d = (wt[b] @ y[b]) / wb - (wt[a] @ y[a]) / wa - slope * ((wt[b] @ x[b]) / wb - (wt[a] @ x[a]) / wa)
            if sign * d / math.sqrt(1.0 / wa + 1.0 / wb) >= TILE_Z:
                out.append(i)
    return out
