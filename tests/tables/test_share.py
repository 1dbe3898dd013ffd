"""Sharing tables between labs: the worked example of the README's "Sharing tables" on CPU tables, merge of
shards, hash checks on downloads, the URL cache, diff, requests, compatibility, upgrades."""

from __future__ import annotations

import functools
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from latprof.tables import request as requests
from latprof.spec import Context
from latprof.staircase import diff
from latprof.staircase import lines as need
from latprof.tables import remote, upgrade
from latprof.tables import io as tbl
from latprof.errors import LatprofError
from latprof.spec import KEY_FIELDS, ConvSpec
from synthetic import META, row, staircase_us

NET = ("import torch.nn as nn\n"
       "def build():\n"
       "    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 1))\n"
       "    m.latprof_input_size = (3, 10, 10)\n"
       "    return m\n")
#: Dense lines of NET: conv1 c_out 1..8 and c_in 1..3 (one shared end), conv2 c_in 1..8 (conv2 is
#: the classifier: its outputs are never pruned, so it has no c_out line).
NET_DENSE = 8 + 3 + 8 - 1
QUICK = ("--quick", "--no-progress", "--device", "cpu")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A private cache for remote tables, and no proxy between the tests and 127.0.0.1."""
    monkeypatch.setenv("LATPROF_CACHE", str(tmp_path / "cache"))
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "cache"


def keys(path) -> set[tuple]:
    return tbl.read(path).keys()


def spec_keys(specs) -> set[tuple]:
    return {tuple(s.to_row()[k] for k in KEY_FIELDS) for s in specs}


def cached_files(cache_dir) -> list:
    return sorted((cache_dir / "tables").glob("*")) if (cache_dir / "tables").exists() else []


# --- the worked example ---------------------------------------------------------------------

@pytest.mark.slow
def test_worked_example_between_two_labs(cli, tmp_path, cache):
    (tmp_path / "net.py").write_text(NET)
    lab_a, lab_b = tmp_path / "lab_a", tmp_path / "lab_b"
    # lab A measured a coarse table of the model (every 2nd count): lab B's starting point
    r = cli("sweep", "--model", "net.py:build", "--every", "2", *QUICK, "--out", lab_a / "cpu.parquet")
    assert r.exit_code == 0, r.output
    # lab B fetches it by URL (cached, hash-checked) into its own tables folder
    r = cli("tables", "fetch", (lab_a / "cpu.parquet").as_uri(), "--out", lab_b / "cpu.parquet")
    assert r.exit_code == 0, r.output
    assert "copied" in r.output and len(cached_files(cache)) == 1
    assert f"hash     {tbl.read(lab_a / 'cpu.parquet').meta['content_hash']} (verified)" in r.output
    before = keys(lab_b / "cpu.parquet")
    assert 0 < len(before) < NET_DENSE
    # lab B asks for what its table lacks
    r = cli("tables", "request", "--model", "net.py:build", "--batch", "1", "--table", lab_b / "cpu.parquet",
            "--out", lab_b / "need.json")
    assert r.exit_code == 0, r.output
    assert f"{NET_DENSE - len(before)} shapes of net.py:build (batch 1 float32 nchw cpu) the table lacks" in r.output
    asked = requests.load_request(lab_b / "need.json")
    assert asked.meta["device"]["slug"] == tbl.read(lab_b / "cpu.parquet").device["slug"]
    assert not spec_keys(asked.specs) & before
    # lab A measures exactly those shapes, nothing else
    r = cli("sweep", "--request", lab_b / "need.json", *QUICK, "--out", lab_a / "part.parquet")
    assert r.exit_code == 0, r.output
    assert f"{len(asked.specs)} measured now" in r.output
    part = keys(lab_a / "part.parquet")
    assert part == spec_keys(asked.specs)
    # lab B merges the part into its table: exactly the union, old rows unchanged
    old = tbl.read(lab_b / "cpu.parquet").df
    r = cli("tables", "merge", lab_b / "cpu.parquet", lab_b / "cpu.parquet", lab_a / "part.parquet")
    assert r.exit_code == 0, r.output
    after = tbl.read(lab_b / "cpu.parquet")
    assert after.keys() == before | part and len(after.df) == NET_DENSE
    kept = after.df.merge(old[list(KEY_FIELDS)], on=list(KEY_FIELDS))
    pd.testing.assert_frame_equal(kept.reset_index(drop=True), old.reset_index(drop=True), check_dtype=False)
    # nothing is missing any more; the table validates; steps read it
    r = cli("tables", "request", "--model", "net.py:build", "--batch", "1", "--table", lab_b / "cpu.parquet",
            "--out", lab_b / "none.json")
    assert "0 shapes" in r.output and requests.read_request(lab_b / "none.json") == []
    assert cli("tables", "validate", lab_b / "cpu.parquet").exit_code == 0
    r = cli("steps", "net.py:build", "--table", lab_b / "cpu.parquet")
    assert r.exit_code == 0, r.output
    # the diff of the two states: coverage only
    r = cli("tables", "diff", lab_a / "cpu.parquet", lab_b / "cpu.parquet")
    assert r.exit_code == 0, r.output
    assert f"{len(before)} shapes in both, 0 only in A, {len(part)} only in B" in r.output
    assert "median 1.000" in r.output


def test_request_without_a_table_asks_for_every_dense_shape(cli, tmp_path):
    (tmp_path / "net.py").write_text(NET)
    r = cli("tables", "request", "--model", "net.py:build", "--batch", "4", "--out", "all.json")
    assert r.exit_code == 0, r.output
    req = requests.load_request(tmp_path / "all.json")
    assert req.meta["device"] is None and req.meta["latprof_request"] == 1
    assert len(req.specs) == NET_DENSE
    assert {s.backend for s in req.specs} == {"cudnn"} and {s.batch for s in req.specs} == {4}
    # a cudnn request cannot run on the CPU: said before any work
    r = cli("sweep", "--request", "all.json", *QUICK, "--out", "x.parquet")
    assert r.exit_code == 1 and "needs a CUDA device" in r.output


def test_missing_lines_only_skips_lines_the_table_can_fit(tmp_path):
    (tmp_path / "net.py").write_text(NET)
    model = str(tmp_path / "net.py") + ":build"
    # both ends of conv1's two lines; of conv2's c_in line only its full count (conv2's c_out = 1 is on no line)
    conv1, conv2 = ConvSpec(c_in=3, c_out=8, h=10, w=10), ConvSpec(c_in=8, c_out=6, h=10, w=10, kernel_h=1,
                                                                   kernel_w=1, pad_h=0, pad_w=0)
    held = [conv1, conv1.replace(c_out=1), conv1.replace(c_in=1), conv2, conv2.replace(c_out=1)]
    t = tbl.LatencyTable(pd.DataFrame([row(s, staircase_us(s)) for s in held]), dict(META))
    dense = need.missing_specs(t, model, Context())
    assert len(dense) == NET_DENSE - 4
    lines = need.missing_specs(t, model, Context(), missing_lines_only=True)
    assert lines == [conv2.replace(c_in=c) for c in range(1, 8)]


# --- merge --------------------------------------------------------------------------------

def test_merge_of_shards_reproduces_the_unsharded_table(cli, tmp_path, small_table):
    whole = tbl.read(small_table)
    df = whole.df
    paths = []
    for i in range(3):
        part = df.iloc[i::3].copy()
        if i == 2:  # a second, noisier and different measurement of a key of shard 0: pooling drops it
            dup = df.iloc[[0]].copy()
            dup["rel_iqr_norm"] = df["rel_iqr_norm"].max() + 1.0
            dup["flag_noisy"] = True
            for col in ("latency_norm_us_p50", "latency_us_p50"):
                dup[col] *= 1.5
            part = pd.concat([part, dup])
        paths.append(tmp_path / f"shard{i}.parquet")
        tbl.write(paths[-1], tbl.LatencyTable(part, dict(whole.meta)))
    r = cli("tables", "merge", tmp_path / "merged.parquet", *paths)
    assert r.exit_code == 0, r.output
    assert "1 keys in several inputs, 1 of them disagree" in r.output
    merged = tbl.read(tmp_path / "merged.parquet")
    pd.testing.assert_frame_equal(merged.df, df)
    assert merged.meta["content_hash"] == whole.meta["content_hash"]


# --- URLs, the cache and hash checks ------------------------------------------------------

def _tampered(src, dst):
    """The rows changed, the metadata (and its content hash) left as written."""
    arrow = pq.read_table(src)
    df = arrow.to_pandas()
    df.loc[0, "latency_norm_us_p50"] *= 0.5
    pq.write_table(pa.Table.from_pandas(df, schema=tbl.arrow_schema(), preserve_index=False)
                   .replace_schema_metadata(arrow.schema.metadata), dst)
    return dst


def test_tampered_or_corrupted_downloads_fail_and_leave_no_cached_copy(cli, tmp_path, small_table, cache):
    bad = _tampered(small_table, tmp_path / "tampered.parquet")
    with pytest.raises(LatprofError, match="content hash"):
        remote.open_table(bad.as_uri())
    assert cached_files(cache) == []
    r = cli("tables", "fetch", bad.as_uri())
    assert r.exit_code == 1 and "failed verification and was not cached" in r.output and "Traceback" not in r.output
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(small_table.read_bytes()[:-100])
    with pytest.raises(LatprofError, match="truncated"):
        remote.resolve_table(cut.as_uri())
    assert cached_files(cache) == []
    # a good download, then its cached copy damaged: refused, removed, fetched again next time
    good = small_table.as_uri()
    path = remote.resolve_table(good)
    assert path.parent == cache / "tables" and path.name.endswith("-small.parquet")
    _tampered(small_table, path)
    with pytest.raises(LatprofError, match="content hash"):
        remote.open_table(good)
    assert not path.exists()
    assert remote.open_table(good).meta["content_hash"] == tbl.read(small_table).meta["content_hash"]


def test_missing_url_and_unknown_protocol(tmp_path, cache):
    with pytest.raises(LatprofError, match="does not exist"):
        remote.resolve_table((tmp_path / "nothere.parquet").as_uri())
    with pytest.raises(LatprofError, match="nosuchproto"):
        remote.resolve_table("nosuchproto://x/t.parquet")
    assert cached_files(cache) == []
    assert remote.resolve_table("tables/local.parquet") == remote.Path("tables/local.parquet")


@pytest.fixture
def http_server(small_table):
    """A local HTTP server for the folder of `small_table`, counting GET requests."""
    hits = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(small_table.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def test_http_table_is_downloaded_once_then_read_from_the_cache(cli, http_server, small_table, monkeypatch):
    base, hits = http_server
    monkeypatch.setattr(remote, "_have_aiohttp", lambda: False)  # the urllib path, whatever is installed
    url = f"{base}/{small_table.name}"
    first = remote.open_table(url)
    assert hits == [f"/{small_table.name}"]
    assert first.meta["content_hash"] == tbl.read(small_table).meta["content_hash"]
    remote.open_table(url)
    r = cli("tables", "diff", url, small_table)
    assert r.exit_code == 0 and "6 shapes in both, 0 only in A, 0 only in B" in r.output
    assert len(hits) == 1  # the second and third reads came from the cache
    remote.open_table(url, refresh=True)
    assert len(hits) == 2
    with pytest.raises(LatprofError, match="HTTP 404"):
        remote.open_table(f"{base}/nothere.parquet")


# --- diff ---------------------------------------------------------------------------------

C_OUT_LINE = ConvSpec(c_in=32, c_out=64, h=16, w=16)
C_IN_LINE = ConvSpec(c_in=48, c_out=32, h=16, w=16)


def _pair(tmp_path, backend_b="cpu"):
    """A: a block-16 staircase on a c_out and a c_in line, plus one shape only A holds.
    B: 1.5x slower, the c_out line's edge at 33 moved to 37, one shape only B holds."""
    specs = ([C_OUT_LINE.replace(c_out=c) for c in range(1, 65)] + [C_IN_LINE.replace(c_in=c) for c in range(1, 49)])
    specs = list(dict.fromkeys(specs))

    def slow(s):
        moved = s.c_in == 32 and 33 <= s.c_out <= 36 and s.h == 16
        return 1.5 * staircase_us(s.replace(c_out=32) if moved else s)

    a = [row(s, staircase_us(s)) for s in specs + [ConvSpec(c_in=4, c_out=4, h=8, w=8)]]
    b = [row(s.replace(backend=backend_b), slow(s)) for s in specs + [ConvSpec(c_in=4, c_out=4, h=4, w=4)]]
    meta_b = {**META, "device": {"kind": "cuda", "name": "NVIDIA TITAN RTX", "slug": "titanrtx"},
              "versions": {"torch": "2.2.0", "cuda": "12.1"}}
    pa_, pb = tmp_path / "a.parquet", tmp_path / "b.parquet"
    tbl.write(pa_, tbl.LatencyTable(pd.DataFrame(a), {**META, "versions": {"torch": "2.1.0", "cuda": "12.1"}}))
    tbl.write(pb, tbl.LatencyTable(pd.DataFrame(b), meta_b))
    return pa_, pb, len(specs)


