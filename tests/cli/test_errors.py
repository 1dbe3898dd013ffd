"""Nothing lost, nothing raw (issue 15), on the command line: each numbered case of the issue is
a clean one-line error (exit 1, no traceback, no file changed) or correct behaviour. The library
side is in tests/tables/test_reliability.py."""

import errno
import json
import os
from pathlib import Path

import click
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from latprof.cli.app import LatprofGroup, check_writable
from latprof.errors import LatprofError
from latprof.spec import ConvSpec
from latprof.tables import io as tbl
from latprof.tables import request as requests
from latprof.tables.store import TableStore
from synthetic import META, model_table, row


def one_error_line(r, *words) -> str:
    """The result is exit 1 with exactly one line of output, `error: ...`, holding `words`."""
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and len(lines) == 1 and lines[0].startswith("error: "), r.output
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def state(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def small(path, c_outs=(4, 8, 12), meta=None) -> Path:
    spec = ConvSpec(c_in=4, c_out=4, h=8, w=8)
    tbl.write(path, tbl.LatencyTable(pd.DataFrame([row(spec.replace(c_out=c), 10.0 + c) for c in c_outs]),
                                     dict(meta or META)))
    return path


# --- 1, 2: merge ------------------------------------------------------------------------------

def test_1_merge_into_an_existing_table_that_is_not_an_input_is_refused(cli, tmp_path):
    mine, part = small(tmp_path / "mine.parquet", range(1, 41)), small(tmp_path / "part.parquet", (48,))
    before = state(tmp_path)
    one_error_line(cli("tables", "merge", mine, part), "mine.parquet exists and is not among the inputs",
                   f"latprof tables merge {mine} {mine} {part}", "--force")
    assert state(tmp_path) == before
    r = cli("tables", "merge", mine, mine, part)
    assert r.exit_code == 0 and f"{mine}: 41 rows from 2 tables" in r.output
    r = cli("tables", "merge", mine, part, "--force")
    assert r.exit_code == 0 and "its 41 rows were not an input" in r.output and len(tbl.read(mine).df) == 1


def test_2_merge_into_a_table_a_sweep_is_writing_is_refused(cli, tmp_path):
    out, part = small(tmp_path / "t.parquet"), small(tmp_path / "part.parquet", (48,))
    with TableStore(out, META):
        before = state(tmp_path)
        one_error_line(cli("tables", "merge", out, out, part), "another latprof process is writing")
        assert state(tmp_path) == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".lock")]


# --- 3: write failures --------------------------------------------------------------------------

OUTPUTS = {  # a command with its output path under an existing *file*: refused before any work
    "sweep": ["sweep", "--cin", "4", "--cout", "4", "--hw", "6", "--quick", "--no-progress", "--out", "{bad}/t.parquet"],
    "merge": ["tables", "merge", "{bad}/t.parquet", "{table}"],
    "request": ["tables", "request", "--model", "small_cifar10", "--batch", "1", "--out", "{bad}/r.json"],
    "fetch": ["tables", "fetch", "{table}", "--out", "{bad}/t.parquet"],
    "diff --plot": ["tables", "diff", "{table}", "{table}", "--plot", "{bad}/d.png"],
    "prune --out": ["prune", "small_cifar10", "--table", "{table}", "--target-ratio", "0.5", "--out", "{bad}/p"],
    "prune --json": ["prune", "small_cifar10", "--table", "{table}", "--target-ratio", "0.5", "--json", "{bad}/r.json"],
    "prune --plot": ["prune", "small_cifar10", "--table", "{table}", "--target-ratio", "0.5", "--plot", "{bad}/p.png"],
    "steps --plot": ["steps", "small_cifar10", "--table", "{table}", "--plot", "{bad}/plots"],
    "train --out": ["train", "small_cifar10", "--data", "digits", "--out", "{bad}/e.pt"],   # 11: before training
}


@pytest.mark.parametrize("name", list(OUTPUTS))
def test_3_an_output_under_a_file_is_refused_before_any_work(cli, tmp_path, name):
    (tmp_path / "afile").write_text("not a folder")
    table = small(tmp_path / "t.parquet")
    args = [a.format(bad=tmp_path / "afile", table=table) for a in OUTPUTS[name]]
    before = state(tmp_path)
    one_error_line(cli(*args), f"cannot write {tmp_path / 'afile'}", "is a file, not a folder")
    assert state(tmp_path) == before


