"""The tile period (staircase/period.py): reading it from neighbour differences in units of each
row's own error, and the periodic prior pass that tests every tile start inside a segment."""

import numpy as np
import pytest

from latprof.staircase.fit import fit_steps
from latprof.staircase.period import step_period, tile_steps


def rows(y, sigma, rng):
    return y + sigma * rng.standard_normal(y.size)


@pytest.mark.parametrize("seed", range(5))
def test_period_read_in_units_of_each_rows_error(seed):
    """Steps of 2 at every other count, 3 sigma where rows are quiet (0.2 %) and 0.5 sigma where
    they are busy (1.2 %): in units of each row's error the quiet half shows the width."""
    rng = np.random.default_rng(seed)
    c = np.arange(1, 201)
    sigma = np.where(c <= 100, 0.002, 0.012)
    y = rows(0.006 * np.ceil(c / 2), sigma, rng)
    assert step_period(c.astype(float), y, sigma) == 2
    flat = rows(np.zeros(c.size), sigma, rng)
    assert step_period(c.astype(float), flat, sigma) is None


@pytest.mark.parametrize("seed", range(5))
def test_a_few_large_steps_make_no_width(seed):
    """Four switches that happen to fall on counts 24m + 1 are not a tile width (clipped)."""
    rng = np.random.default_rng(20 + seed)
    c = np.arange(1, 241)
    y = rows(0.3 * np.isin(c, [49, 121, 169, 217]).cumsum(), np.full(c.size, 0.005), rng)
    assert step_period(c.astype(float), y, np.full(c.size, 0.005)) is None


def test_tile_steps_inside_one_segment():
    """Tile starts inside one segment: steps of 3 sigma at every 4-count tile are edges; a plateau
    rising as much, but evenly, has none (its rise shows within tiles as much as across)."""
    rng = np.random.default_rng(3)
    x = np.arange(1, 97).astype(float)
    sigma = 0.004
    wt = np.full(x.size, sigma**-2)
    stair = rows(3 * sigma * np.ceil(x / 4), sigma, rng)
    found = tile_steps(x, stair, wt, 4, [0])
    assert len(found) >= 18 and all((x[i] - 1) % 4 == 0 for i in found)  # of 23 tile starts
    ramp = rows(3 * sigma * x / 4, sigma, rng)
    assert tile_steps(x, ramp, wt, 4, [0]) == []


@pytest.mark.parametrize("seed", range(4))
def test_switch_one_count_before_a_tile_edge_is_a_plateau(seed):
    """A bump that ends one count before a tile edge leaves one count at its own level, below both
    neighbours: a one-count plateau between two edges, not an outlier."""
    rng = np.random.default_rng(40 + seed)
    c = np.arange(1, 129)
    y = 0.05 * np.ceil(c / 32) + np.where((c >= 40) & (c < 64), 0.4, 0.0)
    lat = np.exp(rows(y, 0.003, rng))
    fit = fit_steps(c, lat, rel_se=np.full(c.size, 0.003))
    assert {40, 64, 65} <= set(fit.edges) and 64 not in fit.outliers


def test_sparse_line_with_period_keeps_its_noise():
    """A sparse sample with a period: neighbours inside one tile were measured where a sampler
    bisected an algorithm switch or probed around a spike, so their differences are steps, not
    noise. Regression: tau was read from them (0.49) and the fit found no edge at all."""
    from latprof.staircase.fit import fit_steps

    c = np.arange(1, 513)
    y = 0.2 * np.ceil(c / 64) + np.where((c >= 252) & (c < 312), 0.6, 0.0)
    pts = sorted({1, 512} | {v for m in range(1, 8) for v in (64 * m, 64 * m + 1)}
                 | {248, 250, 251, 252, 256, 308, 310, 311, 312, 16, 17, 96, 97, 98, 32, 33, 160, 161})
    lat = np.exp(y[np.array(pts) - 1])
    lat[pts.index(17)] *= 1.66
    lat[pts.index(97)] *= 1.97
    fit = fit_steps(pts, lat, noise_rel=0.02, period=64)
    assert fit.tau < 0.05
    assert set(fit.edges) >= {65, 129, 193, 252, 257, 312, 321, 385, 449}
