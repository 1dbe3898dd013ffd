"""`latprof steps` names the kernel change at a step edge (the table's `algo` column), in text, CSV
and JSON, on a synthetic table whose 64 -> 64 line switches implementation at 33 channels."""

from __future__ import annotations

import json

import pytest

from latprof.staircase import lines as st
from latprof.tables import io as tbl
from synthetic import model_table

SMALL = "convolution:jit:avx2_1x1;reorder:simple:any"
LARGE = "convolution:brgconv:avx512_core;reorder:jit:blk"


@pytest.fixture
def named(tmp_path):
    """resnet20's table; the c_out line of its 64 -> 64 convs says SMALL up to 32 channels and LARGE
    from 33 (edges at 17, 33, 49: only 33 changes kernel); every other row has no name."""
    path = model_table(tmp_path / "r20.parquet", "resnet20_cifar10")
    t = tbl.read(path)
    line = next(x for x in st.model_steps(t, "resnet20_cifar10", tbl.context(t))
                if x.spec.c_out == 64 and x.spec.c_in == 64).out.line
    at = {line.spec_at(c).key(): c for c in range(1, 65)}
    counts = t.df.apply(lambda r: at.get(tuple(r[k] for k in st.KEY_FIELDS)), axis=1)
    t.df["algo"] = [(SMALL if c <= 32 else LARGE) if c == c and c is not None else "" for c in counts]
    tbl.write(path, t)
    return path


def test_the_text_names_the_kernel_change_at_its_edge(cli, named):
    r = cli("steps", "resnet20_cifar10", "--table", named)
    assert r.exit_code == 0, r.output
    assert f"kernel at 33: {SMALL} -> {LARGE}" in r.output
    assert "kernel at 17" not in r.output and "kernel at 49" not in r.output


def test_json_and_csv_carry_one_entry_per_edge(cli, named):
    rows = json.loads(cli("steps", "resnet20_cifar10", "--table", named, "--format", "json").output)
    r = next(x for x in rows if x["c_in"] == 64 and x["c_out"] == 64)
    assert r["edges"] == [17, 33, 49] and r["kernels"] == ["", f"{SMALL} -> {LARGE}", ""]
    assert all(x["kernels"] == [""] * len(x["edges"]) for x in rows if (x["c_in"], x["c_out"]) != (64, 64))
    csv = cli("steps", "resnet20_cifar10", "--table", named, "--format", "csv").output.splitlines()
    header = csv[0].split(",")
    assert "kernels" in header
    line = next(x for x in csv[1:] if f"{SMALL} -> {LARGE}" in x)
    assert f" | {SMALL} -> {LARGE} | " in line


def test_a_table_without_names_shows_none(cli, tmp_path):
    path = model_table(tmp_path / "plain.parquet", "resnet20_cifar10")
    r = cli("steps", "resnet20_cifar10", "--table", path)
    assert r.exit_code == 0 and "kernel at" not in r.output


def test_wave_says_its_prediction_is_rough_below_sm_80(cli):
    r = cli("wave", "small_cifar10", "--preset", "titan_rtx", "--dtype", "float32")
    assert r.exit_code == 0, r.output
    assert "note" in r.output and "FMA below sm_80" in r.output
    assert "FMA" not in cli("wave", "small_cifar10", "--preset", "a100").output
