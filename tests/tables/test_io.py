import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from latprof.tables import io as tbl
from latprof.errors import LatprofError
from latprof.spec import ConvSpec


def make_rows(specs, latency=100.0, session="s1"):
    rows = []
    for i, s in enumerate(specs):
        lat = latency + i
        rows.append({**s.to_row(), "latency_us_p50": lat, "latency_us_p10": lat - 2, "latency_us_p25": lat - 1,
                     "latency_us_p75": lat + 1, "latency_us_p90": lat + 2, "latency_us_min": lat - 3,
                     "latency_us_mean": lat, "rel_iqr": 2 / lat, "latency_norm_us_p50": lat,
                     "latency_norm_us_p25": lat - 1, "latency_norm_us_p75": lat + 1, "rel_iqr_norm": 2 / lat,
                     "ref_us_p50": 500.0, "ref_baseline_us": 500.0, "ref_drift_rel": 0.01, "n_samples": 7,
                     "inner_reps": 1, "threads": 2, "macs": s.macs(), "flag_noisy": False, "flag_drift": False,
                     "flag_throttled": False, "algo": "", "gpu_clock_mhz": None, "gpu_temp_c": None,
                     "measured_at": "2026-01-01T00:00:00+00:00", "host": "h", "session": session})
    return pd.DataFrame(rows)


META = {"device": {"kind": "cpu", "name": "Test CPU", "slug": "cpu-test"}, "versions": {}, "protocol": {},
        "host": "h", "reference": {"workload": "ref", "baseline_us": 500.0}}
SPECS = [ConvSpec(c_in=4, c_out=c, h=8, w=8) for c in (4, 8, 12)]


def write(path, df=None, meta=None):
    tbl.write(path, tbl.LatencyTable(make_rows(SPECS) if df is None else df, dict(meta or META)))


def test_round_trip_keeps_rows_types_and_provenance(tmp_path):
    path = tmp_path / "t.parquet"
    write(path)
    t = tbl.read(path)
    assert len(t.df) == 3
    assert t.df["c_out"].tolist() == [4, 8, 12]
    assert t.meta["schema_version"] == tbl.SCHEMA_VERSION
    assert t.meta["device"]["slug"] == "cpu-test"
    assert t.meta["content_hash"].startswith("sha256:")
    assert pq.read_schema(path).metadata[b"schema_version"] == str(tbl.SCHEMA_VERSION).encode()
    assert tbl.validate(t) == []


def test_upsert_replaces_same_key_and_keeps_others():
    old = make_rows(SPECS, latency=100.0, session="old")
    new = make_rows([SPECS[1], ConvSpec(c_in=4, c_out=16, h=8, w=8)], latency=300.0, session="new")
    merged = tbl.upsert(old, new)
    assert merged["c_out"].tolist() == [4, 8, 12, 16]
    by_c = merged.set_index("c_out")
    assert by_c.loc[8, "session"] == "new" and by_c.loc[8, "latency_us_p50"] == 300.0
    assert by_c.loc[4, "session"] == "old"


def test_tampered_rows_fail_the_hash_check(tmp_path):
    path = tmp_path / "t.parquet"
    write(path)
    arrow = pq.read_table(path)
    df = arrow.to_pandas()
    df.loc[0, "latency_us_p50"] = 1.0
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(arrow.schema.metadata),
                   path)
    with pytest.raises(LatprofError, match="content hash"):
        tbl.read(path)


def _rewrite_meta(path, **changes):
    arrow = pq.read_table(path)
    meta = json.loads(arrow.schema.metadata[tbl.META_KEY])
    meta.update(changes)
    pq.write_table(arrow.replace_schema_metadata({tbl.META_KEY: json.dumps(meta).encode()}), path)


@pytest.mark.parametrize("version, words", [(99, "newer than this latprof"), (0, "latprof tables upgrade")])
def test_schema_versions_other_than_ours_are_refused(tmp_path, version, words):
    path = tmp_path / "t.parquet"
    write(path)
    _rewrite_meta(path, schema_version=version)
    with pytest.raises(LatprofError, match=words):
        tbl.read(path)


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "t.parquet"
    write(path)
    arrow = pq.read_table(path)
    pq.write_table(arrow.drop(["latency_norm_us_p50"]), path)
    with pytest.raises(LatprofError, match="latency_norm_us_p50"):
        tbl.read(path)


@pytest.mark.parametrize("content, words", [
    (b"", "not a readable Parquet"), (b"hello, world", "not a readable Parquet")])
def test_not_parquet(tmp_path, content, words):
    path = tmp_path / "t.parquet"
    path.write_bytes(content)
    with pytest.raises(LatprofError, match=words):
        tbl.read(path)


def test_truncated_and_foreign_parquet(tmp_path):
    path = tmp_path / "t.parquet"
    write(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LatprofError, match="truncated"):
        tbl.read(path)
    pd.DataFrame({"a": [1]}).to_parquet(path)
    with pytest.raises(LatprofError, match="not a latprof table"):
        tbl.read(path)


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(LatprofError, match="latprof sweep"):
        tbl.read(tmp_path / "nope.parquet")


def test_validate_reports_impossible_values(tmp_path):
    df = make_rows(SPECS)
    df.loc[1, "latency_us_p25"] = 1e9
    df.loc[2, "latency_norm_us_p50"] = 0.0
    problems = tbl.validate(tbl.LatencyTable(df, {}))
    text = " ".join(problems)
    assert "quantiles out of order" in text and "latency_norm_us_p50 <= 0" in text and "metadata lacks" in text


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "t.parquet"
    write(path)
    write(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]
