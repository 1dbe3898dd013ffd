import json

import pytest

from latprof.staircase import lines as st
from latprof.staircase import options
from latprof.staircase import steptable
from latprof.tables import io as tbl
from synthetic import model_table, staircase_us


@pytest.fixture(scope="module")
def resnet20(tmp_path_factory):
    return model_table(tmp_path_factory.mktemp("t") / "r20.parquet", "resnet20_cifar10")


def test_edges_and_efficient_counts_of_a_known_staircase(resnet20):
    t = tbl.read(resnet20)
    layers = st.model_steps(t, "resnet20_cifar10", tbl.context(t))
    assert not st.missing_lines(layers)
    lay = next(x for x in layers if x.spec.c_out == 64 and x.spec.c_in == 64)
    assert lay.out.fit.edges == (17, 33, 49)
    assert lay.out.fit.efficient == (16, 32, 48, 64)
    assert lay.inp.fit.edges == (17, 33, 49)
    first = layers[0]  # 3 -> 16: the whole c_out line is one tile
    assert first.out.fit.edges == () and first.out.fit.efficient == (16,)


def _line_64(path):
    """The table, the c_out line of resnet20's 64->64 conv, and each row's count on that line (NaN off it)."""
    t = tbl.read(path)
    line = next(x for x in st.model_steps(t, "resnet20_cifar10", tbl.context(t))
                if x.spec.c_out == 64 and x.spec.c_in == 64).out.line
    keys = {line.spec_at(c).key(): c for c in range(1, 65)}
    return t, line, t.df.apply(lambda r: keys.get(tuple(r[k] for k in st.KEY_FIELDS)), axis=1)


def test_noisy_rows_are_fitted_throttled_rows_are_not(resnet20):
    t, line, at = _line_64(resnet20)
    t.df.loc[at.isin([17, 33]), "flag_noisy"] = True          # the first count of two new levels
    t.df.loc[at == 40, ["flag_throttled", "latency_norm_us_p50"]] = [True, 1e6]
    fit = st.fit_line(st.TableIndex(t), line)
    assert fit.fit.edges == (17, 33, 49)                        # noisy rows place their edges
    assert fit.fit.flagged == (40,) and fit.excluded[fit.channels.index(40)]
    assert [c for c, n in zip(fit.channels, fit.noisy) if n] == [17, 33]
    dropped = st.fit_line(st.TableIndex(t, drop_noisy=True), line)
    assert dropped.fit.edges == (18, 34, 49)                    # holes at 17, 33: edge known to +-1
    assert dropped.fit.flagged == (17, 33, 40)


def test_layer_frame_savings(resnet20):
    t = tbl.read(resnet20)
    frame = st.layer_frame(st.model_steps(t, "resnet20_cifar10", tbl.context(t)))
    r = frame[(frame["c_in"] == 64) & (frame["c_out"] == 64)].iloc[0]
    assert r["efficient"] == [16, 32, 48]
    # 8x8 output, 3x3: work units 4x4=16 at full; at c_out=16 1x4=4; latency 5 + 1e-3 * w * 576
    full, at16 = 5 + 16 * 0.576, 5 + 4 * 0.576
    assert r["saving_pct"][0] == pytest.approx(round(100 * (1 - at16 / full), 1))


def test_separable_grid_model_is_exact_for_a_product_staircase(resnet20):
    t = tbl.read(resnet20)
    layers = st.model_steps(t, "resnet20_cifar10", tbl.context(t))
    lay = next(x for x in layers if x.spec.c_out == 64 and x.spec.c_in == 64)
    for ci, co in [(16, 48), (33, 17), (64, 1), (5, 60)]:
        pred = options.grid_predict(lay, ci, co)
        true = staircase_us(lay.spec.replace(c_in=ci, c_out=co))
        # the model multiplies the two lines; the +5 us constant makes it approximate
        assert pred == pytest.approx(true, rel=0.35)


def test_step_table_round_trip(resnet20, tmp_path):
    t = tbl.read(resnet20)
    layers = st.model_steps(t, "resnet20_cifar10", tbl.context(t))
    fits = [lay.out for lay in layers]
    path = steptable.write_steps(tmp_path / "s.steps.parquet", fits, t)
    df, meta = steptable.read_steps(path)
    assert meta["schema_version"] == steptable.STEPS_SCHEMA_VERSION and meta["raw_content_hash"] == t.meta["content_hash"]
    one = df[(df["c_in"] == 64) & (df["c_out"] == 64) & (df["axis"] == "c_out")]
    assert one["seg_start"].tolist() == [1, 17, 33, 49] and one["efficient"].tolist() == [True] * 4


