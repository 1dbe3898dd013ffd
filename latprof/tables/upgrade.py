"""Schema upgrades: convert a table written under an older schema version, in place."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from latprof.errors import LatprofError
from latprof.tables import io as tbl

#: Upgrade steps: UPGRADES[v] turns (rows, metadata) of schema version v into version v + 1.
#: Schema version 1 is the first, so there are none yet; add one per schema change.
UPGRADES: dict[int, Callable[[pd.DataFrame, dict], tuple[pd.DataFrame, dict]]] = {}


def upgrade_table(path: str | Path) -> str:
    """Bring a table to the current schema version in place (atomically) and say what was done.

    The steps `UPGRADES[v]` run in order from the file's version; the result is written with
    the current version and a new content hash (the old version and hash are kept under
    `upgraded_from`). A table at the current version is left untouched; a newer one is refused.
    """
    path = Path(path)
    df, meta = tbl.read_raw(path)
    current = tbl.SCHEMA_VERSION
    try:
        version = int(meta["schema_version"])
    except (KeyError, TypeError, ValueError):
        raise LatprofError(f"{path} has no usable schema_version in its metadata; it is not a latprof table") from None
    if version == current:
        return f"{path}: already at schema version {current}; left untouched"
    if version > current:
        raise LatprofError(f"{path} has schema version {version}, newer than this latprof ({current}); "
                           "upgrade latprof instead: `pip install -U latprof`")
    old = {"schema_version": version, "content_hash": meta.get("content_hash"), "at": tbl.now_iso()}
    for v in range(version, current):
        if v not in UPGRADES:
            raise LatprofError(f"{path}: no upgrade from schema version {v} to {v + 1} is known to this latprof; "
                               "re-measure the table with `latprof sweep`")
        df, meta = UPGRADES[v](df, dict(meta))
    missing = [c for c in tbl.COLUMNS if c not in df.columns]
    if missing:
        raise LatprofError(f"{path}: after upgrading, the columns {', '.join(missing)} are still missing; "
                           "the file is damaged. Re-measure it with `latprof sweep`")
    meta = {k: v for k, v in meta.items() if k != "content_hash"}
    history = meta.get("upgraded_from")
    meta["upgraded_from"] = (history if isinstance(history, list) else []) + [old]
    tbl.write(path, tbl.LatencyTable(tbl.conform(df), meta))
    return f"{path}: upgraded from schema version {version} to {current} ({len(df)} rows)"