def test_3_latprof_tables_pointing_at_a_file_is_one_line(cli, tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("LATPROF_TABLES", str(tmp_path / "afile"))
    one_error_line(cli("sweep", "--cin", "4", "--cout", "4", "--hw", "6", "--quick", "--no-progress"),
                   f"cannot lock {tmp_path / 'afile'}")


def test_3_an_unwritable_cache_is_one_line(cli, tmp_path, monkeypatch):
    table = small(tmp_path / "t.parquet")
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("LATPROF_CACHE", str(tmp_path / "afile" / "cache"))
    one_error_line(cli("tables", "info", table.as_uri()), "cannot write", "afile", "not a folder")


@pytest.mark.parametrize("code, words", [(errno.EROFS, "the file system is read-only"),
                                         (errno.EACCES, "permission denied"),
                                         (errno.ENOSPC, "no space left on the device")])
def test_3_read_only_unwritable_or_full_leave_the_table_intact(cli, tmp_path, monkeypatch, code, words):
    out, part = small(tmp_path / "t.parquet"), small(tmp_path / "part.parquet", (48,))
    before = state(tmp_path)

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(os, "fsync" if code == errno.ENOSPC else "replace", refuse)
    one_error_line(cli("tables", "merge", out, out, part), f"cannot write {out}: {words}")
    assert state(tmp_path) == before


def test_3_os_errors_outside_the_tables_are_one_line_too(tmp_path):
    """The group's boundary: an OSError from any command, with the operation and the path."""
    group = LatprofGroup()

    @group.command()
    @click.argument("path")
    def make(path):
        Path(path).mkdir()

    (tmp_path / "afile").write_text("")
    r = CliRunner().invoke(group, ["make", str(tmp_path / "afile" / "sub")])
    one_error_line(r, f"cannot create the folder {tmp_path / 'afile' / 'sub'}: a part of the path is a file")


def test_3_check_writable(tmp_path, monkeypatch):
    check_writable(tmp_path / "new" / "deeper" / "t.parquet")   # folders that would be made: fine
    assert list(tmp_path.iterdir()) == []                         # and nothing made by the check
    with pytest.raises(LatprofError, match="it is a folder"):
        check_writable(tmp_path)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".latprof-probe-x"))
    monkeypatch.setattr("tempfile.TemporaryFile", read_only)
    with pytest.raises(LatprofError) as err:
        check_writable(tmp_path / "t.parquet", what="--out")
    assert str(err.value) == (f"cannot write {tmp_path / 't.parquet'} (--out): the file system is read-only; "
                              "choose a writable place")


# --- 4: a shape that cannot run ---------------------------------------------------------------

@pytest.mark.slow
def test_4_a_request_with_one_huge_shape_still_measures_the_others(cli, tmp_path):
    shapes = [ConvSpec(c_in=4, c_out=c, h=6, w=6) for c in (2, 4, 6)] + [ConvSpec(c_in=64, c_out=64, h=40000,
                                                                                   w=40000)]
    req = requests.write_request(tmp_path / "r.json", shapes, {"device": None})
    r = cli("sweep", "--request", req, "--quick", "--no-progress", "--out", tmp_path / "t.parquet")
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert "failed   64->64 k3/s1 @40000x40000" in r.output and "can't allocate memory" in r.output
    df = tbl.read(tmp_path / "t.parquet").df
    assert len(df) == 4 and df["flag_failed"].sum() == 1 and (df[~df["flag_failed"]]["latency_us_p50"] > 0).all()
    info = cli("tables", "info", tmp_path / "t.parquet")
    assert "1 failed (25.0%)" in info.output and "RuntimeError" in info.output


# --- 5, 6: metadata ---------------------------------------------------------------------------

def _set_meta(path, meta):
    arrow = pq.read_table(path)
    pq.write_table(arrow.replace_schema_metadata({tbl.META_KEY: json.dumps(meta).encode()}), path)


@pytest.mark.parametrize("command", ["validate", "info"])
@pytest.mark.parametrize("change, words", [
    (lambda m: {**m, "schema_version": "abc"}, "schema_version 'abc' is not an integer"),
    (lambda m: [m], "not a JSON object"),
    (lambda m: {**m, "device": ["x"]}, "device must be an object"),
    (lambda m: {**m, "versions": "2.5"}, "versions must be an object"),
])
def test_5_malformed_metadata_is_one_line(cli, tmp_path, command, change, words):
    path = small(tmp_path / "t.parquet")
    _set_meta(path, change(tbl.read(path).meta))
    before = state(tmp_path)
    one_error_line(cli("tables", command, path), words)
    assert state(tmp_path) == before


def test_6_an_edited_table_without_its_hash_fails_validation_until_adopted(cli, tmp_path):
    path = small(tmp_path / "t.parquet")
    arrow = pq.read_table(path)
    meta = json.loads(arrow.schema.metadata[tbl.META_KEY])
    del meta["content_hash"]
    df = arrow.to_pandas()
    df["latency_norm_us_p50"] *= 0.5
    pq.write_table(pa.Table.from_pandas(df, schema=tbl.arrow_schema(), preserve_index=False)
                   .replace_schema_metadata({tbl.META_KEY: json.dumps(meta).encode()}), path)
    before = state(tmp_path)
    one_error_line(cli("tables", "validate", path), "no content_hash", f"latprof tables validate --rehash {path}")
    assert state(tmp_path) == before
    r = cli("tables", "validate", "--rehash", path)
    assert r.exit_code == 0 and "had no content hash; adopted as it is (3 rows" in r.output and "ok (3 rows" in r.output
    assert tbl.read(path).meta["rehashed_from"] is None