def test_diff_reports_coverage_ratios_and_the_moved_edge(cli, tmp_path):
    pa_, pb, n = _pair(tmp_path)
    d = diff.diff_tables(tbl.read(pa_), tbl.read(pb))
    assert (len(d.common), len(d.only_a), len(d.only_b)) == (n, 1, 1)
    assert d.ratio_quantile(0.5) == pytest.approx(1.5)
    assert d.ratio_quantile(0.1) == pytest.approx(1.5) and d.ratio_quantile(0.9) == pytest.approx(1.5)
    assert d.ratio_quantile(0.0) < 1.5  # the four counts whose edge moved
    by_axis = {line.line.axis: line for line in d.lines}
    assert set(by_axis) == {"c_out", "c_in"}
    assert by_axis["c_out"].fit_a.edges == (17, 33, 49) and by_axis["c_out"].fit_b.edges == (17, 37, 49)
    assert (by_axis["c_out"].only_a, by_axis["c_out"].only_b) == ((33,), (37,))
    assert not by_axis["c_in"].moved and by_axis["c_in"].fit_a.edges == (17, 33)
    assert d.versions == {"torch": ("2.1.0", "2.2.0")}
    r = cli("tables", "diff", pa_, pb, "--plot", tmp_path / "diff.png")
    assert r.exit_code == 0, r.output
    assert f"{n} shapes in both, 1 only in A, 1 only in B" in r.output
    assert "edges only in A [33], only in B [37]" in r.output and "1 with moved edges" in r.output
    assert "software   torch: A 2.1.0, B 2.2.0" in r.output
    assert (tmp_path / "diff.png").read_bytes()[:4] == b"\x89PNG"


