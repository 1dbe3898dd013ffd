import pandas as pd
import pytest

from latprof.tables import io as tbl
from latprof.spec import KEY_FIELDS

GRID = ["sweep", "--cin", "4", "--cout", "2-12:2", "--hw", "6", "--quick", "--no-progress"]


@pytest.mark.slow
def test_sweep_writes_a_table_named_after_the_device_and_resumes(cli, tmp_path, monkeypatch):
    # the machine counts as quiet: under another process's load a sweep flags rows contended and
    # the next one measures them again (tests/measure covers that); this is about resuming
    from latprof.measure import activity, scheduler

    monkeypatch.setattr(scheduler, "Activity", lambda now: activity.Activity(read=lambda: None, now=now))
    r = cli(*GRID)
    assert r.exit_code == 0, r.output
    assert "6 measured now, 0 already measured" in r.output
    files = list((tmp_path / "tables").glob("cpu-*.parquet"))
    assert len(files) == 1
    df = tbl.read(files[0]).df
    assert sorted(df["c_out"]) == [2, 4, 6, 8, 10, 12]
    again = cli(*GRID)
    assert "0 measured now, 6 already measured" in again.output


def test_info_and_validate(cli, small_table):
    r = cli("tables", "info", small_table)
    assert r.exit_code == 0, r.output
    assert "rows       6" in r.output and "cpu" in r.output and "noisy" in r.output
    v = cli("tables", "validate", small_table)
    assert v.exit_code == 0 and "ok (6 rows" in v.output


@pytest.mark.slow
def test_model_coverage(cli, tmp_path):
    out = tmp_path / "m.parquet"
    r = cli("sweep", "--model", "resnet20_cifar10", "--every", "8", "--quick", "--no-progress",
            "--budget-minutes", "0.05", "--out", out)
    assert r.exit_code == 0, r.output
    info = cli("tables", "info", out, "--model", "resnet20_cifar10")
    assert "coverage of resnet20_cifar10" in info.output and "batch 1 float32 nchw cpu" in info.output


@pytest.mark.slow
def test_shards_merge_into_the_unsharded_plan(cli, tmp_path):
    for i in (1, 2, 3):
        r = cli(*GRID, "--shard", f"{i}/3")
        assert r.exit_code == 0, r.output
    shards = sorted((tmp_path / "tables").glob("*.shard*of3.parquet"))
    assert len(shards) == 3
    sizes = [len(tbl.read(p).df) for p in shards]
    assert sizes == [2, 2, 2]
    m = cli("tables", "merge", tmp_path / "all.parquet", *shards)
    assert m.exit_code == 0, m.output
    merged = tbl.read(tmp_path / "all.parquet").df
    assert sorted(merged["c_out"]) == [2, 4, 6, 8, 10, 12]
    assert not merged.duplicated(list(KEY_FIELDS)).any()


@pytest.mark.slow
def test_budget_stops_and_says_how_to_resume(cli, tmp_path):
    r = cli("sweep", "--cin", "4", "--cout", "1-200", "--hw", "6", "--quick", "--no-progress",
            "--budget-minutes", "0.01", "--out", tmp_path / "b.parquet")
    assert r.exit_code == 0, r.output
    assert "left" in r.output and "run the same command again" in r.output
    assert len(tbl.read(tmp_path / "b.parquet").df) < 200


