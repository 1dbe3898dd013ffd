"""fit_steps against generated staircases with known edges, and hand-made frontiers.

Tolerances (pooled over seeds; relative noise sigma, step heights in units of
max(sigma, 1 %), plateaus >= 6 counts wide):
- steps >= 8 sigma: every edge exact, no extra edges;
- steps 5..10 sigma: every edge within +-1 and >= 97 % exact, at most one extra edge in the 12
  lines (one point on the wrong side of an edge needs a 2.5 sigma draw: p ~ 0.6 %; the merge
  threshold is low enough to keep 3-sigma edges, so a 3.6-sigma pair of points can pass);
- steps 3..5 sigma: >= 90 % of edges within +-1 and >= 95 % within +-3.
"""

import numpy as np
import pandas as pd
import pytest

from latprof.errors import LatprofError
from latprof.staircase.fit import Segment, StepFit, fit_steps

C = 160
SEEDS = range(12)
NOISES = [0.0, 0.01, 0.03]


def staircase(rng, *, sigma, hmin, hmax, n_edges=8, minw=6, spikes=0):
    """Log-latency staircase with random edges and mixed-sign steps (non-monotonic).

    Spikes are upward outliers (+30..100 %), >= 3 counts from any edge and not adjacent.
    Returns channels, latency, true edges, spike channels.
    """
    c = np.arange(1, C + 1)
    while True:
        e = np.sort(rng.choice(np.arange(minw + 1, C - minw + 2), n_edges, replace=False))
        if np.all(np.diff(e) >= minw):
            break
    h = rng.uniform(hmin, hmax, n_edges) * max(sigma, 0.01) * rng.choice([-1, 1, 1], n_edges)
    y = np.zeros(C)
    for edge, step in zip(e, h):
        y[c >= edge] += step
    y += sigma * rng.standard_normal(C)
    spike_ch = []
    if spikes:
        ok = [v for v in range(3, C - 2) if all(abs(v - x) >= 3 and abs(v + 1 - x) >= 3 for x in e)]
        while len(spike_ch) < spikes:
            v = int(rng.choice(ok))
            if all(abs(v - s) >= 2 for s in spike_ch):
                spike_ch.append(v)
        y[np.array(spike_ch) - 1] += np.log(rng.uniform(1.3, 2.0, spikes))
    return c, np.exp(y + 1.0), [int(v) for v in e], sorted(spike_ch)


def edge_errors(fit, true):
    return np.array([min([abs(x - t) for x in fit.edges] + [10**6]) for t in true])


