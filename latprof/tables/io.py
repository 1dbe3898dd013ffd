"""The raw latency table: its schema (declared once, here), Parquet I/O and validation.

One row per measured `ConvSpec`; the key is every `ConvSpec` field (`KEY_FIELDS`).
Units are in the column names. File metadata (key `latprof`, JSON) records where and
how the numbers were measured; `schema_version` is checked on every read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from latprof.errors import LatprofError
from latprof.spec import KEY_FIELDS, Context
from latprof.tables.meta import META_SCHEMA, check_meta, meta_problems, short  # noqa: F401 (re-exported)
from latprof.tables.oserrors import os_error_message, os_errors  # noqa: F401 (re-exported)

#: Version 2 added `flag_failed` and `error` (a shape that could not run is a row, not a crash);
#: version 3 the re-sweep fidelity columns: `rel_se`, `n_instances`, `instance_spread`,
#: `contention`, `flag_contended`.
SCHEMA_VERSION = 3
META_KEY = b"latprof"

_KEY_TYPES = {"dtype": pa.string(), "layout": pa.string(), "backend": pa.string(), "tile": pa.string(),
              "op": pa.string()}

#: Measurement columns: (name, arrow type, meaning). Latencies are per call, in microseconds.
MEASUREMENT_COLUMNS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("latency_us_p50", pa.float64(), "median of the raw samples"),
    ("latency_us_p10", pa.float64(), "10th percentile, raw"),
    ("latency_us_p25", pa.float64(), "25th percentile, raw"),
    ("latency_us_p75", pa.float64(), "75th percentile, raw"),
    ("latency_us_p90", pa.float64(), "90th percentile, raw"),
    ("latency_us_min", pa.float64(), "fastest raw sample"),
    ("latency_us_mean", pa.float64(), "mean of the raw samples"),
    ("rel_iqr", pa.float64(), "(p75 - p25) / p50 of the raw samples"),
    ("latency_norm_us_p50", pa.float64(), "median of the drift-normalised samples"),
    ("latency_norm_us_p25", pa.float64(), "25th percentile, drift-normalised"),
    ("latency_norm_us_p75", pa.float64(), "75th percentile, drift-normalised"),
    ("rel_iqr_norm", pa.float64(), "(p75 - p25) / p50 of the drift-normalised samples"),
    ("ref_us_p50", pa.float64(), "reference workload latency while this row was sampled"),
    ("ref_baseline_us", pa.float64(), "reference latency the normalised samples are scaled to"),
    ("ref_drift_rel", pa.float64(), "max/min - 1 of the reference while this row was sampled"),
    ("n_samples", pa.int32(), "samples kept"),
    ("inner_reps", pa.int32(), "calls per sample (CPU: so that a sample is long enough to time)"),
    ("threads", pa.int32(), "CPU threads torch used"),
    ("macs", pa.int64(), "multiply-accumulates of the call"),
    ("flag_noisy", pa.bool_(), "standard error of the normalised median above the protocol's limit"),
    ("flag_drift", pa.bool_(), "machine speed moved beyond the drift threshold during the row"),
    ("flag_throttled", pa.bool_(), "the GPU reported throttling during the row"),
    ("algo", pa.string(), "kernels the library launched (CUDA), when known"),
    ("gpu_clock_mhz", pa.float64(), "SM clock during the row (NVML), when known"),
    ("gpu_temp_c", pa.float64(), "GPU temperature during the row (NVML), when known"),
    ("measured_at", pa.string(), "UTC time the row was finished, ISO 8601"),
    ("host", pa.string(), "fingerprint of the host that measured the row"),
    ("session", pa.string(), "id of the sweep process that measured the row"),
    ("flag_failed", pa.bool_(), "the shape could not run (out of memory, unsupported); no latency, see `error`"),
    ("error", pa.string(), "why a failed shape could not run (one line); empty otherwise"),
    ("rel_se", pa.float64(), "relative standard error of the normalised median (samples and instances); "
                             "NaN: not stored, fits derive it from rel_iqr_norm and n_samples"),
    ("n_instances", pa.int32(), "fresh allocations of the shape sampled side by side (placement averaged)"),
    ("instance_spread", pa.float64(), "(max - min) / median of the instances' medians; NaN for one instance"),
    ("contention", pa.float64(), "other processes' average busy CPUs (and stolen time) during the row; NaN: unknown"),
    ("flag_contended", pa.bool_(), "another process kept a CPU busy while the row was sampled (left out of fits)"),
)

#: Values of columns added after version 1, for rows (or frames) written before they existed.
COLUMN_DEFAULTS = {"flag_failed": False, "error": "", "rel_se": float("nan"), "n_instances": 1,
                   "instance_spread": float("nan"), "contention": float("nan"), "flag_contended": False}

MEASUREMENT_FIELDS = tuple(name for name, _, _ in MEASUREMENT_COLUMNS)
COLUMNS = KEY_FIELDS + MEASUREMENT_FIELDS


def arrow_schema(columns=None) -> pa.Schema:
    """The table's Arrow schema (of `columns` only, in schema order, when given: an older version's)."""
    fields = [pa.field(k, _KEY_TYPES.get(k, pa.int32()), nullable=False) for k in KEY_FIELDS]
    fields += [pa.field(name, typ) for name, typ, _ in MEASUREMENT_COLUMNS]
    return pa.schema([f for f in fields if columns is None or f.name in columns])


@dataclass
class LatencyTable:
    """A raw table in memory: the rows and the file metadata."""

    df: pd.DataFrame
    meta: dict = field(default_factory=dict)

    @property
    def device(self) -> dict:
        return self.meta.get("device", {})

    def keys(self) -> set[tuple]:
        return set(self.df[list(KEY_FIELDS)].itertuples(index=False, name=None))


def failed_rows(df: pd.DataFrame) -> np.ndarray:
    """Which rows are flagged failed (none in a frame built before the column existed)."""
    if "flag_failed" not in df.columns:
        return np.zeros(len(df), dtype=bool)
    return df["flag_failed"].fillna(False).to_numpy(dtype=bool)


def empty_frame() -> pd.DataFrame:
    return arrow_schema().empty_table().to_pandas()


def conform(df: pd.DataFrame, columns=COLUMNS) -> pd.DataFrame:
    """Columns in schema order with schema types (raises on a missing column; columns added
    after version 1 get their `COLUMN_DEFAULTS` in rows that predate them)."""
    if columns is COLUMNS:
        absent = {c: v for c, v in COLUMN_DEFAULTS.items() if c not in df.columns}
        df = df.assign(**absent) if absent else df
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LatprofError(f"rows are missing columns: {', '.join(missing)}")
    table = pa.Table.from_pandas(df[list(columns)], schema=arrow_schema(columns), preserve_index=False)
    return table.to_pandas()


def upsert(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Rows of `new` replace rows of `old` with the same key; the result is sorted by key."""
    both = pd.concat([conform(old), conform(new)], ignore_index=True) if len(old) else conform(new)
    both = both.drop_duplicates(subset=list(KEY_FIELDS), keep="last")
    return both.sort_values(list(KEY_FIELDS), kind="stable").reset_index(drop=True)


