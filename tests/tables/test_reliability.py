"""Nothing lost, nothing raw (issue 15), at the library level: one test per numbered case where
the library decides, plus the schema, umask, journal and lock-file rules. The command-line side
of each case is in tests/cli/test_errors.py."""

import dataclasses
import errno
import json
import os
import stat

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from latprof import spec as specs
from latprof.errors import LatprofError
from latprof.measure import device
from latprof.measure.scheduler import Profiler, shape_failure
from latprof.measure.timing import Protocol
from latprof.spec import ConvSpec, Measurement
from latprof.staircase import lines as steps
from latprof.tables import io as tbl
from latprof.tables import merge, remote, upgrade
from latprof.tables.store import TableStore, lock_path, pending_rows, table_lock
from simulate import SimClock, SimRunner
from test_io import META, SPECS, make_rows, write


def folder_state(folder) -> dict:
    """Every file under `folder` with its bytes: to assert that nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def rewrite_meta(path, meta) -> None:
    """Replace a table file's latprof metadata (any JSON value), rows untouched."""
    arrow = pq.read_table(path)
    pq.write_table(arrow.replace_schema_metadata({tbl.META_KEY: json.dumps(meta).encode()}), path)


def test_measurement_and_the_declared_columns_are_one_list():
    fields = dataclasses.fields(Measurement)
    assert tuple(f.name for f in fields) == tbl.MEASUREMENT_FIELDS
    kinds = {pa.float64(): (float, "float | None"), pa.int32(): (int,), pa.int64(): (int,), pa.bool_(): (bool,),
             pa.string(): (str,)}
    for f, (name, arrow_type, meaning) in zip(fields, tbl.MEASUREMENT_COLUMNS):
        assert f.type in {t.__name__ if isinstance(t, type) else t for t in kinds[arrow_type]}, name
        assert meaning
    added = {c for cols in upgrade.ADDED_IN.values() for c in cols}
    assert set(tbl.COLUMN_DEFAULTS) == added and tbl.SCHEMA_VERSION == max(upgrade.ADDED_IN) == 3
    assert specs.KEY_FIELDS + tbl.MEASUREMENT_FIELDS == tbl.COLUMNS


# --- 1, 2: merge never replaces a table it was not given, and holds the sweep's lock -------------

def test_1_merge_refuses_to_replace_an_out_that_is_not_an_input(tmp_path):
    mine, part = tmp_path / "mine.parquet", tmp_path / "part.parquet"
    write(mine)
    tbl.write(part, tbl.LatencyTable(make_rows([ConvSpec(c_in=4, c_out=16, h=8, w=8)]), dict(META)))
    before = mine.read_bytes()
    with pytest.raises(LatprofError, match=r"mine.parquet exists and is not among the inputs.*--force"):
        merge.merge_files([part], mine)
    assert mine.read_bytes() == before
    kept = merge.merge_files([mine, part], mine)           # OUT among the inputs: its rows take part
    assert kept.rows == 4 and len(tbl.read(mine).df) == 4
    forced = merge.merge_files([part], mine, force=True)   # asked for: replaced, and the loss counted
    assert forced.rows == 1 and forced.replaced == 4


def test_2_merge_waits_for_no_sweep_it_refuses_while_one_holds_the_table(tmp_path):
    out, part = tmp_path / "t.parquet", tmp_path / "part.parquet"
    write(out)
    tbl.write(part, tbl.LatencyTable(make_rows([ConvSpec(c_in=4, c_out=16, h=8, w=8)]), dict(META)))
    with TableStore(out, META) as store:     # a running sweep
        store.append(make_rows([ConvSpec(c_in=4, c_out=20, h=8, w=8)]).to_dict("records")[0])
        with pytest.raises(LatprofError, match="another latprof process is writing"):
            merge.merge_files([out, part], out)
    # the sweep's row and the part's row both end in the table once the sweep is done
    merge.merge_files([out, part], out)
    assert len(tbl.read(out).df) == 5


