"""Schema upgrades: convert a table written under an older schema version, in place."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from latprof.errors import LatprofError
from latprof.tables import io as tbl
from latprof.tables.store import table_lock


#: Columns each version added; a file of version v is hashed over the columns it had.
ADDED_IN: dict[int, tuple[str, ...]] = {
    2: ("flag_failed", "error"),
    3: ("rel_se", "n_instances", "instance_spread", "contention", "flag_contended"),
}


def _adds_defaults(version: int) -> Callable[[pd.DataFrame, dict], tuple[pd.DataFrame, dict]]:
    """version - 1 -> version: the columns `version` added, at their `COLUMN_DEFAULTS` (2: every
    row of a version 1 table ran; 3: one instance, error, spread and contention unknown)."""
    def step(df: pd.DataFrame, meta: dict) -> tuple[pd.DataFrame, dict]:
        return df.assign(**{c: tbl.COLUMN_DEFAULTS[c] for c in ADDED_IN[version] if c not in df.columns}), meta
    return step


#: Upgrade steps: UPGRADES[v] turns (rows, metadata) of schema version v into version v + 1.
UPGRADES: dict[int, Callable[[pd.DataFrame, dict], tuple[pd.DataFrame, dict]]] = {
    1: _adds_defaults(2), 2: _adds_defaults(3)}


def columns_of(version: int) -> tuple[str, ...]:
    """The columns a table of schema `version` has (the current ones less those added later)."""
    later = {c for v, cols in ADDED_IN.items() if v > version for c in cols}
    return tuple(c for c in tbl.COLUMNS if c not in later)


def upgrade_table(path: str | Path) -> str:
    """Bring a table to the current schema version in place (atomically) and say what was done.

    The file's rows are first checked against the content hash it states (over the columns of
    its version), so an upgrade never blesses edited rows; a file without a hash is adopted as
    it is, and the message says so. The steps `UPGRADES[v]` run in order from the file's version;
    the result is written with the current version and a new content hash (the old version and
    hash are kept under `upgraded_from`). A table at the current version is left untouched; a
    newer one is refused. Holds the table's lock, as a sweep does.
    """
    path = Path(path)
    if not path.exists():
        raise LatprofError(f"table {path} does not exist; check the path")
    with table_lock(path):
        df, meta = tbl.read_raw(path)
        current = tbl.SCHEMA_VERSION
        version = meta.get("schema_version")
        if type(version) is not int:
            raise LatprofError(f"{path} has no usable schema_version in its metadata ({tbl.short(repr(version), 40)}); "
                               "it is not a latprof table")
        if version == current:
            return f"{path}: already at schema version {current}; left untouched"
        if version > current:
            raise LatprofError(f"{path} has schema version {version}, newer than this latprof ({current}); "
                               "upgrade latprof instead: `pip install -U latprof`")
        tbl.check_meta(meta, path, need_hash=False)
        adopted = _check_old_hash(df, meta, version, path)
        old = {"schema_version": version, "content_hash": meta.get("content_hash"), "at": tbl.now_iso()}
        for v in range(version, current):
            if v not in UPGRADES:
                raise LatprofError(f"{path}: no upgrade from schema version {v} to {v + 1} is known to this "
                                   "latprof; re-measure the table with `latprof sweep`")
            df, meta = UPGRADES[v](df, dict(meta))
        missing = [c for c in tbl.COLUMNS if c not in df.columns]
        if missing:
            raise LatprofError(f"{path}: after upgrading, the columns {', '.join(missing)} are still missing; "
                               "the file is damaged. Re-measure it with `latprof sweep`")
        meta = {k: v for k, v in meta.items() if k != "content_hash"}
        history = meta.get("upgraded_from")
        meta["upgraded_from"] = (history if isinstance(history, list) else []) + [old]
        tbl.write(path, tbl.LatencyTable(tbl.conform(df), meta))
    note = "; it had no content hash: its rows were adopted as they were" if adopted else ""
    return f"{path}: upgraded from schema version {version} to {current} ({len(df)} rows){note}"


def _check_old_hash(df: pd.DataFrame, meta: dict, version: int, path: Path) -> bool:
    """Refuse rows that do not match the hash the old file states; True when it states none."""
    stated = meta.get("content_hash")
    if not stated:
        return True
    cols = columns_of(version)
    if all(c in df.columns for c in cols) and version in range(min(ADDED_IN) - 1, tbl.SCHEMA_VERSION):
        try:
            ok = tbl.content_hash(df, cols) == stated
        except (LatprofError, ValueError, TypeError, OverflowError):
            ok = False
        if not ok:
            raise LatprofError(f"{path}: the rows do not match the content hash in its metadata (edited or "
                               "corrupted after it was written); it is not upgraded. Fetch or measure it again.")
    return False