def content_hash(df: pd.DataFrame, columns=COLUMNS) -> str:
    """sha256 over the rows in key order; recorded in the metadata and checked on read.
    `columns`: an older schema version's columns, to check a file before upgrading it."""
    ordered = conform(df, columns).sort_values(list(KEY_FIELDS), kind="stable").reset_index(drop=True)
    h = hashlib.sha256()
    h.update(",".join(ordered.columns).encode())
    h.update(pd.util.hash_pandas_object(ordered, index=False).values.tobytes())
    return "sha256:" + h.hexdigest()


def write(path: str | Path, table: LatencyTable) -> None:
    """Atomic write: a temporary file in the same folder, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = conform(table.df)
    meta = dict(table.meta)
    meta["schema_version"] = SCHEMA_VERSION
    meta["updated_at"] = now_iso()
    meta.setdefault("created_at", meta["updated_at"])
    meta["rows"] = len(df)
    meta["content_hash"] = content_hash(df)
    arrow = pa.Table.from_pandas(df, schema=arrow_schema(), preserve_index=False)
    arrow = arrow.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True, default=str).encode(),
                                           b"schema_version": str(SCHEMA_VERSION).encode()})
    with atomic_file(path, ".tmp") as f:
        pq.write_table(arrow, f)
    table.meta = meta


def read(path: str | Path, *, check_hash: bool = True) -> LatencyTable:
    """Read and validate a table; every problem is a `LatprofError` that says what to do.

    The metadata is checked against `META_SCHEMA` before anything uses it, and the rows against
    the content hash it states. A table without a content hash is refused (its rows cannot be
    checked); `check_hash=False` skips both hash checks (`tables validate --rehash` adopts such
    a file on purpose)."""
    path = Path(path)
    if not path.exists():
        raise LatprofError(f"table {path} does not exist; measure one with `latprof sweep --out {path} ...`")
    arrow, meta = read_parquet(path)
    check_version(meta.get("schema_version"), path)
    check_meta(meta, path, need_hash=check_hash)
    df = _to_pandas(arrow, path)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise LatprofError(f"{path} lacks the columns {', '.join(missing)} that schema version "
                           f"{SCHEMA_VERSION} requires; the file was damaged or edited. Re-measure it.")
    try:
        df = conform(df)
    except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
        raise LatprofError(f"{path}: a column does not have its schema type ({short(exc)}); the file was "
                           "damaged or edited. Fetch or measure it again.") from None
    if check_hash and content_hash(df) != meta["content_hash"]:
        raise LatprofError(f"{path}: the rows do not match the content hash in its metadata "
                           "(edited or corrupted after it was written). Fetch or measure it again.")
    return LatencyTable(df, meta)


def _to_pandas(arrow: pa.Table, path) -> pd.DataFrame:
    try:
        return arrow.to_pandas()
    except (pa.ArrowException, ValueError, TypeError, OverflowError, MemoryError) as exc:
        raise LatprofError(f"{path}: the rows cannot be decoded ({short(exc)}); the file is damaged. "
                           "Fetch or measure it again.") from None


def read_parquet(path: str | Path, what: str = "latprof table") -> tuple[pa.Table, dict]:
    """The one reader of latprof Parquet files (raw tables, step tables): the rows and the
    `latprof` metadata, with no version, column or hash checks."""
    path = Path(path)
    if not path.is_file():
        raise LatprofError(f"{path} is not a file" if path.exists() else f"{what} {path} does not exist")
    try:
        arrow = pq.read_table(path)
    except PermissionError as exc:
        raise LatprofError(os_error_message(exc, "read", path)) from None
    except (pa.ArrowException, OSError, ValueError, MemoryError) as exc:
        raise LatprofError(f"{path} is not a readable Parquet file ({short(exc)}); it may be truncated or "
                           f"not a {what}. Measure it again, or fetch it again.") from None
    raw_meta = arrow.schema.metadata or {}
    if META_KEY not in raw_meta:
        raise LatprofError(f"{path} is a Parquet file but not a {what} (no `latprof` metadata)")
    try:
        meta = json.loads(raw_meta[META_KEY])
    except (ValueError, RecursionError):
        raise LatprofError(f"{path}: the latprof metadata is not valid JSON; the file is damaged") from None
    if not isinstance(meta, dict):
        raise LatprofError(f"{path}: the latprof metadata is not a JSON object; the file is damaged")
    return arrow, meta


def read_raw(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """Rows and metadata of a table file without the version, column or hash checks (upgrades)."""
    arrow, meta = read_parquet(path)
    return _to_pandas(arrow, path), meta


def file_schema_version(path: str | Path) -> int | None:
    """The schema version a file's metadata states, or None when it states none readable."""
    try:
        meta = json.loads((pq.read_schema(path).metadata or {})[META_KEY])
        version = meta["schema_version"]
    except (pa.ArrowException, OSError, KeyError, ValueError, TypeError, RecursionError, MemoryError):
        return None
    return version if type(version) is int else None