def test_diff_across_backends_needs_ignore(cli, tmp_path):
    pa_, pb, n = _pair(tmp_path, backend_b="cudnn")
    r = cli("tables", "diff", pa_, pb)
    assert r.exit_code == 0 and "0 shapes in both" in r.output and "--ignore backend" in r.output
    r = cli("tables", "diff", pa_, pb, "--ignore", "backend")
    assert f"{n} shapes in both" in r.output and "median 1.500" in r.output
    r = cli("tables", "diff", pa_, pb, "--ignore", "backend", "--no-edges")
    assert "median 1.500" in r.output and "not compared" in r.output
    d = diff.diff_tables(tbl.read(pa_), tbl.read(pb), ignore=("backend",))
    assert all(line.line.base.backend == "cpu" for line in d.lines)  # lines are labelled with A's fields
    with pytest.raises(LatprofError, match="cannot ignore c_out"):
        diff.diff_tables(tbl.read(pa_), tbl.read(pb), ignore=("c_out",))


# --- request files ------------------------------------------------------------------------

def test_request_round_trip_and_bad_files(cli, tmp_path):
    specs = [ConvSpec(c_in=4, c_out=c, h=8, w=8) for c in (1, 2, 3)]
    requests.write_request(tmp_path / "r.json", specs, {"device": None, "model": "m"})
    assert requests.read_request(tmp_path / "r.json") == specs
    good = json.loads((tmp_path / "r.json").read_text())
    base = good["specs"][2]  # c_in 4 -> c_out 3
    v2 = {**{k: v for k, v in good.items() if k != "specs"}, "latprof_request": 2}  # specs may be left out
    cases = {
        "not json {": "not valid JSON",
        json.dumps([1, 2]): "not a latprof request",
        json.dumps({**good, "latprof_request": 3}): "newer than this latprof",
        json.dumps({**good, "lines": []}): "needs request format 2",
        json.dumps({**v2, "lines": 5}): "must be a list of lines",
        json.dumps({**v2, "lines": [{"base": base, "axis": "h", "values": [1, 3]}]}): "axis must be",
        json.dumps({**v2, "lines": [{"base": base, "axis": "c_out", "values": [1, 2]}]}):
            "must be the base shape's own count",
        json.dumps({**v2, "lines": [{"base": base, "axis": "c_out", "values": [3, 1]}]}): "ascending distinct",
        json.dumps({**v2, "lines": [{"base": base, "axis": "c", "values": [1, 3]}]}): "axis c is for depthwise",
        json.dumps({**v2, "lines": [{"base": {**base, "c_in": 4, "c_out": 4, "groups": 2}, "axis": "c_out",
                                     "values": [1, 4]}]}): "line #1: .*divisible",
        json.dumps({**v2, "lines": [{"base": {**base, "c_out": 0}, "axis": "c_out", "values": [1, 3]}]}):
            "line #1 base",
        json.dumps({**good, "latprof_request": "1"}): "positive integer",
        json.dumps({**good, "specs": {"a": 1}}): "must be a list",
        json.dumps({**good, "specs": [{**good["specs"][0], "colour": 1}]}): "unknown fields colour",
        json.dumps({**good, "specs": [{"c_in": 4, "h": 8, "w": 8}]}): "lacks c_out",
        json.dumps({**good, "specs": [{**good["specs"][0], "c_out": "4"}]}): "c_out must be an integer",
        json.dumps({**good, "specs": [{**good["specs"][0], "c_out": 0}]}): "c_out must be >= 1",
    }
    for text, words in cases.items():
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(LatprofError, match=words):
            requests.read_request(tmp_path / "bad.json")
    with pytest.raises(LatprofError, match="does not exist"):
        requests.read_request(tmp_path / "nothere.json")
    r = cli("sweep", "--request", tmp_path / "bad.json", *QUICK)
    assert r.exit_code == 1 and "c_out must be >= 1" in r.output and "Traceback" not in r.output
    r = cli("sweep", "--request", tmp_path / "r.json", "--model", "resnet20_cifar10", *QUICK)
    assert r.exit_code == 1 and "give one of --model" in r.output
    r = cli("sweep", "--request", tmp_path / "r.json", "--dense", *QUICK)
    assert r.exit_code == 1 and "--dense and --every apply to model sweeps" in r.output
    other = {"kind": "cuda", "name": "NVIDIA TITAN RTX", "slug": "titanrtx"}
    requests.write_request(tmp_path / "gpu.json", specs, {"device": other})
    r = cli("sweep", "--request", tmp_path / "gpu.json", *QUICK)
    assert r.exit_code == 1 and "asks for measurements of 'NVIDIA TITAN RTX'" in r.output