def test_the_lock_file_is_hidden_from_globs_and_removed_on_exit(tmp_path):
    path = tmp_path / "cpu.shard1of2.parquet"
    with TableStore(path, META):
        assert lock_path(path).exists() and lock_path(path).name.startswith(".latprof-")
        assert lock_path(path).read_text() == f"{os.getpid()} {path.name}\n"
        assert not [p for pattern in ("*shard*", "cpu*", "*.parquet*") for p in tmp_path.glob(pattern)
                    if p.name.endswith(".lock")]
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    with table_lock(path):
        with pytest.raises(LatprofError, match="another latprof process"):
            table_lock(path).__enter__()
    assert not lock_path(path).exists()


# --- 3: OS errors are one line; nothing is half-written ----------------------------------------

def test_3_no_space_while_writing_leaves_the_table_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    write(path)
    before = folder_state(tmp_path)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(LatprofError) as err:
        write(path, make_rows(SPECS[:1]))
    assert str(err.value).startswith(f"cannot write {path}: no space left on the device")
    assert "\n" not in str(err.value)
    assert folder_state(tmp_path) == before     # the table intact, no temporary file left


def test_3_no_space_in_the_journal_loses_no_finished_row(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    rows = make_rows(SPECS).to_dict("records")
    real = os.fsync
    with pytest.raises(LatprofError, match="cannot append a row to the journal of .*no space left"):
        with TableStore(path, META) as store:
            store.append(rows[0])
            monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
            store.append(rows[1])
    monkeypatch.setattr(os, "fsync", real)
    with TableStore(path, META) as again:    # space freed: the next sweep has the finished row
        assert again.has(SPECS[0])


@pytest.mark.parametrize("code, words", [(errno.EACCES, "permission denied"), (errno.EROFS, "read-only"),
                                         (errno.ENOTDIR, "not a folder"), (errno.ENOSPC, "no space")])
def test_3_os_error_messages_name_operation_path_and_cause(code, words):
    msg = tbl.os_error_message(OSError(code, os.strerror(code), "/x/t.parquet"), "write", "/x/t.parquet")
    assert msg.startswith("cannot write /x/t.parquet: ") and words in msg and "\n" not in msg
    arrow_style = OSError(f"[errno {code}] Error writing bytes to file")   # Arrow's: no errno attribute
    assert words in tbl.os_error_message(arrow_style, "write", "t.parquet")


def test_3_an_unwritable_cache_is_one_line(tmp_path, monkeypatch, small_table):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("LATPROF_CACHE", str(tmp_path / "file" / "cache"))
    with pytest.raises(LatprofError, match=r"cannot write .*file/cache.*not a folder"):
        remote.open_table(small_table.as_uri())


# --- 4: a shape that cannot run is a failed row; the others are measured -----------------------

class Exploding(SimRunner):
    """Samples fine `after` times, then the device runs out of memory."""

    def __init__(self, true_us, after):
        super().__init__(true_us)
        self.left = after

    @property
    def true_us(self):
        self.left -= 1
        if self.left < 0:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self._us

    @true_us.setter
    def true_us(self, value):
        self._us = value


def test_4_failed_shapes_become_rows_and_the_sweep_goes_on(tmp_path):
    good = [ConvSpec(c_in=8, c_out=c, h=8, w=8) for c in range(1, 9)]
    huge, flaky = ConvSpec(c_in=8, c_out=4096, h=8, w=8), ConvSpec(c_in=8, c_out=100, h=8, w=8)

    def make_runner(spec, dev):
        if spec == huge:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 400 GB")
        return Exploding(100.0, 3) if spec == flaky else SimRunner(100.0 + spec.c_out)

    protocol = Protocol(warmup_s=0.001, min_samples=7, max_samples=15, ref_interval_s=0.01, window=4)
    with TableStore(tmp_path / "t.parquet", META) as store:
        clock = SimClock()
        prof = Profiler(device.cpu_device(), clock, protocol, store, dtype="float32", host="sim", activity=clock.activity(),
                        progress=False, make_runner=make_runner, reference=("ref", SimRunner(500.0)))
        result = prof.measure([huge] + good[:4] + [flaky] + good[4:])
        assert store.has(huge) and np.isnan(store.latency(huge))   # not tried again in this sweep
    assert result.measured == len(good) and result.failed == 2
    t = tbl.read(tmp_path / "t.parquet")
    failed = t.df[t.df["flag_failed"]]
    assert sorted(failed["c_out"]) == [100, 4096]
    why = dict(zip(failed["c_out"], failed["error"]))
    assert why[4096].startswith("RuntimeError: DefaultCPUAllocator") and "out of memory" in why[100]
    assert failed["latency_norm_us_p50"].isna().all() and (failed["n_samples"] == 0).all()
    assert tbl.validate(t) == []
    # unavailable to the fit and the latency model: not in the index, excluded from any fit
    index = steps.TableIndex(t)
    assert index.get(huge) is None and index.get(good[0]) is not None
    assert steps.excluded_rows(t.df).sum() == 2
    # a later sweep tries the failed shapes again (an out-of-memory may have been another process's)
    with TableStore(tmp_path / "t.parquet", META) as again:
        assert not again.has(huge) and again.has(good[0])


def test_4_what_counts_as_a_shape_failure():
    assert shape_failure(RuntimeError("CUDA out of memory\n  more")) == "RuntimeError: CUDA out of memory more"
    assert shape_failure(MemoryError()).startswith("MemoryError")
    assert shape_failure(NotImplementedError("no half on cpu")) is not None
    assert shape_failure(LatprofError("tile too large")) is not None
    assert shape_failure(AttributeError("a bug")) is None and shape_failure(KeyError("x")) is None
    assert len(shape_failure(RuntimeError("x" * 5000))) < 240


def test_4_merge_keeps_a_measured_row_over_a_failed_one(tmp_path):
    measured = make_rows(SPECS[:1])
    failed = measured.assign(flag_failed=True, error="RuntimeError: out of memory", latency_norm_us_p50=np.nan)
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    write(a, failed)
    write(b, measured)
    for order in ([a, b], [b, a]):
        merge.merge_files(order, tmp_path / "m.parquet", force=True)
        assert not tbl.read(tmp_path / "m.parquet").df["flag_failed"].any()


# --- 5, 6: metadata is checked against its declared schema; a missing hash is a failure --------

@pytest.mark.parametrize("meta, words", [
    ({"schema_version": "abc"}, "schema_version 'abc' is not an integer"),
    (["a", "list"], "the latprof metadata is not a JSON object"),
    ({"schema_version": 3, "content_hash": 5}, "content_hash must be text"),
    ({"schema_version": 3, "device": ["gpu"]}, "device must be an object"),
    ({"schema_version": True}, "not an integer"),
    ({"schema_version": 10**40}, "newer than this latprof"),
    ({"schema_version": 3, "reference": {"baseline_us": float("inf")}}, "baseline_us must be a positive finite"),
    ({"schema_version": 3, "hosts": [1, 2]}, "hosts must be a list of text"),
])
def test_5_malformed_metadata_is_named(tmp_path, meta, words):
    path = tmp_path / "t.parquet"
    write(path)
    good = tbl.read(path).meta
    if isinstance(meta, dict):
        meta = {**good, **meta}
    rewrite_meta(path, meta)
    with pytest.raises(LatprofError, match=words.replace("(", r"\(")):
        tbl.read(path)


def test_6_a_removed_content_hash_is_a_failure_and_rehash_is_the_way_to_adopt(tmp_path):
    path = tmp_path / "t.parquet"
    write(path)
    meta = tbl.read(path).meta
    del meta["content_hash"]
    rewrite_meta(path, meta)
    with pytest.raises(LatprofError, match=r"no content_hash; if you trust its rows, .*validate --rehash"):
        tbl.read(path)
    assert "metadata: it has no content_hash" in tbl.validate(tbl.read(path, check_hash=False))


def test_6_upgrade_refuses_edited_rows_and_adopts_a_hashless_old_table(tmp_path):
    path = tmp_path / "t.parquet"
    write(path)
    arrow = pq.read_table(path)
    meta = json.loads(arrow.schema.metadata[tbl.META_KEY])
    v1 = arrow.select(list(upgrade.columns_of(1))).to_pandas()
    meta.update(schema_version=1, content_hash=tbl.content_hash(v1, upgrade.columns_of(1)))
    edited = v1.assign(latency_us_p50=v1["latency_us_p50"] * 2)

    def save(df, m):
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(
            {tbl.META_KEY: json.dumps(m).encode()}), path)
    save(edited, meta)
    with pytest.raises(LatprofError, match="do not match the content hash.*not upgraded"):
        upgrade.upgrade_table(path)
    save(v1, meta)
    assert "from schema version 1 to 3 (3 rows)" in upgrade.upgrade_table(path)
    t = tbl.read(path)
    assert not t.df["flag_failed"].any() and (t.df["error"] == "").all()
    assert (t.df["n_instances"] == 1).all() and t.df["rel_se"].isna().all() and not t.df["flag_contended"].any()
    save(v1, {k: v for k, v in meta.items() if k != "content_hash"})
    assert "no content hash: its rows were adopted" in upgrade.upgrade_table(path)