def file_rows(path: str | Path) -> int | None:
    """Rows a Parquet file holds, from its footer; None when it cannot be read."""
    try:
        return int(pq.read_metadata(path).num_rows)
    except (pa.ArrowException, OSError, ValueError, MemoryError):
        return None


def context(table: LatencyTable, batch=None, dtype=None, backend=None, layout=None, tile=None) -> Context:
    """The one (batch, dtype, layout, backend, tile) combination of `table` asked for, or its only one.
    The one place that checks a table holds the rows a command needs."""
    combos = table.df[["batch", "dtype", "layout", "backend", "tile"]].drop_duplicates()
    for col, want in (("batch", batch), ("dtype", dtype), ("backend", backend), ("layout", layout), ("tile", tile)):
        if want is not None:
            combos = combos[combos[col] == want]
    if combos.empty:
        asked = {k: v for k, v in dict(batch=batch, dtype=dtype, backend=backend, layout=layout).items() if v}
        have = table.df[["batch", "dtype", "layout", "backend"]].drop_duplicates().to_dict("records")
        raise LatprofError(f"the table holds no rows for {asked}; it holds {have}. Measure them with "
                           f"`latprof sweep --model MODEL --batch B --dtype D`, or pick one of those")
    if len(combos) > 1:
        options = "; ".join(f"--batch {r.batch} --dtype {r.dtype} --backend {r.backend}" + (
            f" --tile {r.tile}" if r.tile else "") for r in combos.itertuples())
        raise LatprofError(f"the table holds several batch/dtype/backend combinations; choose one: {options}")
    r = combos.iloc[0]
    return Context(int(r["batch"]), str(r["dtype"]), str(r["layout"]), str(r["backend"]), str(r["tile"]))


