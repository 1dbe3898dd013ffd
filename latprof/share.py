"""Sharing latency tables between labs: compare, request missing shapes, fetch, check, upgrade.

A lab with a GPU measures `tables/titanrtx.parquet`; a lab without it prunes for that GPU
with the table. This module holds what travels between them:

- `diff_tables` (in `latprof.diff`, re-exported): what two tables (two GPUs, or one GPU before and after a driver update)
  have in common, how their latencies compare, and where the staircase edges moved.
- request files (in `latprof.request`): the shapes or lines a model needs that a table
  lacks, as a small JSON file the measuring lab runs with `latprof sweep --request`.
- `resolve_table` / `open_table`: tables given by URL, downloaded once into a cache and
  verified against their content hash.
- `check_compat`: the batch/dtype a pruner needs is in the table; software versions differ.
- `upgrade_table`: convert a table written under an older schema version, in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from latprof import env
from latprof import table as tbl
from latprof.errors import LatprofError

from latprof.diff import _SOFTWARE, DiffResult, LineDiff, diff_tables, plot_diff  # noqa: F401,E402  (re-exported)

# --- remote tables and the cache ----------------------------------------------------------

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(ref) -> bool:
    return isinstance(ref, str) and bool(_URL.match(ref))


def cached_path(url: str) -> Path:
    """Where a URL's table is cached: `<cache>/tables/<sha256(url)[:16]>-<file name>`.
    The cache key is the URL alone: a changed file at the same URL needs `refresh=True`."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    name = url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name)[-80:] or "table.parquet"
    return env.cache_dir() / "tables" / f"{digest}-{name}"


def resolve_table(url_or_path, *, refresh: bool = False) -> Path:
    """A local file for a table given by path or URL.

    Local paths pass through unchanged (`table.read` checks them). A URL (`file://`,
    `http(s)://`, `s3://`, `gs://`, `hf://`, anything fsspec knows; `s3fs`, `gcsfs` or
    `huggingface_hub` must be installed for those) is downloaded into `cached_path(url)`
    atomically (temporary file, then rename) and verified with `table.read`; a download
    that fails the check (truncated, tampered: the rows do not match the content hash) is
    removed from the cache and raises `LatprofError`. A cached copy is reused, and
    re-verified, on every call; `refresh=True` downloads again. http(s) goes through
    fsspec when `aiohttp` is installed and through the standard library's `urllib`
    otherwise (same result; proxies from the usual environment variables apply).
    """
    return _resolve(url_or_path, refresh)[0]


def open_table(url_or_path, *, refresh: bool = False) -> tbl.LatencyTable:
    """`table.read` for a path or a URL (read and verified once)."""
    return fetch(url_or_path, refresh=refresh)[1]


def fetch(url_or_path, *, refresh: bool = False) -> tuple[Path, tbl.LatencyTable]:
    """The local file (`resolve_table`) and the verified table read from it."""
    path, table = _resolve(url_or_path, refresh)
    return path, (table if table is not None else tbl.read(path))


def _resolve(ref, refresh: bool) -> tuple[Path, tbl.LatencyTable | None]:
    if not is_url(ref):
        return Path(ref), None
    dest = cached_path(ref)
    if refresh or not dest.exists():
        _download(ref, dest)
    try:
        return dest, tbl.read(dest)
    except LatprofError as exc:
        version = _file_schema_version(dest)
        if version is not None and version != tbl.SCHEMA_VERSION:
            raise LatprofError(f"{ref} (cached as {dest}): {exc}") from None  # intact, only old or new: kept
        dest.unlink(missing_ok=True)
        raise LatprofError(f"{ref} failed verification and was removed from the cache: {exc}") from None


def _download(url: str, dest: Path) -> None:
    with _atomic_file(dest, ".part") as out:
        _copy_url(url, out)


def _have_aiohttp() -> bool:
    return importlib.util.find_spec("aiohttp") is not None


