"""Terminal summaries of tables (`latprof.tables.report`) on synthetic tables of small_cifar10.

small_cifar10's dense lines, by hand: at 32x32, 3->c (32), c->32 (32), 32->c (32) share 3->32 and
32->32: 94 shapes; at 16x16, 32->c (64), c->64 (64, which holds 32->64's c_in line), 64->c (64)
share 32->64 and 64->64: 190 shapes. 284 in all. Without 64->64's two lines, c->64 for c = 33..64
(32) and 64->c for c = 1..63 (63) are gone: 189 remain."""

import re

import pytest

from latprof.tables import io as tbl
from latprof.tables import report
from synthetic import META, model_table

MODEL = "small_cifar10"
DENSE = 284 + 64   # the convs' dense lines, and the classifier's c_in line (64 features)


@pytest.fixture(scope="module")
def two_batches(tmp_path_factory):
    """Every dense line of small_cifar10 at batch 1 and at batch 4; three batch-4 rows flagged noisy."""
    root = tmp_path_factory.mktemp("report")
    meta = {**META, "device": {**META["device"], "logical_cpus": 2}, "versions": {"torch": "9.9.9"},
            "hosts": ["abc123"]}
    one = tbl.read(model_table(root / "b1.parquet", MODEL, batch=1, meta=meta))
    four = tbl.read(model_table(root / "b4.parquet", MODEL, batch=4, meta=meta))
    df = tbl.upsert(one.df, four.df)
    df.loc[df.index[df["batch"] == 4][:3], "flag_noisy"] = True
    path = root / "both.parquet"
    tbl.write(path, tbl.LatencyTable(df, dict(meta)))
    return tbl.read(path), path


def test_table_info_names_the_device_rows_and_batches(two_batches):
    t, path = two_batches
    text = report.table_info(t, path)
    assert f"table      {path}" in text
    assert "device     Synthetic CPU [cpu, cpu-synthetic] {'logical_cpus': 2}" in text
    assert "torch 9.9.9" in text
    assert f"rows       {2 * DENSE}" in text
    assert "hosts abc123" in text
    assert "reference  none: 1.0 us baseline" in text
    # one coverage line per batch size, with its row count
    for batch in (1, 4):
        assert re.search(rf"cpu\s+float32\s+nchw\s+{batch}\s+{DENSE}\s", text), text
    assert "flags      3 noisy (0.4%), 0 drifted (0.0%)" in text
    # 3x3 convs at 32x32 and at 16x16, stride 1, no groups, and the Linear classifier's GEMM
    assert "shapes     3 distinct kernel/stride/size/group combinations (1 of Linear layers: GEMMs)" in text


def test_table_info_of_an_empty_table_has_no_coverage():
    t = tbl.LatencyTable(tbl.empty_frame(), dict(META))
    text = report.table_info(t, "empty.parquet")
    assert "rows       0" in text
    assert "coverage" not in text and "flags" not in text


def test_full_lines_cover_the_model(tmp_path):
    t = tbl.read(model_table(tmp_path / "full.parquet", MODEL))
    text = report.model_coverage(t, MODEL, None)
    assert text.splitlines() == [f"coverage of {MODEL} (dense lines):",
                                 f"  batch 1 float32 nchw cpu: {DENSE}/{DENSE} shapes (100%)"]


def test_missing_lines_lower_the_coverage_and_name_the_batch(tmp_path):
    # without the last conv's two lines and the classifier's
    t = tbl.read(model_table(tmp_path / "short.parquet", MODEL, batch=2, drop_lines=3))
    text = report.model_coverage(t, MODEL, None)
    assert f"  batch 2 float32 nchw cpu: 189/{DENSE} shapes (54%)" in text
    assert "100%" not in text


def test_coverage_per_batch_and_for_one_batch(two_batches):
    t, _ = two_batches
    every = report.model_coverage(t, MODEL, None)
    assert f"batch 1 float32 nchw cpu: {DENSE}/{DENSE} shapes (100%)" in every
    assert f"batch 4 float32 nchw cpu: {DENSE}/{DENSE} shapes (100%)" in every
    only = report.model_coverage(t, MODEL, 4)
    assert "batch 4" in only and "batch 1 " not in only


def test_coverage_of_a_batch_the_table_lacks(two_batches):
    t, _ = two_batches
    text = report.model_coverage(t, MODEL, 8)
    assert "holds no rows for that batch size" in text


def test_coverage_of_a_model_the_table_was_not_swept_for(tmp_path):
    t = tbl.read(model_table(tmp_path / "small.parquet", MODEL))
    text = report.model_coverage(t, "resnet20_cifar10", None)
    m = re.search(r"batch 1 float32 nchw cpu: (\d+)/(\d+) shapes \((\d+)%\)", text)
    assert m, text
    have, total = int(m.group(1)), int(m.group(2))
    assert 0 <= have < total and int(m.group(3)) < 100
