"""Sharing latency tables between labs: compare, request missing shapes, fetch, check, upgrade.

A lab with a GPU measures `tables/titanrtx.parquet`; a lab without it prunes for that GPU
with the table. This module holds what travels between them:

- `diff_tables` (in `latprof.diff`, re-exported): what two tables (two GPUs, or one GPU before and after a driver update)
  have in common, how their latencies compare, and where the staircase edges moved.
- `request_for_model` / `write_request` / `read_request`: the shapes a model needs that a
  table lacks, as a small JSON file the measuring lab runs with `latprof sweep --request`.
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
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from latprof import env, models, plan, steps
from latprof import table as tbl
from latprof.errors import LatprofError
from latprof.spec import KEY_FIELDS, ConvSpec

from latprof.diff import _SOFTWARE, DiffResult, LineDiff, diff_tables, plot_diff  # noqa: F401,E402  (re-exported)

# --- requests -----------------------------------------------------------------------------

#: Format 1 holds shapes; format 2 adds lines to sample sparsely (written only when there are some).
REQUEST_VERSION = 2


@dataclass
class Request:
    specs: list[ConvSpec]
    meta: dict
    lines: list[plan.Line] = field(default_factory=list)   # sampled sparsely by `sweep --request`


def request_for_model(table: tbl.LatencyTable | None, model: str, batch: int, dtype: str, backend: str,
                      layout: str = "nchw", *, tile: str = "", input_size=None,
                      missing_lines_only: bool = False) -> list[ConvSpec]:
    """The shapes of `model`'s sweep lines that `table` lacks (all of them when `table` is None).

    The requirement is the *dense* lines (`plan.model_lines`: every count of c_out and of
    c_in per distinct conv shape), the complete set a pruner could look up. A model sweep
    is sparse by default, so against a sparsely swept table this asks for every count the
    sampler skipped. With `missing_lines_only`, only lines the table cannot fit at all
    (fewer than two counts, or not the layer's own count: `steps`' definition of a missing
    line) are requested, densely. The (c_in, c_out) grid pairs of a sparse sweep are not
    part of a request.
    """
    if missing_lines_only:
        lines = missing_lines(table, model, batch, dtype, backend, layout, tile=tile, input_size=input_size)
    else:
        lines = missing_lines(None, model, batch, dtype, backend, layout, tile=tile, input_size=input_size)
    have = table.keys() if table is not None else set()

    def lacks(spec: ConvSpec) -> bool:
        return tuple(spec.to_row()[k] for k in KEY_FIELDS) not in have

    return [s for s in dict.fromkeys(s for line in lines for s in line.specs()) if lacks(s)]


def missing_lines(table: tbl.LatencyTable | None, model: str, batch: int, dtype: str, backend: str,
                  layout: str = "nchw", *, tile: str = "", input_size=None) -> list[plan.Line]:
    """`model`'s sweep lines that `table` cannot fit (all of them when `table` is None)."""
    net, size = models.load(model, input_size)
    lines = plan.model_lines(models.conv_layers(net, size), batch=batch, dtype=dtype, layout=layout,
                             backend=backend, tile=tile)
    if table is None:
        return lines
    index = steps.TableIndex(table)
    return [line for line in lines if steps.fit_line(index, line).missing]


def write_request(path: str | Path, specs: list[ConvSpec], meta: dict, lines: list[plan.Line] = ()) -> Path:
    """JSON `{"latprof_request": 1, "device": ..., ..., "specs": [row, ...]}`, one spec a line;
    `meta["device"]` (the table's device dict, or None) names the device to measure on. With
    `lines`, format 2: also `"lines": [{"base": row, "axis": "c_out", "values": [...]}, ...]`,
    which `sweep --request` samples sparsely, as a model sweep does."""
    path = Path(path)
    head = {"latprof_request": 2 if lines else 1, "device": meta.get("device"), "created_at": tbl.now_iso(),
            **{k: v for k, v in meta.items() if k not in ("device", "latprof_request", "count", "specs", "lines")},
            "count": len(specs)}
    out = ["{"] + [f" {json.dumps(k)}: {json.dumps(v, default=str)}," for k, v in head.items()]
    if lines:
        out += [' "lines": [', ",\n".join("  " + json.dumps({"base": line.base.to_row(), "axis": line.axis,
                                                             "values": list(line.values)}) for line in lines),
                " ],"]
    out += [' "specs": [', ",\n".join("  " + json.dumps(s.to_row()) for s in specs), " ]", "}", ""]
    _atomic_write_bytes(path, "\n".join(out).encode())
    return path


