"""The latency model of a channel configuration (`latprof.prune.latmodel`), on synthetic tables
whose staircase is known exactly (`synthetic.staircase_us`: a step every 16 channels)."""

import math

import numpy as np
import pytest

from latprof import models
from latprof.errors import LatprofError
from latprof.prune import graph as graphs
from latprof.prune import latmodel as latmodel
from latprof.tables import io as tbl
from synthetic import model_table, staircase_us

MODEL = "small_cifar10"   # convs 3->32, 32->32 @32x32, 32->64, 64->64 @16x16


def build(path):
    t = tbl.read(path)
    net, size = models.load(MODEL)
    return latmodel.build(graphs.analyse(net, size), t, tbl.context(t)), t


@pytest.fixture(scope="module")
def coarse_model(tmp_path_factory):
    """Lines measured at every 4th count (1, 4, 8, ..., full), no (c_in, c_out) grid pairs."""
    return build(model_table(tmp_path_factory.mktemp("lm") / "coarse.parquet", MODEL, every=4))


@pytest.fixture
def coarse(coarse_model):
    """The shared model with no recorded misses and no calibration, whatever earlier tests did."""
    lm, t = coarse_model
    lm.missing.clear()
    lm.scale, lm.rest_us = 1.0, 0.0
    return lm, t


def term(lm, name):
    return next(t for t in lm.terms if t.name == name)


def test_terms_follow_the_graph_groups(coarse):
    lm, _ = coarse
    assert [(t.name, t.g_in, t.g_out) for t in lm.terms] == [
        ("features.0", None, 0), ("features.3", 0, 1), ("features.7", 1, 2), ("features.10", 2, 3),
        ("classifier", 3, None)]                  # the Linear classifier reads the last group
    assert lm.terms[-1].spec.op == "linear"
    assert lm.full_counts() == [32, 32, 64, 64]
    assert not lm.calibrated and lm.scale == 1.0 and lm.rest_us == 0.0


def test_lookup_returns_the_measured_row_when_present(coarse):
    lm, t = coarse
    conv = term(lm, "features.3")                 # 32 -> 32
    spec = conv.spec.replace(c_out=8)
    assert lm.index.get(spec) is not None         # c_out = 8 was measured
    assert lm.lookup(conv, 32, 8) == pytest.approx(staircase_us(spec))
    spec_in = conv.spec.replace(c_in=12)
    assert lm.lookup(conv, 12, 32) == pytest.approx(staircase_us(spec_in))
    assert lm.missing == set()


def rippled_us(spec):
    """The staircase with a +-1% ripple inside each plateau (below the fitter's noise floor)."""
    return staircase_us(spec) * (1 + 0.01 * ((spec.c_in + spec.c_out) % 3 - 1))


def test_a_measured_row_wins_over_its_plateau_level(tmp_path):
    lm, _ = build(model_table(tmp_path / "ripple.parquet", MODEL, every=4, latency=rippled_us))
    conv = term(lm, "features.3")
    fit = lm.fits[(conv.spec, "c_out")]
    assert [(s.start, s.end) for s in fit.fit.segments] == [(1, 16), (20, 32)]
    measured = rippled_us(conv.spec.replace(c_out=8))
    assert measured != pytest.approx(fit.level_at(8), rel=1e-3)   # the row and the level differ
    assert lm.lookup(conv, 32, 8) == pytest.approx(measured, rel=1e-12)
    assert lm.lookup(conv, 32, 10) == pytest.approx(fit.level_at(10), rel=1e-12)   # unmeasured: level


@pytest.mark.parametrize("c_in, c_out, axis_spec", [
    (32, 10, dict(c_out=16)),    # c_out 10 unmeasured, inside the measured plateau 1..16
    (32, 27, dict(c_out=32)),    # inside 20..32
    (6, 32, dict(c_in=16)),      # along c_in, inside 1..16
])
def test_lookup_returns_the_plateau_level_inside_a_fitted_plateau(coarse, c_in, c_out, axis_spec):
    lm, _ = coarse
    conv = term(lm, "features.3")
    asked = conv.spec.replace(c_in=c_in, c_out=c_out)
    assert lm.index.get(asked) is None            # not a measured row: the value comes from the fit
    assert lm.lookup(conv, c_in, c_out) == pytest.approx(staircase_us(conv.spec.replace(**axis_spec)))
    assert lm.missing == set()


def test_lookup_in_an_unresolved_edge_interval_is_missing(coarse):
    lm, _ = coarse
    conv = term(lm, "features.3")
    # the step lies between the measured 16 and 20: 17..19 belong to neither plateau
    assert lm.lookup(conv, 32, 18) is None
    assert lm.missing == {conv.spec.replace(c_out=18)}


def test_lookup_of_a_pair_the_table_lacks_is_none_and_recorded(coarse):
    lm, _ = coarse
    conv = term(lm, "features.7")                 # 32 -> 64
    assert lm.lookup(conv, 16, 32) is None        # both counts pruned: no line holds the pair
    assert lm.missing == {conv.spec.replace(c_in=16, c_out=32)}
    # a configuration needing that pair sums to NaN rather than to a wrong number
    assert math.isnan(lm.conv_sum([32, 16, 32, 64]))


def test_grid_pairs_make_pruned_pairs_exact(tmp_path):
    lm, _ = build(model_table(tmp_path / "grid.parquet", MODEL, every=4, grid=True))
    conv = term(lm, "features.7")
    assert lm.lookup(conv, 16, 32) == pytest.approx(staircase_us(conv.spec.replace(c_in=16, c_out=32)))
    assert lm.missing == set()