# --- 7: prune with a table missing whole lines -------------------------------------------------

def test_7_prune_writes_a_request_for_missing_lines_with_a_command_that_runs(cli, tmp_path):
    table = model_table(tmp_path / "short.parquet", "small_cifar10", every=4, drop_lines=3)
    r = cli("prune", "small_cifar10", "--table", table, "--target-ratio", "0.8", "--no-measure",
            "--out", tmp_path / "out")
    assert r.exit_code == 1 and "Traceback" not in r.output
    req = requests.load_request(tmp_path / "out" / "request.json")
    assert [(line.base.c_in, line.base.c_out, line.axis) for line in req.lines] == [(64, 64, "c_out")]
    assert "1 whole line(s) (sampled sparsely)" in r.output
    part = tmp_path / "out" / "request.part.parquet"
    assert (f"latprof sweep --device cpu --request {tmp_path / 'out' / 'request.json'} --out {part}" in r.output
            and f"latprof tables merge {table} {table} {part}" in r.output)
    assert "..." not in r.output.replace("... and", "") and "TABLE" not in r.output and "MODEL" not in r.output


# --- 8, 9: URLs -------------------------------------------------------------------------------

def test_8_fetch_refresh_keeps_the_good_cached_copy(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("LATPROF_CACHE", str(tmp_path / "cache"))
    served = small(tmp_path / "served.parquet")
    assert cli("tables", "fetch", served.as_uri()).exit_code == 0
    cached = state(tmp_path / "cache")
    arrow = pq.read_table(served)
    df = arrow.to_pandas()
    df["latency_norm_us_p50"] *= 3
    pq.write_table(pa.Table.from_pandas(df, schema=tbl.arrow_schema(), preserve_index=False)
                   .replace_schema_metadata(arrow.schema.metadata), served)
    one_error_line(cli("tables", "fetch", served.as_uri(), "--refresh"), "failed verification and was not cached",
                   "the copy cached before is kept")
    assert state(tmp_path / "cache") == cached


def test_9_merge_reads_url_inputs(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("LATPROF_CACHE", str(tmp_path / "cache"))
    a, b = small(tmp_path / "a.parquet"), small(tmp_path / "b.parquet", (48,))
    r = cli("tables", "merge", tmp_path / "m.parquet", a.as_uri(), b.as_uri())
    assert r.exit_code == 0 and "4 rows from 2 tables" in r.output
    gone = (tmp_path / "gone.parquet").as_uri()
    line = one_error_line(cli("tables", "merge", tmp_path / "n.parquet", gone), f"{gone} does not exist")
    assert "file:/" + str(tmp_path) not in line and "sweep --out" not in line


# --- 10: a model factory that raises ------------------------------------------------------------

@pytest.mark.parametrize("command", [["sweep", "--model", "{net}:make", "--quick", "--no-progress"],
                                     ["prune", "{net}:make", "--table", "{table}", "--target-ratio", "0.5"]])
def test_10_a_raising_model_factory_is_one_line(cli, tmp_path, command):
    net = tmp_path / "net.py"
    net.write_text("def make():\n    raise RuntimeError('width 17 is not supported')\n")
    table = small(tmp_path / "t.parquet")
    one_error_line(cli(*[a.format(net=net, table=table) for a in command]),
                   f"{net}:make: calling make() failed: RuntimeError: width 17 is not supported")


# --- also seen: journal rows are reported ---------------------------------------------------------

@pytest.mark.parametrize("command", ["info", "validate"])
def test_rows_waiting_in_a_journal_are_reported(cli, tmp_path, command):
    path = small(tmp_path / "t.parquet")
    extra = [row(ConvSpec(c_in=4, c_out=c, h=8, w=8), 30.0) for c in (16, 20)]
    path.with_name(path.name + ".journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in extra))
    r = cli("tables", command, path)
    assert r.exit_code == 0 and "warning: 2 rows in" in r.output and f"tables merge {path} {path}" in r.output


def test_4_info_counts_failed_rows_and_says_why(cli, tmp_path):
    spec = ConvSpec(c_in=4, c_out=4, h=8, w=8)
    rows = [row(spec.replace(c_out=c), 10.0 + c) for c in (1, 2, 3)]
    rows.append({**row(spec.replace(c_out=4096), float("nan")), "flag_failed": True, "n_samples": 0,
                 "error": "RuntimeError: CUDA out of memory. Tried to allocate 20.00 GiB"})
    path = tmp_path / "t.parquet"
    tbl.write(path, tbl.LatencyTable(pd.DataFrame(rows), dict(META)))
    r = cli("tables", "info", path)
    assert r.exit_code == 0 and "1 failed (25.0%)" in r.output
    assert "failed   1 x RuntimeError: CUDA out of memory. Tried to allocate 20.00 GiB" in r.output
    v = cli("tables", "validate", path)
    assert v.exit_code == 0 and "ok (4 rows, 1 flagged failed, schema version 3)" in v.output