# --- 8, 9: URLs ----------------------------------------------------------------------------

def test_8_refresh_keeps_the_good_cached_copy_when_the_new_one_fails(tmp_path, monkeypatch, small_table):
    monkeypatch.setenv("LATPROF_CACHE", str(tmp_path / "cache"))
    served = tmp_path / "served.parquet"
    served.write_bytes(small_table.read_bytes())
    path = remote.resolve_table(served.as_uri())
    good = path.read_bytes()
    df = pq.read_table(served).to_pandas()
    df.loc[0, "latency_norm_us_p50"] *= 2      # the server's new copy fails its hash
    pq.write_table(pa.Table.from_pandas(df, schema=tbl.arrow_schema(), preserve_index=False)
                   .replace_schema_metadata(pq.read_table(served).schema.metadata), served)
    with pytest.raises(LatprofError, match=r"failed verification and was not cached; the copy cached before is kept"):
        remote.resolve_table(served.as_uri(), refresh=True)
    assert path.read_bytes() == good
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert len(remote.open_table(served.as_uri()).df) == 6


def test_9_merge_takes_url_inputs(tmp_path, monkeypatch, small_table):
    monkeypatch.setenv("LATPROF_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out.parquet"
    result = merge.merge_files([small_table.as_uri()], out)
    assert result.rows == 6 and tbl.read(out).meta["merged_from"] == [small_table.as_uri()]
    with pytest.raises(LatprofError, match="does not exist; check the URL"):
        merge.merge_files([(tmp_path / "nothere.parquet").as_uri()], tmp_path / "o2.parquet")


# --- 10: a model factory that raises ----------------------------------------------------------

def test_10_a_raising_model_factory_is_one_line(tmp_path):
    from latprof import models

    net = tmp_path / "net.py"
    net.write_text("def make():\n    raise ValueError('no such width:\\n 17')\n")
    with pytest.raises(LatprofError) as err:
        models.load(f"{net}:make")
    assert str(err.value) == (f"{net}:make: calling make() failed: ValueError: no such width: 17; "
                              f"fix the factory in {net}")


# --- also seen: the umask, rows left in a journal ---------------------------------------------

@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_tables_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write(tmp_path / "t.parquet")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "t.parquet").stat().st_mode) == mode


def test_rows_left_in_a_journal_are_counted_and_merged(tmp_path):
    path = tmp_path / "t.parquet"
    write(path)
    journal = path.with_name(path.name + ".journal.jsonl")
    extra = make_rows([ConvSpec(c_in=4, c_out=c, h=8, w=8) for c in (16, 20)]).to_dict("records")
    journal.write_text("".join(json.dumps(r) + "\n" for r in extra) + '{"cut sh')
    assert pending_rows(path) == 2
    result = merge.merge_files([path], path)
    assert result.journal_rows == 2 and len(tbl.read(path).df) == 5 and not journal.exists()