def test_predict_is_scale_times_conv_sum_plus_rest(coarse):
    lm, _ = coarse
    full = lm.full_counts()
    by_hand = sum(staircase_us(t.spec) for t in lm.terms)
    assert lm.conv_sum(full) == pytest.approx(by_hand)
    lm.scale, lm.rest_us = 1.5, 7.0
    assert lm.predict(full) == pytest.approx(1.5 * by_hand + 7.0)
    # only the last group moves: features.10 runs 64 -> 48, a measured point of its c_out line, and
    # the classifier reads 48 features (a measured point of its c_in line)
    counts = [32, 32, 64, 48]
    last, fc = term(lm, "features.10").spec, term(lm, "classifier").spec
    expected = (by_hand - staircase_us(last) + staircase_us(last.replace(c_out=48))
                - staircase_us(fc) + staircase_us(fc.replace(c_in=48)))
    assert lm.conv_sum(counts) == pytest.approx(expected)
    assert expected < by_hand
    assert lm.predict(counts) == pytest.approx(1.5 * expected + 7.0)


def test_options_are_ascending_and_end_with_the_full_count(coarse):
    lm, _ = coarse
    assert len(lm.options) == len(lm.graph.groups)
    for opts, group in zip(lm.options, lm.graph.groups):
        assert opts == sorted(set(opts))
        assert opts[-1] == group.channels
        assert all(c >= 0.2 * group.channels for c in opts)
    # the synthetic staircase steps every 16 channels: the plateau ends are the efficient counts
    assert lm.options == [[16, 32], [16, 32], [16, 32, 48, 64], [16, 32, 48, 64]]


def test_min_keep_drops_small_options(coarse):
    lm, t = coarse
    tight = latmodel.build(lm.graph, t, tbl.context(t), min_keep=0.5)
    assert tight.options == [[16, 32], [16, 32], [32, 48, 64], [32, 48, 64]]


def test_build_collects_a_missing_c_out_line_for_the_request(tmp_path):
    # drop the last three lines (64->64's c_out and c_in lines, the classifier's c_in line): build
    # asks for them, it does not raise
    path = model_table(tmp_path / "short.parquet", MODEL, every=4, drop_lines=3)
    lm, _ = build(path)
    assert [(line.base.c_in, line.base.c_out, line.axis) for line in lm.missing_lines] == [(64, 64, "c_out")]
    assert set(lm.missing_lines[0].specs()) <= lm.missing
    group = next(g for g in lm.graph.groups if g.root == "features.10")
    assert lm.options[group.index] == [group.channels]


@pytest.mark.parametrize("scale, rest", [(1.3, 5.0), (0.8, 0.0), (2.0, 120.0)])
def test_fit_calibration_recovers_scale_and_rest(scale, rest):
    p = [100.0, 250.0, 400.0, 900.0]
    m = [scale * x + rest for x in p]
    got = latmodel.fit_calibration(p, m)
    assert got == pytest.approx((scale, rest), abs=1e-9)


def test_fit_calibration_with_one_point_fits_the_rest_only():
    assert latmodel.fit_calibration([100.0], [130.0]) == pytest.approx((1.0, 30.0))
    assert latmodel.fit_calibration([100.0, 100.0], [120.0, 140.0]) == pytest.approx((1.0, 30.0))
    assert latmodel.fit_calibration([100.0], [90.0]) == (1.0, 0.0)     # rest never negative


def test_fit_calibration_never_returns_a_negative_rest():
    p = np.array([100.0, 200.0, 300.0])
    scale, rest = latmodel.fit_calibration(p, 2.0 * p - 50.0)     # the line's intercept is -50
    assert rest == 0.0
    m = 2.0 * p - 50.0
    assert scale == pytest.approx(float(m @ p / (p @ p)))          # least squares through the origin


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_fit_calibration_rejects_non_finite_input(bad):
    with pytest.raises(LatprofError, match="finite"):
        latmodel.fit_calibration([100.0, bad], [110.0, 220.0])
    with pytest.raises(LatprofError, match="finite"):
        latmodel.fit_calibration([100.0, 200.0], [110.0, bad])


def test_prune_prices_a_pair_the_sweep_missed_from_the_two_lines_and_lists_it(tmp_path):
    from latprof.prune import pipeline
    from latprof.tables import request as requests

    # lines only: no (c_in, c_out) pairs, as if the fits moved after the sweep planned them
    path = model_table(tmp_path / "lines.parquet", MODEL, every=4)
    cfg = pipeline.PruneConfig(model=MODEL, table=str(path), target_ratio=0.6, measure=False, out=tmp_path / "out")
    setup = pipeline.load(cfg)                       # no request round: it goes on
    lm = setup.lm
    assert lm.estimated and not lm.missing
    listed = set(requests.read_request(tmp_path / "out" / "pairs.request.json"))
    assert listed == lm.estimated
    assert any("pairs.request.json" in w and "separable grid model" in w for w in setup.warnings)
    spec = min(lm.estimated)
    t = next(t for t in lm.terms if t.spec.replace(c_in=spec.c_in, c_out=spec.c_out) == spec)
    full = lm.fits[(t.spec, "c_out")].level_at(t.spec.c_out)
    by_hand = (lm.fits[(t.spec, "c_out")].level_at(spec.c_out) * lm.fits[(t.spec, "c_in")].level_at(spec.c_in)
               / full)
    assert lm.lookup(t, spec.c_in, spec.c_out) == pytest.approx(by_hand)
    # close to the truth (the synthetic staircase is a product plus a 5 us constant, not quite separable)
    assert by_hand == pytest.approx(staircase_us(spec), rel=0.3)
