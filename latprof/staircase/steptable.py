"""Step tables (`<raw>.steps.parquet`): one row per fitted segment per line, with the line's
key; they record the raw table's content hash they were fitted from."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from latprof.errors import LatprofError

from latprof.spec import KEY_FIELDS
from latprof.staircase.lines import FIT_NOISE_REL, LineFit
from latprof.tables import io as tbl

STEPS_SCHEMA_VERSION = 1


_LINE_COLUMNS = ("axis", "line_full", "noise_rel", "n_measured")
_SEGMENT_COLUMNS = ("seg_start", "seg_end", "level_us", "spread_us", "n_points", "edge_lo", "edge_hi", "efficient")


def steps_frame(fits: list[LineFit]) -> pd.DataFrame:
    rows, seen = [], set()
    for f in fits:
        if f.missing or (f.line.base, f.line.axis) in seen:
            continue
        seen.add((f.line.base, f.line.axis))
        seg = f.fit.to_frame()
        for r in seg.itertuples(index=False):
            rows.append({**f.line.base.to_row(), "axis": f.line.axis, "line_full": f.line.full,
                         "noise_rel": f.fit.noise_rel, "n_measured": len(f.channels),
                         "seg_start": r.start, "seg_end": r.end, "level_us": r.level, "spread_us": r.spread,
                         "n_points": r.n, "edge_lo": r.edge_lo, "edge_hi": r.edge_hi, "efficient": r.efficient})
    return pd.DataFrame(rows, columns=list(KEY_FIELDS) + list(_LINE_COLUMNS) + list(_SEGMENT_COLUMNS))


def steps_path(raw_path) -> Path:
    raw_path = Path(raw_path)
    return raw_path.with_name(raw_path.name.removesuffix(".parquet") + ".steps.parquet")


def write_steps(path, fits: list[LineFit], raw: tbl.LatencyTable) -> Path:
    """Write (or replace) the step table; lines already in it and not refitted are kept."""
    path = Path(path)
    new = steps_frame(fits)
    if path.exists():
        old = read_steps(path)[0]
        line_key = list(KEY_FIELDS) + ["axis"]
        keep = old.merge(new[line_key].drop_duplicates(), on=line_key, how="left", indicator=True)
        old = old[(keep["_merge"] == "left_only").to_numpy()]
        new = pd.concat([old, new], ignore_index=True) if len(old) else new
    meta = {"schema_version": STEPS_SCHEMA_VERSION, "kind": "steps", "device": raw.meta.get("device"),
            "raw_content_hash": raw.meta.get("content_hash"), "created_at": tbl.now_iso(),
            "fit": {"noise_rel": FIT_NOISE_REL, "latency": "latency_norm_us_p50"}}
    arrow = pa.Table.from_pandas(new, preserve_index=False)
    arrow = arrow.replace_schema_metadata({tbl.META_KEY: json.dumps(meta, default=str).encode()})
    with tbl.atomic_file(path) as f:
        pq.write_table(arrow, f)
    return path


def read_steps(path) -> tuple[pd.DataFrame, dict]:
    path = Path(path)
    if not path.exists():
        raise LatprofError(f"step table {path} does not exist; make it with `latprof steps MODEL --table RAW`")
    arrow, meta = tbl.read_parquet(path, "latprof step table")
    tbl.check_version(meta.get("schema_version"), path, current=STEPS_SCHEMA_VERSION)
    return arrow.to_pandas(), meta
