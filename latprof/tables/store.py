"""A table being written by a sweep: exclusive lock, append-only journal, atomic compaction.

Every finished row is appended to `<table>.journal.jsonl` and fsync'ed before the sweep
moves on, so `kill -9` loses at most the shapes still being sampled. Opening the store
folds any journal left by an interrupted sweep into the Parquet file (atomic rename),
which is how a sweep resumes: shapes already in the table are not measured again (a shape
that failed in an earlier sweep is tried once more: an out-of-memory may have been another
process's doing).

Whatever writes a table (a sweep, `tables merge`, `tables upgrade`, `validate --rehash`) holds
its lock (`table_lock`): a hidden file `.<table>.lock` beside it, so that globs of tables
(`tables/*shard*`) do not pick it up, removed again when the writer is done.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path

import pandas as pd

from latprof.tables import io as tbl
from latprof.errors import LatprofError
from latprof.spec import KEY_FIELDS, ConvSpec

#: Fold the journal into the Parquet file after this many new rows (and at the end).
COMPACT_EVERY_ROWS = 200


def lock_path(path: str | Path) -> Path:
    """`.latprof-<digest>.lock` beside the table: hidden, and without the table's name in it, so
    that no glob of tables (`*shard*`, `cpu*`, even Python's, which shows hidden files) lists it.
    The file holds the pid and the table's name while locked."""
    path = Path(path)
    return path.with_name(f".latprof-{hashlib.sha256(path.name.encode()).hexdigest()[:16]}.lock")


class table_lock:  # noqa: N801 (used like a function: `with table_lock(path):`)
    """Hold the exclusive lock of the table at `path`; refused at once, with a message, while
    another latprof process holds it. The lock file is removed on the way out; a process that
    locked a lock file just removed notices (the path no longer names its file) and locks anew."""

    def __init__(self, path: str | Path, doing: str = "writing"):
        self.path, self.doing = Path(path), doing
        self.file = lock_path(self.path)
        self.fd: int | None = None

    def __enter__(self) -> "table_lock":
        with tbl.os_errors("lock", self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            while self.fd is None:
                fd = os.open(self.file, os.O_CREAT | os.O_RDWR, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise LatprofError(f"another latprof process is {self.doing} {self.path}; wait for it, or "
                                       "write to another file with --out (merge later with `latprof tables "
                                       "merge`)") from None
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.file).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    self.fd = fd
                    with contextlib.suppress(OSError):  # only a note for people: a full disk may refuse it
                        os.write(fd, f"{os.getpid()} {self.path.name}\n".encode())
                else:
                    os.close(fd)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.file)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def journal_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".journal.jsonl")


def pending_rows(path: str | Path) -> int:
    """Rows in the table's journal that are not yet in the Parquet file: left by a sweep that was
    killed (folded in by the next sweep or merge of this table) or by one still running."""
    return len(read_journal(journal_path(path)))


class TableStore:
    """Use as a context manager; `append(row)` is durable when it returns."""

    def __init__(self, path: str | Path, meta: dict):
        self.path = Path(path)
        self.journal = journal_path(self.path)
        self.meta = meta
        self._lock = None
        self._journal_f = None
        self._since_compact = 0
        self._pending: list[dict] = []
        self._values: dict[tuple, float] | None = None
        self.table: tbl.LatencyTable | None = None

    def __enter__(self) -> "TableStore":
        lock = table_lock(self.path).__enter__()
        try:
            self.table = self._load()
            with tbl.os_errors("open the journal of", self.path):
                self._journal_f = open(self.journal, "a", encoding="utf-8")
        except BaseException:
            lock.__exit__(None, None, None)
            raise
        self._lock = lock
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if self._journal_f is not None:
                journal, self._journal_f = self._journal_f, None
                try:
                    journal.close()  # flushes what a failed append left in its buffer: no space, perhaps
                except OSError as err:
                    if exc_type is None:
                        raise LatprofError(tbl.os_error_message(err, "close the journal of", self.path)) from None
            try:
                self.compact()
            except LatprofError:
                if exc_type is None:
                    raise
                # the error on its way out says what went wrong; the rows wait in the journal
        finally:
            if self._lock is not None:
                self._lock.__exit__(None, None, None)
                self._lock = None

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
        if fold_journal(table, self.path):
            tbl.write(self.path, table)
        with tbl.os_errors("remove the journal of", self.path):
            self.journal.unlink(missing_ok=True)
        return table

    @property
    def reference_baseline(self) -> float | None:
        ref = self.table.meta.get("reference") or {}
        return ref.get("baseline_us")

    def set_reference(self, label: str, baseline_us: float) -> None:
        if not self.reference_baseline:
            self.table.meta["reference"] = {"workload": label, "baseline_us": baseline_us}

    def has(self, spec: ConvSpec) -> bool:
        """Measured already: in the table (a row that failed, or was flagged contended, in an
        earlier sweep does not count: it is tried again, and the new row replaces it), or appended
        by this store (failed or not)."""
        return spec.key() in self._values_cache()

    def latency(self, spec: ConvSpec) -> float | None:
        """Drift-normalised median latency (us) of a measured spec, None if not measured (NaN
        when it failed in this sweep)."""
        return self._values_cache().get(spec.key())

    def _values_cache(self) -> dict[tuple, float]:
        if self._values is None:
            df = self.table.df
            df = df[~(tbl.failed_rows(df) | df["flag_contended"].fillna(False).to_numpy(dtype=bool))]
            keys = df[list(KEY_FIELDS)].itertuples(index=False, name=None)
            self._values = dict(zip(keys, df["latency_norm_us_p50"].astype(float)))
        return self._values

    def append(self, row: dict) -> None:
        with tbl.os_errors("append a row to the journal of", self.path):
            self._journal_f.write(json.dumps(row, default=str) + "\n")
            self._journal_f.flush()
            os.fsync(self._journal_f.fileno())
        self._pending.append(row)
        value = row["latency_norm_us_p50"]
        self._values_cache()[tuple(row[k] for k in KEY_FIELDS)] = float("nan") if value is None else float(value)
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
        with tbl.os_errors("empty the journal of", self.path):
            if self._journal_f is not None:
                self._journal_f.truncate(0)
                self._journal_f.seek(0)
            else:
                self.journal.unlink(missing_ok=True)


def fold_journal(table: tbl.LatencyTable, path: str | Path) -> int:
    """Add the rows of the journal of the table at `path` to `table` (in memory); how many."""
    journal = journal_path(path)
    rows = read_journal(journal)
    if rows:
        try:
            table.df = tbl.upsert(table.df, pd.DataFrame(rows))
        except (ValueError, TypeError, OverflowError) as exc:  # Arrow's conversion errors included
            raise LatprofError(f"the journal {journal} of an interrupted sweep holds rows that do not fit the "
                               f"table ({tbl.short(exc)}); move it aside and run the command again") from None
    return len(rows)


def read_journal(path: Path) -> list[dict]:
    """Rows of a journal; a last line cut short by a kill is ignored (that row was not finished)."""
    if not path.exists():
        return []
    rows = []
    with tbl.os_errors("read the journal", path), open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                break
            if not isinstance(row, dict):
                break
            rows.append(row)
    return rows


def check_same_device(found: dict, wanted: dict, path) -> None:
    if not tbl.same_device(found, wanted):
        a, b = found.get("device", {}), wanted.get("device", {})
        raise LatprofError(f"{path} holds measurements of {a.get('name')!r} but this sweep runs on "
                           f"{b.get('name')!r}; write to another file with --out")