def test_merge_refuses_other_devices(cli, tmp_path, small_table):
    other = tmp_path / "other.parquet"
    t = tbl.read(small_table)
    t.meta["device"] = {**t.meta["device"], "slug": "titanrtx", "kind": "cuda", "name": "NVIDIA TITAN RTX"}
    tbl.write(other, t)
    r = cli("tables", "merge", tmp_path / "x.parquet", small_table, other)
    assert r.exit_code == 1 and "different devices" in r.output


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("args, words", [
    (["tables", "info", "missing.parquet"], "does not exist"),
    (["tables", "validate", "notparquet"], "not a readable Parquet"),
    (["sweep", "--model", "resnet9000"], "unknown model"),
    (["sweep", "--device", "cuda", "--cin", "4", "--cout", "4"], "no CUDA device"),
    (["sweep", "--gpu", "titan_rtx", "--cin", "4", "--cout", "4"], "no CUDA device"),
    (["sweep", "--backend", "cudnn", "--cin", "4", "--cout", "4"], "needs a CUDA device"),
    (["sweep", "--backend", "triton", "--cin", "4", "--cout", "4"], "needs a CUDA device"),
    (["sweep", "--cin", "3", "--cout", "5", "--groups", "2"], "grid is empty"),
    (["sweep"], "nothing to sweep"),
    (["sweep", "--model", "nofile.py:build"], "does not exist"),
])
def test_bad_input_exits_1_with_a_message_and_no_traceback(cli, tmp_path, args, words):
    _write(tmp_path / "notparquet", b"PAR1 but not really")
    r = cli(*args)
    assert r.exit_code == 1, r.output
    assert words in r.output
    assert "Traceback" not in r.output


def test_truncated_and_newer_tables_exit_1(cli, tmp_path, small_table):
    data = small_table.read_bytes()
    cut = _write(tmp_path / "cut.parquet", data[: len(data) - 100])
    r = cli("tables", "info", cut)
    assert r.exit_code == 1 and "truncated" in r.output
    t = tbl.read(small_table)
    newer = tmp_path / "newer.parquet"
    tbl.write(newer, t)
    import json

    import pyarrow.parquet as pq
    arrow = pq.read_table(newer)
    meta = json.loads(arrow.schema.metadata[tbl.META_KEY])
    meta["schema_version"] = tbl.SCHEMA_VERSION + 1
    pq.write_table(arrow.replace_schema_metadata({tbl.META_KEY: json.dumps(meta).encode()}), newer)
    r = cli("tables", "validate", newer)
    assert r.exit_code == 1 and "newer than this latprof" in r.output
    cols = tmp_path / "cols.parquet"
    pd.DataFrame({"c_in": [1]}).to_parquet(cols)
    r = cli("tables", "info", cols)
    assert r.exit_code == 1 and "not a latprof table" in r.output


def test_user_model_from_a_file(cli, tmp_path):
    (tmp_path / "net.py").write_text(
        "import torch.nn as nn\n"
        "def build():\n"
        "    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 1))\n"
        "    m.latprof_input_size = (3, 10, 10)\n"
        "    return m\n")
    r = cli("sweep", "--model", "net.py:build", "--dense", "--quick", "--no-progress", "--out", tmp_path / "u.parquet")
    assert r.exit_code == 0, r.output
    df = tbl.read(tmp_path / "u.parquet").df
    # conv1: c_out 1..8 at c_in 3 and c_in 1..3 at c_out 8 (its full shape on both); conv2, the
    # classifier (its outputs are never pruned): c_in 1..8 only
    assert len(df) == 8 + 3 + 8 - 1
    r = cli("models", "net.py:nothere")
    assert r.exit_code == 1 and "no callable 'nothere'" in r.output


def test_models_lists_and_shows_layers(cli):
    r = cli("models")
    assert "vgg16_cifar10" in r.output and "resnet56_cifar10" in r.output
    r = cli("models", "vgg16_cifar10")
    assert r.output.count("\n") == 14 and "features.0" in r.output


@pytest.mark.slow
def test_wave_predicts_edges_and_plots(cli, tmp_path):
    r = cli("wave", "vgg16", "--layer", "features.28", "--batch", "32", "--preset", "titan_rtx",
            "--plot", tmp_path / "w.png")
    assert r.exit_code == 0, r.output
    # 14x14x32 rows = 98 row tiles of 64; each extra 64 output channels adds 98 tiles
    assert "72 SMs" in r.output and "edges [65, 129" in r.output
    assert (tmp_path / "w.png").read_bytes()[:4] == b"\x89PNG"
    r = cli("wave", "vgg16", "--layer", "nope")
    assert r.exit_code == 1 and "no conv layer 'nope'" in r.output
