"""fit_steps on lines that look measured (issue 16): per-row noise, sloped plateaus, one-point
spikes and dips, unreported scatter, the tile period; and the generator these tests and
bench/stepfit_bench.py score against (tests/synthetic.py:stair_line).

The benchmark reports the figures over hundreds of lines; these tests pin each behaviour on
lines built for it, and one slow test checks the pooled figures on 40 generated lines against
a floor below what they showed (the pooled figures of a few lines vary by several points; the
benchmark's 280 lines are the measure against the goal).
"""

import math

import numpy as np
import pytest

from latprof.staircase.changepoint import infer_period, step_period
from latprof.staircase.fit import fit_steps
from latprof.staircase.lines import FIT_NOISE_REL, row_rel_se
from synthetic import stair_line


def measured(y_log, sigma, rng, n=20):
    """Rows with median-of-n noise sigma (log units): latency, rel_se as the table gives it."""
    lat = np.exp(y_log + sigma * rng.standard_normal(y_log.size))
    return lat, np.full(y_log.size, sigma)


def test_generator_truth_is_consistent():
    rng = np.random.default_rng(1)
    for _ in range(20):
        line = stair_line(rng)
        y = np.log(line.curve)
        assert line.curve.size == line.full and np.all(line.edges >= 2)
        assert np.all(np.diff(line.outliers) >= 2) and not set(line.outliers) & {1, line.full}
        assert not set(line.gaps.tolist()) & {1, line.full}
        assert np.all((line.sigma_med >= 0.002 - 1e-12) & (line.sigma_med <= 0.05 + 1e-12))
        clean = [e for e in line.edges if not {e - 1, e} & set(line.outliers.tolist())]
        for e in clean:  # the step in the curve is the jump, give or take one count of slope
            k = list(line.edges).index(e)
            assert abs((y[e - 1] - y[e - 2]) - line.jumps[k]) < 0.5 / line.full + 1e-9
        det = line.detectable()
        assert np.array_equal(det, np.abs(line.jumps) >= 3 * line.edge_sigma())


def test_measure_reports_a_standard_error_that_matches_the_scatter():
    rng = np.random.default_rng(2)
    line = stair_line(rng, full=256, width=64, sigma0=0.01, outliers=False, gaps=False, switch="")
    line.tau = 0.0
    reps = np.array([[line.measure(100, rng) for _ in range(400)]])[0]
    scatter = np.std(np.log(reps[:, 0]))
    se = np.median(0.93 * reps[:, 1] / np.sqrt(reps[:, 2]))
    assert 0.7 < se / scatter < 1.4


@pytest.mark.parametrize("seed", range(6))
def test_sloped_plateau_is_one_segment(seed):
    """A plateau rising 5 sigma across (the issue's 2598 -> 2641 us at 0.3 %) is not cut."""
    rng = np.random.default_rng(seed)
    c = np.arange(1, 97)
    sigma = 0.003
    y = np.log(2598.0) + np.where(c > 64, 0.2, 0.0) + 5 * sigma * ((c - 1) % 64) / 63
    lat, se = measured(y, sigma, rng)
    fit = fit_steps(c, lat, rel_se=se)
    assert fit.edges == (65,)
    assert fit.segments[0].slope > 0 and fit.outliers == ()


@pytest.mark.parametrize("seed", range(6))
def test_per_row_noise_keeps_small_steps_of_quiet_lines(seed):
    """2 % steps at 0.3 % row noise: found with each row's own error, merged by one global noise."""
    rng = np.random.default_rng(10 + seed)
    c = np.arange(1, 129)
    y = 0.02 * np.ceil(c / 32)
    lat, se = measured(y, 0.003, rng)
    assert fit_steps(c, lat, rel_se=se).edges == (33, 65, 97)
    assert fit_steps(c, lat, noise_rel=FIT_NOISE_REL, period=None).edges == ()


@pytest.mark.parametrize("seed", range(4))
def test_spike_and_dip_on_a_sloped_plateau_are_outliers(seed):
    rng = np.random.default_rng(20 + seed)
    c = np.arange(1, 81)
    y = 0.004 * 4 * (c - 1) / 79 + np.where(c > 40, 0.15, 0.0)
    y[19] += 0.4   # spike at 20
    y[59] -= 0.3   # dip at 60
    lat, se = measured(y, 0.004, rng)
    fit = fit_steps(c, lat, rel_se=se)
    assert 41 in fit.edges and fit.outliers == (20, 60)
    assert not any(abs(e - o) <= 1 for e in fit.edges for o in (20, 60))  # never a segment


