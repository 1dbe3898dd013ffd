"""Combine tables of the same device (shards of one sweep, or several hosts) into one.

Pooling rule for a key present in several inputs: the row with the fewest flags, then the
smallest `rel_iqr_norm` (the quietest measurement) is kept, whole, with its own provenance
(`host`, `session`, `measured_at`). Inputs whose normalised latencies were scaled to
different reference baselines are first rescaled to the first input's baseline, so the
drift-normalised column stays comparable. Keys whose kept and dropped measurements differ by
more than `DISAGREE_REL` are counted and reported, not hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from latprof.tables import io as tbl
from latprof.errors import LatprofError
from latprof.spec import KEY_FIELDS

#: Relative difference of `latency_norm_us_p50` between duplicates that counts as a disagreement.
DISAGREE_REL = 0.10

NORM_COLUMNS = ("latency_norm_us_p50", "latency_norm_us_p25", "latency_norm_us_p75")


@dataclass
class MergeResult:
    rows: int
    overlaps: int
    disagreements: int


def merge_tables(tables: list[tbl.LatencyTable], names: list[str]) -> tuple[tbl.LatencyTable, MergeResult]:
    first = tables[0]
    for t, name in zip(tables[1:], names[1:]):
        a, b = first.device, t.device
        if not tbl.same_device(a, b):
            raise LatprofError(f"cannot merge {name} ({b.get('name')!r}) with {names[0]} ({a.get('name')!r}): "
                               "tables of different devices stay apart")
    baseline = (first.meta.get("reference") or {}).get("baseline_us")
    frames = []
    for i, t in enumerate(tables):
        df = t.df.copy()
        if baseline:
            scale = baseline / df["ref_baseline_us"]
            for col in NORM_COLUMNS:
                df[col] = df[col] * scale
            df["ref_baseline_us"] = baseline
        df["_order"] = i
        frames.append(df)
    both = pd.concat(frames, ignore_index=True)
    both["_flags"] = both[["flag_noisy", "flag_drift", "flag_throttled"]].sum(axis=1)
    both = both.sort_values(["_flags", "rel_iqr_norm", "_order"], kind="stable")
    keys = list(KEY_FIELDS)
    groups = both.groupby(keys, sort=False)["latency_norm_us_p50"]
    spread = groups.max() / groups.min() - 1.0
    overlaps = int((groups.size() > 1).sum())
    disagreements = int((spread > DISAGREE_REL).sum())
    kept = both.drop_duplicates(subset=keys, keep="first").drop(columns=["_order", "_flags"])
    meta = dict(first.meta)
    meta["hosts"] = sorted({h for t in tables for h in t.meta.get("hosts", [t.meta.get("host")]) if h})
    meta["merged_from"] = [str(n) for n in names]
    merged = tbl.LatencyTable(tbl.upsert(tbl.empty_frame(), kept), meta)
    return merged, MergeResult(len(merged.df), overlaps, disagreements)


def merge_files(inputs: list[Path], out: Path) -> MergeResult:
    tables = [tbl.read(p) for p in inputs]
    merged, result = merge_tables(tables, [str(p) for p in inputs])
    tbl.write(out, merged)
    return result