@pytest.mark.slow
def test_steps_cli_formats_and_plots(cli, resnet20, tmp_path):
    r = cli("steps", "resnet20_cifar10", "--table", resnet20)
    assert r.exit_code == 0, r.output
    assert "layer3.0.conv2" in r.output and "3 steps" in r.output
    j = cli("steps", "resnet20_cifar10", "--table", resnet20, "--format", "json")
    rows = json.loads(j.output)
    assert {x["layer"] for x in rows} >= {"conv1", "layer1.0.conv1", "fc"} - {"fc"}
    c = cli("steps", "resnet20_cifar10", "--table", resnet20, "--format", "csv")
    assert c.output.splitlines()[0].startswith("layer,c_in,c_out")
    p = cli("steps", "resnet20_cifar10", "--table", resnet20, "--plot", tmp_path / "plots")
    assert p.exit_code == 0
    pngs = list((tmp_path / "plots").glob("*.png"))
    assert len(pngs) == len(rows) and pngs[0].read_bytes()[:4] == b"\x89PNG"
    assert steptable.steps_path(resnet20).exists()


def test_steps_names_missing_lines_and_the_command(cli, tmp_path):
    path = model_table(tmp_path / "part.parquet", "resnet20_cifar10", drop_lines=2)
    r = cli("steps", "resnet20_cifar10", "--table", path)
    assert r.exit_code == 1
    assert "lacks 2 line(s)" in r.output and "latprof sweep --model resnet20_cifar10 --batch 1" in r.output


@pytest.mark.slow
def test_steps_with_wave_prediction_overlay(cli, resnet20, tmp_path):
    r = cli("steps", "resnet20_cifar10", "--table", resnet20, "--plot", tmp_path / "p", "--predict",
            "--preset", "a100", "--tile", "32x32x32")
    assert r.exit_code == 0, r.output
    r = cli("steps", "resnet20_cifar10", "--table", resnet20, "--plot", tmp_path / "p", "--predict")
    assert r.exit_code == 1 and "--preset" in r.output


def test_wrong_batch_is_refused_with_what_the_table_holds(cli, resnet20):
    r = cli("steps", "resnet20_cifar10", "--table", resnet20, "--batch", "64")
    assert r.exit_code == 1 and "holds no rows" in r.output and "'batch': 1" in r.output


@pytest.mark.slow
def test_grid_pairs_cover_depthwise_lines_at_the_producers_counts(tmp_path):
    path = model_table(tmp_path / "mb.parquet", "mobilenet_v2", every=8)
    t = tbl.read(path)
    layers = st.model_steps(t, "mobilenet_v2", tbl.context(t))
    fits = [lay.out for lay in layers] + [lay.inp for lay in layers]
    pairs = options.grid_pairs(fits)
    dw = [p for p in pairs if p.depthwise and p.h == 112 and p.stride_h == 1]
    stem = next(lay for lay in layers if lay.name == "features.0.0")
    wanted = {c for c in options.channel_options(stem.out) if c < 32}
    assert wanted and wanted <= {p.c_in for p in dw}


def test_layer_frame_and_steps_show_each_edge_with_jump_and_significance(cli, resnet20):
    t = tbl.read(resnet20)
    frame = st.layer_frame(st.model_steps(t, "resnet20_cifar10", tbl.context(t)))
    r = frame[(frame["c_in"] == 64) & (frame["c_out"] == 64)].iloc[0]
    assert r["edges"] == [17, 33, 49] and len(r["jump_pct"]) == len(r["z"]) == 3
    # latency 5 + 0.576 * ceil(c/16) * 4 us: the step at 17 goes from 7.304 to 9.608 us
    assert r["jump_pct"][0] == pytest.approx(100 * (9.608 / 7.304 - 1), abs=0.1) and min(r["z"]) > 5
    out = cli("steps", "resnet20_cifar10", "--table", resnet20).output
    assert f"edges: 17(+{r['jump_pct'][0]:.1f}%, z={r['z'][0]:.0f})" in out


def test_fit_line_uses_each_rows_error(resnet20):
    """Rows that report a small error keep a 2 % step that the table-wide noise would merge."""
    t, line, at = _line_64(resnet20)
    on = at.notna()
    t.df.loc[on, "latency_norm_us_p50"] = [100.0 * (1.02 if c > 32 else 1.0) for c in at[on]]
    t.df.loc[on, "rel_iqr_norm"], t.df.loc[on, "n_samples"] = 0.005, 25   # SE 0.09 %
    fit = st.fit_line(st.TableIndex(t), line)
    assert fit.fit.edges == (33,) and fit.rel_se[0] == pytest.approx(0.93 * 0.005 / 5)
    t.df.loc[on, "rel_iqr_norm"] = 0.0   # no error known: FIT_NOISE_REL (3.7 %) merges the step
    assert st.fit_line(st.TableIndex(t), line).fit.edges == ()