@pytest.mark.slow
def test_sparse_request_is_sampled_where_it_is_measured(cli, tmp_path):
    (tmp_path / "wide.py").write_text(
        "import torch.nn as nn\n"
        "def build():\n"
        "    m = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 48, 1))\n"
        "    m.latprof_input_size = (3, 6, 6)\n"
        "    return m\n")
    # the second conv is the classifier (its outputs are never pruned): its c_in line only
    model, dense = "wide.py:build", 64 + 3 + 64 - 1
    r = cli("tables", "request", "--model", model, "--batch", "1", "--backend", "cpu", "--sparse", "--out", "s.json")
    assert r.exit_code == 0 and "3 lines" in r.output, r.output
    req = requests.load_request(tmp_path / "s.json")
    assert req.meta["latprof_request"] == 2 and req.specs == []
    assert sorted((line.axis, line.full) for line in req.lines) == [("c_in", 3), ("c_in", 64), ("c_out", 64)]
    r = cli("sweep", "--request", "s.json", *QUICK, "--out", "part.parquet")
    assert r.exit_code == 0, r.output
    part = tbl.read(tmp_path / "part.parquet")
    assert len(part.df) < dense  # sampled, not every count
    assert need.unfittable_lines(part, model, Context()) == []  # and every line can be fitted
    r = cli("tables", "request", "--model", model, "--batch", "1", "--table", "part.parquet", "--sparse",
            "--out", "none.json")
    assert r.exit_code == 0 and "0 lines" in r.output, r.output