def check_version(version, path, current: int | None = None) -> None:
    """The file's `schema_version` must be an integer equal to `current` (default: the raw
    table's `SCHEMA_VERSION`; step tables pass theirs)."""
    raw = current is None
    current = SCHEMA_VERSION if raw else current
    if version is None:
        raise LatprofError(f"{path} has no schema_version in its metadata; it is not a latprof table")
    if type(version) is not int:
        raise LatprofError(f"{path}: schema_version {short(repr(version), 40)} is not an integer; "
                           "the file is damaged. Fetch or measure it again.")
    if version > current:
        raise LatprofError(f"{path} has schema version {short(str(version), 40)}, newer than this latprof "
                           f"understands ({current}). Upgrade latprof: `pip install -U latprof`.")
    if version < current:
        fix = f"Convert it with `latprof tables upgrade {path}`." if raw else "Make it again (`latprof steps`)."
        raise LatprofError(f"{path} has schema version {version}, older than this latprof's ({current}). {fix}")


def validate(table: LatencyTable) -> list[str]:
    """Problems in a table that reads fine: duplicate keys, impossible values, missing provenance."""
    problems = []
    df = table.df.assign(**{c: v for c, v in COLUMN_DEFAULTS.items() if c not in table.df.columns})
    dups = int(df.duplicated(subset=list(KEY_FIELDS)).sum())
    if dups:
        problems.append(f"{dups} rows repeat a key")
    failed = failed_rows(df)
    if (df.loc[failed, "error"].fillna("") == "").any():
        problems.append("some rows flagged failed give no error")
    df = df[~failed]  # a failed shape has no latency
    for col in ("latency_us_p50", "latency_norm_us_p50"):
        bad = int((~(df[col] > 0)).sum())
        if bad:
            problems.append(f"{bad} rows have {col} <= 0 or missing")
    order = (df["latency_us_p25"] <= df["latency_us_p50"]) & (df["latency_us_p50"] <= df["latency_us_p75"])
    if not order.all():
        problems.append(f"{int((~order).sum())} rows have quantiles out of order")
    if (df["n_samples"] < 1).any():
        problems.append("some rows have no samples")
    problems += [f"metadata: {p}" for p in meta_problems(table.meta)]
    for key in ("device", "versions", "protocol", "host"):
        if key not in table.meta:
            problems.append(f"metadata lacks `{key}`")
    return problems


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- provenance: device identity and software versions --------------------------------------

#: Software whose version can move latencies; compared between a table and the running process.
SOFTWARE = ("torch", "cuda", "cudnn", "triton")


def same_device(a: dict, b: dict) -> bool:
    """Whether two tables' metadata (or their `device` dicts) name one device: the one identity
    check (kind and slug) that the store, merge, request and prune use."""
    a, b = a.get("device", a) or {}, b.get("device", b) or {}
    return (a.get("kind"), a.get("slug")) == (b.get("kind"), b.get("slug"))


def version_warnings(meta: dict, running: dict) -> list[str]:
    """One line per software version that differs between a table's measurement and `running`
    (`measure.device.software_versions`)."""
    recorded = meta.get("versions")
    if not recorded:
        return ["the table records no software versions; it cannot be checked against this machine's"]
    out = []
    for name in SOFTWARE:
        a, b = recorded.get(name), running.get(name)
        if str(a) != str(b):
            out.append(f"{name}: the table was measured with {a or 'none'}, this machine runs {b or 'none'}; "
                       "latencies under this machine's software may differ")
    return out


# --- atomic files -------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_file(path: str | Path, suffix: str = ".tmp"):
    """The one atomic write: a binary file written beside `path` and renamed over it only once
    complete and fsync'ed; an exception (or a kill) leaves `path` as it was. Opened with mode "x",
    the file gets the umask's permissions (a file meant to be shared), not mkstemp's 0600.
    An OS error (permission, read-only, not a folder, no space) is a `LatprofError` naming `path`."""
    path = Path(path)
    tmp = str(path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}"))
    try:
        with os_errors("write", path):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "xb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)