def load_request(path: str | Path) -> Request:
    """A request file with its metadata; every problem is a `LatprofError`."""
    path = Path(path)
    redo = "make it again with `latprof tables request --model M --batch B --out FILE`"
    if not path.is_file():
        raise LatprofError(f"request file {path} does not exist; {redo}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise LatprofError(f"{path} is not valid JSON ({exc}); the request was damaged: {redo}") from None
    if not isinstance(doc, dict) or "latprof_request" not in doc:
        raise LatprofError(f"{path} is not a latprof request (no `latprof_request` field); {redo}")
    version = doc["latprof_request"]
    if not isinstance(version, int) or version < 1:
        raise LatprofError(f"{path}: latprof_request must be a positive integer, got {version!r}; {redo}")
    if version > REQUEST_VERSION:
        raise LatprofError(f"{path} is a request of format {version}, newer than this latprof reads "
                           f"({REQUEST_VERSION}); upgrade latprof: `pip install -U latprof`")
    rows = doc.get("specs")
    if not isinstance(rows, list):
        raise LatprofError(f"{path}: `specs` must be a list of shapes; {redo}")
    specs = []
    for i, row in enumerate(rows):
        specs.append(_spec_from_request(row, i, path))
    lines = [_line_from_request(item, i, path) for i, item in enumerate(doc.get("lines") or [])]
    return Request(list(dict.fromkeys(specs)), {k: v for k, v in doc.items() if k not in ("specs", "lines")}, lines)


def _line_from_request(item, i: int, path: Path) -> plan.Line:
    where = f"{path}: line #{i + 1}"
    if not isinstance(item, dict) or set(item) != {"base", "axis", "values"}:
        raise LatprofError(f"{where} must be an object with exactly base, axis and values")
    if item["axis"] not in ("c_out", "c_in", "c"):
        raise LatprofError(f"{where}: axis must be c_out, c_in or c, got {item['axis']!r}")
    values = item["values"]
    if (not isinstance(values, list) or len(values) < 2 or not all(type(v) is int and v >= 1 for v in values)
            or values != sorted(set(values))):
        raise LatprofError(f"{where}: values must be at least two ascending distinct counts >= 1")
    line = plan.Line(_spec_from_request(item["base"], i, path), item["axis"], tuple(values))
    if values[-1] != line.full:
        raise LatprofError(f"{where}: the last value ({values[-1]}) must be the base shape's own count ({line.full})")
    return line


def read_request(path: str | Path) -> list[ConvSpec]:
    return load_request(path).specs


def _spec_from_request(row, i: int, path: Path) -> ConvSpec:
    where = f"{path}: spec #{i + 1}"
    if not isinstance(row, dict):
        raise LatprofError(f"{where} is not an object of spec fields")
    unknown = sorted(set(row) - set(KEY_FIELDS))
    if unknown:
        raise LatprofError(f"{where} has unknown fields {', '.join(unknown)}; the fields are {', '.join(KEY_FIELDS)}")
    missing = [k for k in ("c_in", "c_out", "h", "w") if k not in row]
    if missing:
        raise LatprofError(f"{where} lacks {', '.join(missing)}")
    for k, v in row.items():
        want = str if k in ("dtype", "layout", "backend", "tile", "op") else int
        if not isinstance(v, want) or isinstance(v, bool):
            raise LatprofError(f"{where}: {k} must be {'text' if want is str else 'an integer'}, got {v!r}")
    return ConvSpec(**row)  # validates values with its own LatprofError messages


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


# --- measuring a request ------------------------------------------------------------------

def sweep_request(path: str | Path, cfg):
    """`latprof sweep --request FILE`: measure exactly the request's shapes, nothing else.

    Uses `cfg` (a `sweep.SweepConfig`) for the device, output table, protocol, threads,
    budget, shard and progress bar; the shapes, batch, dtype, backend and tile come from the
    request. Runs the profiler the way `sweep.run` does (same table path rule, clock, table
    metadata, resumable store), without the model planner or the step fit.
    """
    from latprof import backends, device as devices, sweep as sweeps
    from latprof.profiler import Profiler
    from latprof.store import TableStore

    if cfg.model or cfg.grid:
        raise LatprofError("--request measures exactly the shapes in the request; leave out --model and the "
                           "grid options (--cin, --cout, ...)")
    req = load_request(path)
    dev = devices.select(cfg.device, cfg.gpu)
    wanted = req.meta.get("device") or {}
    if wanted.get("slug") and (wanted.get("kind"), wanted.get("slug")) != (dev.kind, dev.slug):
        raise LatprofError(f"{path} asks for measurements of {wanted.get('name')!r} but this sweep runs on "
                           f"{dev.name!r}; run it there (`--gpu NAME`), or set \"device\" to null in the file "
                           "if any device will do")
    line_specs = [line.base for line in req.lines]
    used = sorted({s.backend for s in req.specs + line_specs})
    if cfg.backend and used and used != [cfg.backend]:
        raise LatprofError(f"--backend {cfg.backend} disagrees with the request's backend(s) {', '.join(used)}; "
                           "leave out --backend")
    for backend in used:
        backends.check(backend, dev)
    if "triton" in used:
        from latprof.kernels import TileConfig

        for tile in {s.tile for s in req.specs + line_specs if s.backend == "triton"}:
            TileConfig.parse(tile)
    specs, lines = plan.shard(req.specs, *cfg.shard), plan.shard(req.lines, *cfg.shard)
    dtypes = [s.dtype for s in specs + [line.base for line in lines]]
    out = sweeps.table_path(cfg, dev)
    clock = sweeps.make_clock(dev, cfg)
    deadline = time.monotonic() + cfg.budget_minutes * 60 if cfg.budget_minutes else None
    t0 = time.monotonic()
    with TableStore(out, sweeps.table_meta(dev, clock, cfg.protocol)) as store:
        profiler = Profiler(dev, clock, cfg.protocol, store, dtype=max(set(dtypes), key=dtypes.count) if dtypes
                            else cfg.dtype, host=devices.host_fingerprint(), deadline=deadline,
                            progress=cfg.progress)
        result = profiler.measure(specs, desc=f"request {Path(path).name}")
        planned = len(specs)
        if lines and not result.left:
            sampled, points = sweeps.measure_sparse(profiler, store, lines, grid=False)
            sweeps.add_result(result, sampled)
            planned += points
    return sweeps.SweepSummary(path=out, device=dev, planned=planned, measured=result.measured,
                               skipped=result.skipped, left=len(result.left), noisy=result.noisy,
                               drifted=result.drifted, seconds=time.monotonic() - t0, lines=lines,
                               mode=f"request {Path(path).name}" + (f", {len(lines)} lines sparse" if lines else ""),
                               line_points=len(specs) + sum(len(line.values) for line in lines))


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


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    with _atomic_file(path, ".tmp") as f:
        f.write(data)