# --- compatibility and upgrades -----------------------------------------------------------

def test_context_names_what_the_table_holds_and_versions_warn(tmp_path):
    spec = ConvSpec(c_in=4, c_out=4, h=8, w=8)
    t = tbl.LatencyTable(pd.DataFrame([row(spec, 10.0)]), {**META, "versions": {"torch": "0.1", "cuda": None}})
    with pytest.raises(LatprofError, match=r"no rows for \{'batch': 8, 'dtype': 'float16'\}; it holds .*'batch': 1"):
        tbl.context(t, batch=8, dtype="float16")
    assert tbl.context(t, batch=1, dtype="float32").batch == 1
    warnings = tbl.version_warnings(t.meta, {"torch": "2.0"})
    assert any(w.startswith("torch: the table was measured with 0.1") for w in warnings)
    same = {"torch": "0.1", "cuda": None, "cudnn": None, "triton": None}
    assert tbl.version_warnings(t.meta, same) == []
    assert "cuda" in tbl.version_warnings(t.meta, {**same, "cuda": "12.4"})[0]
    assert "no software versions" in tbl.version_warnings({}, same)[0]


def _as_version(path, version, rename=None):
    """Rewrite a table file as if written under another schema version (optionally renaming columns)."""
    arrow = pq.read_table(path)
    meta = json.loads(arrow.schema.metadata[tbl.META_KEY])
    meta["schema_version"] = version
    df = arrow.to_pandas().rename(columns=rename or {})
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(
        {tbl.META_KEY: json.dumps(meta).encode()}), path)
    return path


