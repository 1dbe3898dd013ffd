"""A table being written by a sweep: exclusive lock, append-only journal, atomic compaction.

Every finished row is appended to `<table>.journal.jsonl` and fsync'ed before the sweep
moves on, so `kill -9` loses at most the shapes still being sampled. Opening the store
folds any journal left by an interrupted sweep into the Parquet file (atomic rename),
which is how a sweep resumes: shapes already in the table are not measured again.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pandas as pd

from latprof.tables import io as tbl
from latprof.errors import LatprofError
from latprof.spec import KEY_FIELDS, ConvSpec

#: Fold the journal into the Parquet file after this many new rows (and at the end).
COMPACT_EVERY_ROWS = 200


class TableStore:
    """Use as a context manager; `append(row)` is durable when it returns."""

    def __init__(self, path: str | Path, meta: dict):
        self.path = Path(path)
        self.journal = self.path.with_name(self.path.name + ".journal.jsonl")
        self.lockfile = self.path.with_name(self.path.name + ".lock")
        self.meta = meta
        self._lock_fd: int | None = None
        self._journal_f = None
        self._since_compact = 0
        self._pending: list[dict] = []
        self._values: dict[tuple, float] | None = None
        self.table: tbl.LatencyTable | None = None

    def __enter__(self) -> "TableStore":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.lockfile, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise LatprofError(f"another latprof process is writing {self.path}; wait for it, or write "
                               "to another file with --out (merge later with `latprof tables merge`)") from None
        self.table = self._load()
        self._journal_f = open(self.journal, "a", encoding="utf-8")
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._journal_f is not None:
                self._journal_f.close()
                self._journal_f = None
            self.compact()
        finally:
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
                self._lock_fd = None

    def _load(self) -> tbl.LatencyTable:
        if self.path.exists():
            table = tbl.read(self.path)
            check_same_device(table.meta, self.meta, self.path)
            # Keep the first session's reference baseline so normalised latencies stay comparable.
            merged = dict(table.meta)
            for key, value in self.meta.items():
                if key not in ("reference", "created_at"):
                    merged[key] = value
            merged.setdefault("reference", self.meta.get("reference"))
            merged["hosts"] = sorted(set(table.meta.get("hosts", [])) | {self.meta["host"]})
            table.meta = merged
        else:
            table = tbl.LatencyTable(tbl.empty_frame(), {**self.meta, "hosts": [self.meta["host"]]})
        rows = read_journal(self.journal)
        if rows:
            table.df = tbl.upsert(table.df, pd.DataFrame(rows))
            tbl.write(self.path, table)
        if self.journal.exists():
            self.journal.unlink()
        return table

    @property
    def reference_baseline(self) -> float | None:
        ref = self.table.meta.get("reference") or {}
        return ref.get("baseline_us")

    def set_reference(self, label: str, baseline_us: float) -> None:
        if not self.reference_baseline:
            self.table.meta["reference"] = {"workload": label, "baseline_us": baseline_us}

    def has(self, spec: ConvSpec) -> bool:
        return spec.key() in self._values_cache()

    def latency(self, spec: ConvSpec) -> float | None:
        """Drift-normalised median latency (us) of a measured spec, None if not measured."""
        return self._values_cache().get(spec.key())

    def _values_cache(self) -> dict[tuple, float]:
        if self._values is None:
            df = self.table.df
            keys = df[list(KEY_FIELDS)].itertuples(index=False, name=None)
            self._values = dict(zip(keys, df["latency_norm_us_p50"].astype(float)))
        return self._values

    def append(self, row: dict) -> None:
        self._journal_f.write(json.dumps(row, default=str) + "\n")
        self._journal_f.flush()
        os.fsync(self._journal_f.fileno())
        self._pending.append(row)
        self._values_cache()[tuple(row[k] for k in KEY_FIELDS)] = float(row["latency_norm_us_p50"])
        self._since_compact += 1
        if self._since_compact >= COMPACT_EVERY_ROWS:
            self.compact()

    def compact(self) -> None:
        """Fold rows appended since the last compaction into the Parquet file, atomically,
        then empty the journal (or remove it, once closed)."""
        if self._pending or not self.path.exists():
            if self._pending:
                self.table.df = tbl.upsert(self.table.df, pd.DataFrame(self._pending))
            tbl.write(self.path, self.table)
            self._pending = []
            self._since_compact = 0
        if self._journal_f is not None:
            self._journal_f.truncate(0)
            self._journal_f.seek(0)
        elif self.journal.exists():
            self.journal.unlink()


def read_journal(path: Path) -> list[dict]:
    """Rows of a journal; a last line cut short by a kill is ignored (that row was not finished)."""
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                break
    return rows


def check_same_device(found: dict, wanted: dict, path) -> None:
    if not tbl.same_device(found, wanted):
        a, b = found.get("device", {}), wanted.get("device", {})
        raise LatprofError(f"{path} holds measurements of {a.get('name')!r} but this sweep runs on "
                           f"{b.get('name')!r}; write to another file with --out")
