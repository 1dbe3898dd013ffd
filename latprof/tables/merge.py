"""Combine tables of the same device (shards of one sweep, or several hosts) into one.

Pooling rule for a key present in several inputs: the row with the fewest flags, then the
smallest `rel_iqr_norm` (the quietest measurement) is kept, whole, with its own provenance
(`host`, `session`, `measured_at`). Inputs whose normalised latencies were scaled to
different reference baselines are first rescaled to the first input's baseline, so the
drift-normalised column stays comparable. Keys whose kept and dropped measurements differ by
more than `DISAGREE_REL` are counted and reported, not hidden. A row flagged failed (the shape
could not run) loses to any measured row of its key.

`merge_files` never replaces a table it was not given as an input (unless forced), holds the
output's lock as a sweep does, takes inputs by path or URL, and includes rows still in an
input's journal (a sweep killed before it folded them in).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from latprof.tables import io as tbl
from latprof.tables import remote
from latprof.tables.store import fold_journal, journal_path, table_lock
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
    journal_rows: int = 0      # rows taken from inputs' journals (not yet folded into their files)
    replaced: int | None = None   # rows of an OUT that was not an input and was replaced (--force)


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
    both["_flags"] = (both[["flag_noisy", "flag_drift", "flag_throttled", "flag_contended"]].sum(axis=1)
                      + 100 * tbl.failed_rows(both))
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


def merge_files(inputs: list, out: Path, *, force: bool = False) -> MergeResult:
    """Merge the tables `inputs` (paths or URLs) into `out`, under `out`'s lock.

    `out` must not exist, or be one of the inputs (then its rows take part), or `force` must be
    given: a merge never silently replaces a table it was not asked to read."""
    out = Path(out)
    if remote.is_url(str(out)):
        raise LatprofError(f"cannot write a merged table to a URL ({out}); give a local path")
    with table_lock(out, "writing"):
        locals_ = [Path(p) for p in inputs if not remote.is_url(str(p))]
        among = any(_same_file(p, out) for p in locals_)
        replaced = None
        if out.exists() and not among:
            if not force:
                raise LatprofError(f"{out} exists and is not among the inputs: merging would replace it. To keep its "
                                   f"rows, name it as an input too (`latprof tables merge {out} {out} "
                                   f"{' '.join(str(p) for p in inputs)}`); to replace it, add --force")
            replaced = _rows_or_none(out)
        tables, names, journal_rows = [], [], 0
        for ref in inputs:
            path, t = remote.fetch(str(ref))
            if not remote.is_url(str(ref)):
                journal_rows += fold_journal(t, path)
            tables.append(t)
            names.append(str(ref))
        merged, result = merge_tables(tables, names)
        tbl.write(out, merged)
        if among:  # its journal's rows are in the merged file now
            journal_path(out).unlink(missing_ok=True)
    result.journal_rows, result.replaced = journal_rows, replaced
    return result


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return a.resolve() == b.resolve()


def _rows_or_none(path: Path) -> int | None:
    return tbl.file_rows(path)