def test_upgrade_applies_registered_steps_in_order(cli, tmp_path, monkeypatch):
    spec = ConvSpec(c_in=4, c_out=4, h=8, w=8)
    original = tbl.LatencyTable(pd.DataFrame([row(spec.replace(c_out=c), 10.0 + c) for c in (1, 2, 4)]), dict(META))
    path = tmp_path / "t.parquet"
    tbl.write(path, original)
    _as_version(path, 0, rename={"latency_norm_us_p50": "latency_normalised_us_p50"})
    with pytest.raises(LatprofError, match="tables upgrade"):
        tbl.read(path)
    r = cli("tables", "upgrade", path)
    assert r.exit_code == 1 and "no upgrade from schema version 0 to 1" in r.output

    calls = []

    def v0_to_v1(df, meta):
        calls.append(0)
        return df.rename(columns={"latency_normalised_us_p50": "latency_norm_us_p50"}), {**meta, "note": "was v0"}

    def v1_to_v2(df, meta):
        calls.append(1)
        return df, meta

    monkeypatch.setitem(upgrade.UPGRADES, 0, v0_to_v1)
    monkeypatch.setattr(tbl, "SCHEMA_VERSION", 1)
    r = cli("tables", "upgrade", path)
    assert r.exit_code == 0 and "upgraded from schema version 0 to 1 (3 rows)" in r.output
    t = tbl.read(path)
    pd.testing.assert_frame_equal(t.df, tbl.conform(original.df))
    assert t.meta["note"] == "was v0" and t.meta["upgraded_from"][0]["schema_version"] == 0
    data = path.read_bytes()
    r = cli("tables", "upgrade", path)
    assert "already at schema version 1; left untouched" in r.output and path.read_bytes() == data

    # two steps, in order, to a (pretend) version 3
    _as_version(path, 0, rename={"latency_norm_us_p50": "latency_normalised_us_p50"})
    calls.clear()
    monkeypatch.setitem(upgrade.UPGRADES, 1, v1_to_v2)
    monkeypatch.setitem(upgrade.UPGRADES, 2, lambda df, meta: (calls.append(2), (df, meta))[1])
    monkeypatch.setattr(tbl, "SCHEMA_VERSION", 3)
    assert "from schema version 0 to 3" in upgrade.upgrade_table(path)
    assert calls == [0, 1, 2] and tbl.read(path).meta["schema_version"] == 3
    monkeypatch.setattr(tbl, "SCHEMA_VERSION", 2)
    r = cli("tables", "upgrade", path)
    assert r.exit_code == 1 and "newer than this latprof" in r.output