@pytest.mark.parametrize("noise", NOISES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("spikes", [0, 3])
def test_large_steps_exact(seed, noise, spikes):
    rng = np.random.default_rng(seed)
    c, lat, true, spike_ch = staircase(rng, sigma=noise, hmin=8, hmax=16, spikes=spikes)
    fit = fit_steps(c, lat)
    assert list(fit.edges) == true
    assert list(fit.outliers) == spike_ch
    assert all(lo == hi for lo, hi in fit.edge_intervals)  # dense: edges are exact


@pytest.mark.parametrize("noise", NOISES)
def test_moderate_steps_within_one(noise):
    errs, extra = [], 0
    for seed in SEEDS:
        rng = np.random.default_rng(100 + seed)
        c, lat, true, _ = staircase(rng, sigma=noise, hmin=5, hmax=10, spikes=2)
        fit = fit_steps(c, lat)
        errs.extend(edge_errors(fit, true))
        extra += len(fit.edges) - len(true)
    errs = np.array(errs)
    assert errs.max() <= 1 and (errs == 0).mean() >= 0.97 and extra <= 1, (errs, extra)


@pytest.mark.parametrize("noise", [0.01, 0.03])
def test_small_steps_tolerance(noise):
    errs = []
    for seed in SEEDS:
        rng = np.random.default_rng(200 + seed)
        c, lat, true, _ = staircase(rng, sigma=noise, hmin=3, hmax=5)
        errs.extend(edge_errors(fit_steps(c, lat), true))
    errs = np.array(errs)
    assert (errs <= 1).mean() >= 0.90 and (errs <= 3).mean() >= 0.95, errs


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("noise", [0.0, 0.02])
def test_missing_points_interval_contains_edge(seed, noise):
    rng = np.random.default_rng(300 + seed)
    c, lat, true, _ = staircase(rng, sigma=noise, hmin=8, hmax=16)
    keep = np.sort(rng.choice(C, size=int(0.6 * C), replace=False))
    fit = fit_steps(c[keep], lat[keep], noise_rel=max(noise, 0.01))
    measured = set(c[keep].tolist())
    assert len(fit.edges) == len(true)
    for t, edge, (lo, hi) in zip(true, fit.edges, fit.edge_intervals):
        assert lo <= t <= hi  # the true edge lies in the reported interval
        assert edge == hi == min(x for x in measured if x >= t)  # first measured at the new level
        assert lo - 1 in measured and lo - 1 < t
    for s in fit.segments:
        assert s.start in measured and s.end in measured


@pytest.mark.parametrize("seed", range(6))
def test_flagged_points_excluded_and_reported(seed):
    rng = np.random.default_rng(400 + seed)
    c, lat, true, _ = staircase(rng, sigma=0.01, hmin=8, hmax=16)
    flagged = np.zeros(C, dtype=bool)
    idx = rng.choice(np.arange(1, C - 1), 12, replace=False)
    flagged[idx] = True
    bad = lat.copy()
    bad[idx] *= rng.choice([0.3, 3.0], idx.size)  # garbage that would create fake steps
    fit = fit_steps(c, bad, flagged=flagged)
    ref = fit_steps(c[~flagged], lat[~flagged])
    assert fit.flagged == tuple(sorted(c[idx].tolist()))
    assert fit.edges == ref.edges and fit.segments == ref.segments
    for t in true:
        assert any(lo <= t <= hi for lo, hi in fit.edge_intervals)


def test_efficient_monotone_tiles():
    c = np.arange(1, 13)
    fit = fit_steps(c, np.ceil(c / 4))
    assert fit.edges == (5, 9)
    assert fit.efficient == (4, 8, 12)
    assert [(s.start, s.end, s.level, s.n) for s in fit.segments] == [
        (1, 4, 1.0, 4), (5, 8, 2.0, 4), (9, 12, 3.0, 4)
    ]


def test_efficient_cpu_algorithm_switch():
    """The project's CPU measurement: ~9 ms at 97..118, ~3.5 ms at 119..128."""
    c = np.arange(1, 129)
    lat = np.where(c <= 96, 1 + 0.3 * np.ceil(c / 16), np.where(c <= 118, 9.0, 3.5))
    fit = fit_steps(c, lat)
    assert fit.edges == (17, 33, 49, 65, 81, 97, 119)
    assert fit.efficient == (16, 32, 48, 64, 80, 96, 128)  # 118 is slower than 128


@pytest.mark.parametrize(
    "levels, efficient",
    [
        ([5, 2, 3], (16, 24)),  # a later, faster level dominates the first
        ([3.0, 6.0, 3.01], (24,)),  # equal within the noise: keep more channels
        ([1, 2, 3], (8, 16, 24)),
        ([3, 2, 1], (24,)),
    ],
)
def test_efficient_hand_made(levels, efficient):
    lat = np.repeat(levels, 8).astype(float)
    fit = fit_steps(np.arange(1, 25), lat, noise_rel=0.01)
    assert fit.edges == (9, 17)
    assert fit.efficient == efficient


def test_one_point_spike_and_dip_are_outliers_never_segments():
    c = np.arange(1, 11)
    for value in (3.0, 1.0):
        y = np.full(10, 2.0)
        y[4] = value
        fit = fit_steps(c, y)
        assert len(fit.segments) == 1 and fit.outliers == (5,) and fit.efficient == (10,)
        assert fit.segments[0].n == 9


def test_one_point_between_two_levels_stays_a_segment():
    """A single count between a lower and a higher level is a narrow plateau, not an outlier."""
    c = np.arange(1, 21)
    y = np.where(c < 10, 1.0, np.where(c == 10, 2.0, 3.0))
    fit = fit_steps(c, y)
    assert fit.edges == (10, 11) and fit.outliers == ()


def test_single_point_and_to_frame():
    fit = fit_steps([7], [1.5])
    assert fit.segments == (Segment(7, 7, 1.5, 0.0, 1),) and fit.edges == () and fit.efficient == (7,)
    fit = fit_steps(np.arange(1, 13), np.ceil(np.arange(1, 13) / 4))
    df = fit.to_frame()
    assert isinstance(df, pd.DataFrame) and isinstance(fit, StepFit)
    assert list(df.columns) == ["start", "end", "level", "spread", "n", "edge_lo", "edge_hi", "efficient",
                                "slope", "jump", "z"]
    assert df["start"].tolist() == [1, 5, 9] and df["efficient"].tolist() == [True, True, True]
    assert df["edge_lo"].tolist()[1:] == [5, 9]


def test_min_size_and_estimated_noise():
    rng = np.random.default_rng(7)
    c = np.arange(1, 101)
    lat = np.where(c > 50, 2.0, 1.0) * np.exp(0.02 * rng.standard_normal(100))
    fit = fit_steps(c, lat, min_size=5)
    assert fit.edges == (51,)
    assert 0.01 < fit.noise_rel < 0.04  # MAD estimate of the 2 % noise
    assert all(s.n >= 5 for s in fit.segments)


@pytest.mark.parametrize(
    "channels, latency, kw",
    [
        ([1, 2, 3], [1.0, 2.0], {}),  # length mismatch
        ([], [], {}),  # empty
        ([1, 3, 2], [1.0, 1.0, 1.0], {}),  # not increasing
        ([1, 2, 2], [1.0, 1.0, 1.0], {}),  # duplicate
        ([0, 1, 2], [1.0, 1.0, 1.0], {}),  # count below 1
        ([1.5, 2, 3], [1.0, 1.0, 1.0], {}),  # not integers
        ([1, 2, 3], [1.0, -1.0, 1.0], {}),  # non-positive latency
        ([1, 2, 3], [1.0, np.nan, 1.0], {}),  # NaN latency
        ([1, 2], [1.0, 1.0], {"flagged": [True, True]}),  # nothing left
        ([1, 2], [1.0, 1.0], {"flagged": [True]}),  # flagged length
        ([1, 2], [1.0, 1.0], {"noise_rel": -0.1}),
        ([1, 2], [1.0, 1.0], {"min_size": 0}),
        ([[1, 2]], [[1.0, 1.0]], {}),  # not 1-D
    ],
)
def test_bad_input_raises(channels, latency, kw):
    with pytest.raises(LatprofError):
        fit_steps(channels, latency, **kw)