def _copy_url(url: str, out) -> None:
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("http", "https") and not _have_aiohttp():
        import urllib.error
        import urllib.request

        import latprof

        req = urllib.request.Request(url, headers={"User-Agent": f"latprof/{latprof.__version__}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                shutil.copyfileobj(resp, out)
        except urllib.error.HTTPError as exc:
            raise LatprofError(f"{url}: the server answered HTTP {exc.code} {exc.reason}; check the URL") from None
        except (urllib.error.URLError, OSError) as exc:
            raise LatprofError(f"cannot download {url} ({getattr(exc, 'reason', exc)}); check the URL and "
                               "the network (proxies come from http_proxy/https_proxy)") from None
        return
    import fsspec

    try:
        with fsspec.open(url, "rb") as src:
            shutil.copyfileobj(src, out)
    except ImportError as exc:
        raise LatprofError(f"reading {scheme}:// URLs needs an extra package: {exc}") from None
    except FileNotFoundError:
        raise LatprofError(f"{url} does not exist; check the URL") from None
    except ValueError as exc:
        raise LatprofError(f"cannot read {url}: {exc}; give a local path or a file://, http(s)://, s3://, "
                           "gs:// or hf:// URL") from None
    except OSError as exc:
        raise LatprofError(f"cannot download {url} ({exc}); check the URL and your credentials") from None


def _file_schema_version(path: Path) -> int | None:
    try:
        meta = json.loads((pq.read_schema(path).metadata or {})[tbl.META_KEY])
        return int(meta["schema_version"])
    except (pa.ArrowInvalid, OSError, KeyError, ValueError, TypeError):
        return None


# --- compatibility ------------------------------------------------------------------------

def running_versions() -> dict:
    """torch, CUDA, cuDNN and Triton versions of this process (None where absent)."""
    import torch

    from latprof import device as devices

    return {"torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "triton": devices._module_version("triton")}


def version_warnings(table: tbl.LatencyTable, running: dict | None = None) -> list[str]:
    """One line per software version that differs between the table's measurement and here."""
    recorded = table.meta.get("versions")
    if not recorded:
        return ["the table records no software versions; it cannot be checked against this machine's"]
    running = running_versions() if running is None else running
    out = []
    for name in _SOFTWARE:
        a, b = recorded.get(name), running.get(name)
        if str(a) != str(b):
            out.append(f"{name}: the table was measured with {a or 'none'}, this machine runs {b or 'none'}; "
                       "latencies under this machine's software may differ")
    return out


def check_compat(table: tbl.LatencyTable, *, batch: int, dtype: str) -> list[str]:
    """Raise when the table has no rows at `batch`/`dtype`; return version warnings otherwise."""
    df = table.df
    if not ((df["batch"] == batch) & (df["dtype"] == dtype)).any():
        held = df[["batch", "dtype"]].drop_duplicates().sort_values(["dtype", "batch"])
        have = ", ".join(f"batch {r.batch} {r.dtype}" for r in held.itertuples()) or "no rows at all"
        raise LatprofError(f"the table of {table.device.get('name')!r} holds no rows at batch {batch} {dtype} "
                           f"(it holds {have}). Use one of those, or ask for the shapes: `latprof tables "
                           f"request --model MODEL --batch {batch} --dtype {dtype} --table TABLE --out need.json`")
    return version_warnings(table)


# --- schema upgrades ----------------------------------------------------------------------

#: Upgrade steps: UPGRADES[v] turns (rows, metadata) of schema version v into version v + 1.
#: Schema version 1 is the first, so there are none yet; add one per schema change.
UPGRADES: dict[int, Callable[[pd.DataFrame, dict], tuple[pd.DataFrame, dict]]] = {}


def read_raw(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """Rows and metadata of a table file without the version, column or hash checks."""
    path = Path(path)
    if not path.is_file():
        raise LatprofError(f"table {path} does not exist")
    try:
        arrow = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise LatprofError(f"{path} is not a readable Parquet file ({exc}); fetch or measure it again") from None
    try:
        meta = json.loads((arrow.schema.metadata or {})[tbl.META_KEY])
    except (KeyError, ValueError):
        raise LatprofError(f"{path} is not a latprof table (no readable `latprof` metadata)") from None
    return arrow.to_pandas(), meta


def upgrade_table(path: str | Path) -> str:
    """Bring a table to the current schema version in place (atomically) and say what was done.

    The steps `UPGRADES[v]` run in order from the file's version; the result is written with
    the current version and a new content hash (the old version and hash are kept under
    `upgraded_from`). A table at the current version is left untouched; a newer one is refused.
    """
    path = Path(path)
    df, meta = read_raw(path)
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


def _temp_name(path: Path, suffix: str) -> str:
    """A fresh name beside `path`; opened with mode "x", it gets the umask's permissions (a file
    meant to be shared), not mkstemp's 0600."""
    return str(path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}"))


@contextlib.contextmanager
def _atomic_file(path: Path, suffix: str):
    """A binary file written beside `path` and renamed over it only once complete and fsync'ed;
    an exception (or a kill) leaves `path` as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path, suffix)
    try:
        with open(tmp, "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with _atomic_file(path, ".tmp") as f:
        f.write(data)
