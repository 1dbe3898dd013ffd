"""Property: whatever is done to a table file or its metadata (truncation, bit flips, type
changes, missing keys, extra keys, huge values, odd row values, columns cast or dropped),
`latprof tables info` and `latprof tables validate` either succeed or exit 1 with one line,
never print a traceback, and change no file. Mutations that must break the table (a cut file,
a required key removed, a declared key of the wrong type, a column lost) must exit 1.

A few dozen mutations in the fast suite; a few hundred in the slow one.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latprof.cli import main
from latprof.spec import ConvSpec
from latprof.tables import io as tbl
from synthetic import META, row

FAST_EXAMPLES = 25
SLOW_EXAMPLES = 400


def _base() -> tuple[bytes, dict]:
    """A valid table (one failed row among them) as bytes, and its metadata."""
    spec = ConvSpec(c_in=4, c_out=4, h=8, w=8)
    rows = [row(spec.replace(c_out=c), 10.0 + c) for c in (1, 2, 3, 4, 6, 8)]
    rows[-1] = {**rows[-1], "flag_failed": True, "error": "RuntimeError: out of memory",
                "latency_norm_us_p50": float("nan"), "n_samples": 0}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.parquet"
        tbl.write(path, tbl.LatencyTable(pd.DataFrame(rows), {**META, "versions": {"torch": "2.3"}}))
        return path.read_bytes(), tbl.read(path).meta


BASE, BASE_META = _base()

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
HUGE = st.sampled_from([10**30, -(10**30), 2**63, 1e308, float("inf"), float("-inf"), float("nan"), -1, 0,
                        "x" * 100_000, [0] * 10_000])


def _meta_bytes(meta) -> bytes:
    return json.dumps(meta, allow_nan=True).encode()


def _with_meta(raw_meta: bytes) -> bytes:
    """BASE's rows with `raw_meta` as the latprof metadata."""
    arrow = pq.read_table(pa.BufferReader(BASE))
    sink = pa.BufferOutputStream()
    pq.write_table(arrow.replace_schema_metadata({tbl.META_KEY: raw_meta}), sink)
    return sink.getvalue().to_pybytes()


def _with_frame(df: pd.DataFrame, rehash: bool) -> bytes:
    meta = dict(BASE_META)
    if rehash:
        meta["content_hash"] = tbl.content_hash(df)
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False)
                   .replace_schema_metadata({tbl.META_KEY: _meta_bytes(meta)}), sink)
    return sink.getvalue().to_pybytes()


@st.composite
def mutations(draw) -> tuple[str, bytes, bool]:
    """(what was done, the file's new bytes, whether the table must now be refused)."""
    kind = draw(st.sampled_from(["truncate", "bitflip", "drop_key", "retype_key", "extra_key", "huge_value",
                                 "nested_value", "row_value", "column"]))
    if kind == "truncate":
        n = draw(st.integers(0, len(BASE) - 1))
        return f"cut to {n} bytes", BASE[:n], True
    if kind == "bitflip":
        flips = draw(st.lists(st.tuples(st.integers(0, len(BASE) - 1), st.integers(0, 7)), min_size=1, max_size=8))
        data = bytearray(BASE)
        for pos, bit in flips:
            data[pos] ^= 1 << bit
        return f"bits flipped at {flips}", bytes(data), False
    meta = json.loads(json.dumps(BASE_META))
    if kind == "drop_key":
        key = draw(st.sampled_from(sorted(meta)))
        del meta[key]
        return f"{key} removed", _with_meta(_meta_bytes(meta)), key in ("schema_version", "content_hash")
    if kind == "retype_key":
        key = draw(st.sampled_from(sorted(k for k in meta if k in tbl.META_SCHEMA)))
        value = draw(JSON_VALUES)
        allowed, _ = tbl.META_SCHEMA[key]
        wrong = not isinstance(value, allowed) or isinstance(value, bool)
        meta[key] = value
        return f"{key} = {value!r:.80}", _with_meta(_meta_bytes(meta)), wrong
    if kind == "extra_key":
        key = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in tbl.META_SCHEMA))
        meta[key] = draw(JSON_VALUES)
        return f"extra key {key!r}", _with_meta(_meta_bytes(meta)), False
    if kind == "huge_value":
        where = draw(st.sampled_from(["schema_version", "rows", "reference.baseline_us", "protocol.threads",
                                      "host", "created_at", "device.name"]))
        value = draw(HUGE)
        outer, _, inner = where.partition(".")
        if inner:
            meta[outer] = {**(meta.get(outer) or {}), inner: value}
        else:
            meta[outer] = value
        must = where == "schema_version" or (where == "reference.baseline_us" and not (
            isinstance(value, (int, float)) and math.isfinite(value) and value > 0))
        return f"{where} = {value!r:.40}", _with_meta(_meta_bytes(meta)), must
    if kind == "nested_value":
        depth = draw(st.integers(1_000, 200_000))
        raw = _meta_bytes(meta)[:-1] + b', "deep": ' + b"[" * depth + b"]" * depth + b"}"
        return f"a list nested {depth} deep", _with_meta(raw), False
    df = pq.read_table(pa.BufferReader(BASE)).to_pandas()
    if kind == "row_value":
        col = draw(st.sampled_from([c for c in tbl.COLUMNS if c not in ("dtype", "layout", "backend", "op")]))
        i = draw(st.integers(0, len(df) - 1))
        typ = tbl.arrow_schema().field(col).type
        if pa.types.is_floating(typ):
            value = draw(st.floats(allow_nan=True, allow_infinity=True))
        elif pa.types.is_integer(typ):
            value = draw(st.integers(-(2**31), 2**31 - 1))
        elif pa.types.is_boolean(typ):
            value = draw(st.booleans())
        else:
            value = draw(st.text(max_size=50))
        df.loc[i, col] = value
        rehash = draw(st.booleans())
        return f"row {i} {col} = {value!r:.40} (rehashed: {rehash})", _with_frame(df, rehash), False
    col = draw(st.sampled_from(list(tbl.COLUMNS)))
    how = draw(st.sampled_from(["drop", "as_text"]))
    df = df.drop(columns=[col]) if how == "drop" else df.assign(**{col: df[col].astype(str)})
    return f"column {col} {how}", _with_frame(df, False), how == "drop"


def _state(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def check(mutation) -> None:
    what, data, must_fail = mutation
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.parquet"
        path.write_bytes(data)
        before = _state(Path(d))
        for command in ("info", "validate"):
            r = runner.invoke(main, ["tables", command, str(path)])
            if r.exception is not None and not isinstance(r.exception, SystemExit):
                raise AssertionError(f"{what}: `tables {command}` raised {r.exception!r}") from r.exception
            assert "Traceback" not in r.output, (what, r.output)
            assert r.exit_code in (0, 1), (what, command, r.output)
            if r.exit_code == 1:
                lines = [line for line in r.output.splitlines() if line.strip()]
                errors = [line for line in lines if line.startswith("error: ")]
                assert len(errors) == 1 and lines == errors, (what, command, r.output)
            elif must_fail:
                raise AssertionError(f"{what}: `tables {command}` accepted a table it must refuse:\n{r.output}")
            assert _state(Path(d)) == before, (what, command, "a file changed")


_SETTINGS = dict(deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=FAST_EXAMPLES, **_SETTINGS)
@given(mutations())
def test_mutated_tables_are_refused_in_one_line_and_left_untouched(mutation):
    check(mutation)


@pytest.mark.slow
@settings(max_examples=SLOW_EXAMPLES, **_SETTINGS)
@given(mutations())
def test_mutated_tables_many(mutation):
    check(mutation)
