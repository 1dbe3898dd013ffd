"""Synthetic raw tables with a known staircase, for tests of everything downstream of a sweep."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from latprof.models import lines as plan
from latprof.tables import io as tbl
from latprof.spec import Context, ConvSpec

META = {"device": {"kind": "cpu", "name": "Synthetic CPU", "slug": "cpu-synthetic"}, "versions": {},
        "protocol": {}, "host": "synthetic", "reference": {"workload": "none", "baseline_us": 1.0}}


def staircase_us(spec: ConvSpec, block: int = 16) -> float:
    """Latency of an implicit GEMM with `block`-wide tiles over c_out and K-chunks over c_in:
    proportional to ceil(c_out/block) * ceil(c_in/block), times the pixels, plus 5 us."""
    work = math.ceil(spec.c_out / block) * math.ceil((spec.c_in // spec.groups) / block)
    return 5.0 + 1e-3 * work * spec.h_out * spec.w_out * spec.batch * spec.kernel_h * spec.kernel_w


def row(spec: ConvSpec, lat: float, flag: bool = False) -> dict:
    return {**spec.to_row(), "latency_us_p50": lat, "latency_us_p10": lat, "latency_us_p25": lat,
            "latency_us_p75": lat, "latency_us_p90": lat, "latency_us_min": lat, "latency_us_mean": lat,
            "rel_iqr": 0.0, "latency_norm_us_p50": lat, "latency_norm_us_p25": lat, "latency_norm_us_p75": lat,
            "rel_iqr_norm": 0.0, "ref_us_p50": 1.0, "ref_baseline_us": 1.0, "ref_drift_rel": 0.0, "n_samples": 7,
            "inner_reps": 1, "threads": 1, "macs": spec.macs(), "flag_noisy": flag, "flag_drift": False,
            "flag_throttled": False, "algo": "", "gpu_clock_mhz": None, "gpu_temp_c": None,
            "measured_at": "2026-01-01T00:00:00+00:00", "host": "synthetic", "session": "synthetic"}


def model_table(path, model: str, batch: int = 1, latency=staircase_us, extra_specs=(), drop_lines=0,
                every: int = 1, grid: bool = False, meta=None, input_size=None):
    """A table of every line of `model` (minus the last `drop_lines` lines), every `every`-th
    count; with `grid`, also the (c_in, c_out) pairs pruning looks up, as a sweep measures them."""
    from latprof.staircase import lines as steps
    from latprof.staircase import options

    lines = plan.load_lines(model, Context(batch=batch), input_size=input_size, every=every)[1]
    if drop_lines:
        lines = lines[:-drop_lines]
    specs = list(dict.fromkeys([s for line in lines for s in line.specs()] + list(extra_specs)))
    t = tbl.LatencyTable(pd.DataFrame([row(s, latency(s)) for s in specs]), dict(meta or META))
    if grid:
        index = steps.TableIndex(t)
        pairs = options.grid_pairs([steps.fit_line(index, line) for line in lines])
        t.df = tbl.upsert(t.df, pd.DataFrame([row(s, latency(s)) for s in pairs]))
    tbl.write(path, t)
    return path


# --- Staircases that look like measured lines (issue 16): the ground truth of tests/staircase and
# bench/stepfit_bench.py. Everything is in log-latency, where relative noise is additive.

#: Tile widths drawn by `stair_line`; 1 means no tile quantization (latency moves smoothly between
#: the wave and algorithm steps).
TILE_WIDTHS = (1, 2, 4, 8, 16, 32, 64)
#: Step kinds of the quantized part: every tile a step, every wave of tiles a step (irregular
#: multiples of the tile width, as on a GPU whose SMs run several tiles at once), or both at once.
STEP_KINDS = ("tile", "wave", "tile+wave")
#: Row noise range (sd of the log of a row's median): the 0.2 % .. 5 % of the issue.
NOISE_RANGE = (0.002, 0.05)


@dataclass
class StairLine:
    """One synthetic sweep line c = 1..full with its truth.

    ``curve``: noise-free latency (us), one-point outliers included. ``sigma_med``: sd of the log of
    a row's median that its own samples show (what rel_iqr and n_samples report); ``tau``: extra
    scatter between rows that no row reports (drift between rows). ``edges``: first count of each
    new level; ``jumps``: log-latency step there (without the plateau slope). ``outliers``: one-point
    spikes and dips (not edges). ``gaps``: counts a dense table of this line lacks.
    """

    full: int
    width: int
    kind: str
    switch: str
    sigma0: float
    tau: float
    rise: float
    curve: np.ndarray
    sigma_med: np.ndarray
    edges: np.ndarray
    jumps: np.ndarray
    outliers: np.ndarray
    gaps: np.ndarray

    @property
    def sigma(self) -> np.ndarray:
        """True sd of the log of one row at each count (reported part and unreported scatter)."""
        return np.sqrt(self.sigma_med**2 + self.tau**2)

    def edge_sigma(self) -> np.ndarray:
        """Noise at each edge: rms of the true row noise just before and at the edge."""
        s = self.sigma
        return np.sqrt((s[self.edges - 2] ** 2 + s[self.edges - 1] ** 2) / 2)

    def detectable(self, k: float = 3.0) -> np.ndarray:
        """Edges whose jump is at least k sigma of the line's noise there."""
        return np.abs(self.jumps) >= k * self.edge_sigma()

    def measure(self, c: int, rng) -> tuple[float, float, int]:
        """One row as the profiler writes it: (median latency, rel_iqr, n_samples)."""
        n = int(rng.integers(5, 41))
        spread = self.sigma_med[c - 1] * math.sqrt(n) / 1.2533  # sd of one sample: SE(median) = sigma_med
        s = rng.standard_normal(n) * spread
        q25, q50, q75 = np.quantile(s, [0.25, 0.5, 0.75])
        lat = self.curve[c - 1] * math.exp(q50 + self.tau * rng.standard_normal())
        return float(lat), float(math.exp(q75 - q50) - math.exp(q25 - q50)), n

    def dense(self, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every count but the gaps: channels, latencies, relative SE of each median (0.93 rel_iqr / sqrt(n))."""
        ch = np.setdiff1d(np.arange(1, self.full + 1), self.gaps)
        rows = [self.measure(int(c), rng) for c in ch]
        lat = np.array([r[0] for r in rows])
        se = np.array([0.93 * r[1] / math.sqrt(r[2]) for r in rows])
        return ch, lat, se


def _plateau_ids(edge_mask: np.ndarray) -> np.ndarray:
    return np.cumsum(edge_mask)


def stair_line(rng, *, full: int | None = None, width: int | None = None, sigma0: float | None = None,
               kind: str | None = None, switch: str | None = None, rise: float | None = None,
               outliers: bool = True, gaps: bool | None = None) -> StairLine:
    """A random line that looks like a measured one; any argument given is fixed instead of drawn.

    - full: 64..512 (log-uniform); width: from TILE_WIDTHS (at most full / 4); kind: STEP_KINDS
      (width 1 is always "wave"). Latency = overhead + quantized work, the overhead 0.1..1.5 x the
      full work, so tile steps shrink along the line (1 / (tiles + overhead)) as they do on devices.
    - switch: an algorithm switch at arbitrary counts, with probability 1/2: "bump" (x1.2..2.5 over
      8..64 counts), "dip" (x0.5..0.85 over 8..64 counts) or "drop" (x0.4..0.85 from a count on).
    - rise: plateau slope, the widest plateau rising up to ``rise`` sigma0 across (0..5 drawn),
      narrower ones proportionally less, one in seven lines falling instead; at most 0.5 / full
      per count (a memory term of at most half the latency), so narrow plateaus stay nearly flat.
    - noise: sigma0 log-uniform 0.3 %..3 %; each row x exp(0.25 N), busy stretches x2..4, clipped
      to NOISE_RANGE; 3 lines in 10 carry unreported scatter tau = 0.3..1 sigma0.
    - outliers: about one row in 80 (at least one) a spike (x1.1..2) or dip (x0.6..0.92), never
      two side by side, never at the ends.
    - gaps (half the lines): 3 % of the counts missing, and a run of 2..6 missing counts in 3 of 10.
    """
    full = int(full or round(math.exp(rng.uniform(math.log(64), math.log(512)))))
    if width is None:
        width = int(rng.choice([w for w in TILE_WIDTHS if w <= full // 4]))
    if kind is None:
        kind = str(rng.choice(STEP_KINDS))
    c = np.arange(1, full + 1)
    tiles = np.ceil(c / width)
    m = tiles[-1]
    if width == 1 or m < 4:
        kind = "wave" if m >= 4 else "tile"
    if kind == "tile":
        work = tiles
    else:
        n_waves = int(rng.integers(3, min(12, int(m) - 1) + 1))
        per_wave = m / n_waves
        waves = np.ceil(tiles / per_wave - 1e-9) * per_wave
        alpha = 1.0 if kind == "wave" else rng.uniform(0.3, 0.8)
        work = alpha * waves + (1 - alpha) * tiles
    y = np.log(rng.uniform(0.1, 1.5) * m + work)
    if switch is None:
        switch = str(rng.choice(["", "bump", "dip", "drop"], p=[0.5, 0.2, 0.15, 0.15]))
    if switch:
        wide = int(rng.integers(8, max(9, min(64, full // 3)) + 1))
        start = int(rng.integers(8, max(9, full - wide - 4)))
        stop = full + 1 if switch == "drop" else start + wide
        factor = {"bump": rng.uniform(1.2, 2.5), "dip": rng.uniform(0.5, 0.85), "drop": rng.uniform(0.4, 0.85)}[switch]
        y = y + np.where((c >= start) & (c < stop), math.log(factor), 0.0)
    jump = np.diff(y)
    is_edge = np.concatenate([[False], np.abs(jump) > 1e-12])
    edges = c[is_edge]
    jumps = jump[is_edge[1:]]
    # slope inside plateaus: increments only between counts of one plateau
    sigma0 = float(sigma0 if sigma0 is not None else math.exp(rng.uniform(math.log(0.003), math.log(0.03))))
    rise = float(rise if rise is not None else rng.uniform(0.0, 5.0))
    pid = _plateau_ids(is_edge)
    widths = np.bincount(pid)
    per_count = min(rise * sigma0 / max(widths.max() - 1, 1), 0.5 / full) * (-1 if rng.random() < 1 / 7 else 1)
    factor = rng.uniform(0.5, 1.0, widths.size)[pid]
    inc = np.where(is_edge, 0.0, per_count * factor)
    inc[0] = 0.0
    y = y + np.cumsum(inc)
    # one-point outliers
    out = []
    if outliers:
        want = max(1, int(rng.poisson(full / 80)))
        for _ in range(50 * want):
            v = int(rng.integers(2, full))
            if all(abs(v - o) >= 2 for o in out):
                out.append(v)
            if len(out) == want:
                break
        for v in out:
            y[v - 1] += math.log(rng.uniform(1.1, 2.0) if rng.random() < 0.6 else rng.uniform(0.6, 0.92))
    # heteroscedastic noise
    sig = sigma0 * np.exp(0.25 * rng.standard_normal(full))
    if rng.random() < 0.4:
        for _ in range(int(rng.integers(1, 4))):
            a = int(rng.integers(0, full))
            sig[a : a + int(rng.integers(8, 49))] *= rng.uniform(2.0, 4.0)
    sig = np.clip(sig, *NOISE_RANGE)
    tau = float(rng.uniform(0.3, 1.0) * sigma0) if rng.random() < 0.3 else 0.0
    gap = np.array([], dtype=int)
    if gaps if gaps is not None else rng.random() < 0.5:
        inner = np.arange(2, full)
        gap = rng.choice(inner, size=int(0.03 * inner.size), replace=False)
        if rng.random() < 0.3:
            a = int(rng.integers(2, full - 7))
            gap = np.concatenate([gap, np.arange(a, a + int(rng.integers(2, 7)))])
        gap = np.unique(gap)
    return StairLine(full, width, kind, switch, sigma0, tau, rise, 100.0 * np.exp(y), sig, edges,
                     jumps, np.array(sorted(out), dtype=int), gap)