def test_unreported_scatter_is_found_and_makes_no_edges():
    """Rows claim 0.2 % but scatter 1.5 % (drift between rows): tau absorbs it, no fake edges."""
    rng = np.random.default_rng(30)
    c = np.arange(1, 201)
    lat = np.exp(0.015 * rng.standard_normal(c.size))
    fit = fit_steps(c, lat, rel_se=np.full(c.size, 0.002))
    assert fit.edges == () and 0.01 < fit.tau < 0.02


def test_edges_carry_jump_and_significance():
    c = np.arange(1, 41)
    lat = np.where(c > 20, 1.1, 1.0)
    fit = fit_steps(c, lat, rel_se=np.full(c.size, 0.01))
    assert fit.edges == (21,) and fit.jumps[0] == pytest.approx(0.1, rel=1e-6)
    # two flat segments of 20 points at 1 % noise: SE of the jump = 0.01 * sqrt(2 / 20)
    assert fit.z_scores[0] == pytest.approx(math.log(1.1) / (0.01 * math.sqrt(0.1)), rel=0.02)
    assert list(fit.to_frame()["jump"]) == [0.0, pytest.approx(0.1)]


def test_period_from_neighbour_differences_and_from_edges():
    rng = np.random.default_rng(40)
    c = np.arange(1, 257)
    lat, _ = measured(0.03 * np.ceil(c / 8), 0.004, rng)
    assert step_period(c.astype(float), np.log(lat)) == 8
    flat, _ = measured(np.zeros(c.size), 0.004, rng)
    assert step_period(c.astype(float), np.log(flat)) is None
    assert infer_period([17, 33, 49, 65, 81]) == 16
    assert infer_period([17, 33, 40]) is None          # 2 of 3 aligned: no width
    assert infer_period([5, 23, 40, 77, 101]) is None  # no width explains them


def test_period_places_edges_in_gaps():
    """Sparse points, one per tile end: with the period the edge is the tile start, without it the
    first measured count at the new level."""
    c = np.array([1, 16, 17, 32, 33, 48, 49, 64, 65, 80, 96, 112])
    lat = np.ceil(c / 16).astype(float)
    fit = fit_steps(c, lat, period="auto")  # 4 exact edges at 16m + 1: chance ~ 16^-4
    assert fit.period == 16 and fit.edges == (17, 33, 49, 65, 81, 97)
    assert fit.edge_intervals[-2:] == ((81, 96), (97, 112))
    assert fit_steps(c, lat, period=None).edges == (17, 33, 49, 65, 96, 112)
    three = fit_steps(c[:8], lat[:8], period="auto")  # 3 exact edges at 16m + 1 could be chance
    assert three.period is None


def test_row_rel_se():
    se = row_rel_se([0.1, 0.0, 0.1, np.nan], [25, 7, 0, 7])
    assert se[0] == pytest.approx(0.93 * 0.1 / 5) and np.isnan(se[1:]).all()


@pytest.mark.slow
def test_generated_lines_pooled_figures():
    """40 generated lines, dense: pooled recall of detectable edges and precision (the benchmark,
    bench/stepfit_bench.py, reports the same over 280 lines against a 0.97 / 0.95 goal)."""
    det = hit = found = right = 0
    for seed in range(40):
        rng = np.random.default_rng(500 + seed)
        line = stair_line(rng)
        ch, lat, se = line.dense(rng)
        fit = fit_steps(ch, lat, rel_se=se)
        used: set[int] = set()
        for k, e in enumerate(line.edges):
            near = [j for j, f in enumerate(fit.edges) if abs(f - e) <= 1 and j not in used]
            if near:
                used.add(near[0])
            if line.detectable()[k]:
                det += 1
                hit += bool(near)
        found += len(fit.edges)
        right += len(used)
    # observed when written: recall 0.877 (229 / 261), precision 0.968; with the period read in
    # units of each row's error, the periodic prior pass and one-count plateaus at edges: 0.935
    # (244 / 261), 0.967. The floor leaves room for the few-point swings of 40 lines and fails
    # on a real regression
    assert hit / det >= 0.90 and right / found >= 0.93, (hit / det, right / found)
