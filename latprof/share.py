"""Sharing latency tables between labs: compare, request missing shapes, fetch, check, upgrade.

A lab with a GPU measures `tables/titanrtx.parquet`; a lab without it prunes for that GPU
with the table. This module holds what travels between them:

- `diff_tables`: what two tables (two GPUs, or one GPU before and after a driver update)
  have in common, how their latencies compare, and where the staircase edges moved.
- `request_for_model` / `write_request` / `read_request`: the shapes a model needs that a
  table lacks, as a small JSON file the measuring lab runs with `latprof sweep --request`.
- `resolve_table` / `open_table`: tables given by URL, downloaded once into a cache and
  verified against their content hash.
- `check_compat`: the batch/dtype a pruner needs is in the table; software versions differ.
- `upgrade_table`: convert a table written under an older schema version, in place.
"""

from __future__ import annotations

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

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from latprof import env, models, plan, steps
from latprof import table as tbl
from latprof.errors import LatprofError
from latprof.spec import KEY_FIELDS, ConvSpec
from latprof.stepfit import StepFit, fit_steps

# --- diff ---------------------------------------------------------------------------------

#: A line is compared when both tables measured at least this many of its counts.
MIN_LINE_POINTS = 4
#: Channel fields a line moves along; "c" is a depthwise line (c_in = c_out = groups).
_LINE_AXES = {"c_out": ("c_out",), "c_in": ("c_in",), "c": ("c_in", "c_out", "groups")}
_CHANNELS = ("c_in", "c_out", "groups")
_SOFTWARE = ("torch", "cuda", "cudnn", "triton")


@dataclass(frozen=True)
class LineDiff:
    """One line measured in both tables, fitted on the counts both measured."""

    line: plan.Line                  # base = the line's largest common count; values = common counts
    latency_a_us: tuple[float, ...]
    latency_b_us: tuple[float, ...]
    fit_a: StepFit
    fit_b: StepFit
    only_a: tuple[int, ...]          # edges of A with no edge of B in an overlapping interval
    only_b: tuple[int, ...]

    @property
    def moved(self) -> bool:
        return bool(self.only_a or self.only_b)


@dataclass
class DiffResult:
    """Coverage, latency ratios B/A (drift-normalised medians) and moved edges of two tables."""

    name_a: str
    name_b: str
    device_a: dict
    device_b: dict
    only_a: pd.DataFrame             # key columns of shapes only A holds
    only_b: pd.DataFrame
    common: pd.DataFrame             # key columns + latency_a_us, latency_b_us, ratio
    lines: list[LineDiff] = field(default_factory=list)
    versions: dict = field(default_factory=dict)   # software that differs: name -> (A's, B's)
    ignored: tuple[str, ...] = ()
    fitted: bool = True              # False: lines were not fitted (edges=False)
    rows: tuple[int, int] = (0, 0)   # rows of A and of B

    def ratio_quantile(self, q: float) -> float | None:
        return float(np.quantile(self.common["ratio"], q)) if len(self.common) else None

    @property
    def moved_lines(self) -> list[LineDiff]:
        return [d for d in self.lines if d.moved]

    def summary(self) -> list[str]:
        out = [f"A          {self.name_a} ({self.device_a.get('name')}, {self.rows[0]} rows)",
               f"B          {self.name_b} ({self.device_b.get('name')}, {self.rows[1]} rows)",
               f"coverage   {len(self.common)} shapes in both, {len(self.only_a)} only in A, "
               f"{len(self.only_b)} only in B" + (f" (matched ignoring {', '.join(self.ignored)})"
                                                   if self.ignored else "")]
        if len(self.common):
            out.append(f"ratio B/A  median {self.ratio_quantile(0.5):.3f}, p10 {self.ratio_quantile(0.1):.3f}, "
                       f"p90 {self.ratio_quantile(0.9):.3f} (latency_norm_us_p50)")
        else:
            hint = _no_overlap_hint(self.only_a, self.only_b)
            out.append("ratio B/A  no shape in common" + (f"; {hint}" if hint else ""))
        if not self.fitted:
            out.append("lines      not compared (step fits skipped)")
        else:
            out.append(f"lines      {len(self.lines)} in both (>= {MIN_LINE_POINTS} common counts), "
                       f"{len(self.moved_lines)} with moved edges")
        for d in self.moved_lines[:20]:
            out.append(f"  {d.line.axis} 1..{d.line.full} of {d.line.base.label()}: edges only in A "
                       f"{list(d.only_a)}, only in B {list(d.only_b)}")
        if len(self.moved_lines) > 20:
            out.append(f"  ... and {len(self.moved_lines) - 20} more")
        for name, (a, b) in self.versions.items():
            out.append(f"software   {name}: A {a}, B {b}")
        return out


def diff_tables(a: tbl.LatencyTable, b: tbl.LatencyTable, *, names: tuple[str, str] = ("A", "B"),
                ignore: tuple[str, ...] = (), tolerance: int = 0, edges: bool = True) -> DiffResult:
    """Compare two tables, usually of two devices.

    Shapes are matched on every key field except those in `ignore` (e.g. ("backend",) to
    compare a cudnn table with a triton one). Ratios are B/A of `latency_norm_us_p50`. Lines
    (rows that differ only in the channel count of one axis) with at least `MIN_LINE_POINTS`
    counts in both tables are fitted with `stepfit.fit_steps` on *the counts both measured*,
    so a dense and a sparse table are compared at the same resolution. An edge of A counts as
    also in B when B has an edge whose interval (`StepFit.edge_intervals`) overlaps A's, widened
    by `tolerance` counts; the others are "only in A" (and the other way round). The fits
    dominate the time (about 1 s per 2000-count line); `edges=False` skips them.
    """
    bad = [f for f in ignore if f not in KEY_FIELDS or f in _CHANNELS]
    if bad:
        raise LatprofError(f"cannot ignore {', '.join(bad)}: choose among "
                           f"{', '.join(f for f in KEY_FIELDS if f not in _CHANNELS)}")
    keys = [k for k in KEY_FIELDS if k not in ignore]
    fa, fb = (_diff_frame(t, keys, name) for t, name in ((a, names[0]), (b, names[1])))
    both = fa.merge(fb, on=keys, how="outer", suffixes=("_a", "_b"), indicator=True)
    common = both[both["_merge"] == "both"].drop(columns="_merge").reset_index(drop=True)
    common = common.rename(columns={"lat_a": "latency_a_us", "lat_b": "latency_b_us"})
    common["ratio"] = common["latency_b_us"] / common["latency_a_us"]
    common = common[np.isfinite(common["ratio"]) & (common["ratio"] > 0)].reset_index(drop=True)
    lines = [_line_diff(g, keys, axis, tolerance) for axis, g in _line_groups(common, keys)] if edges else []
    va, vb = a.meta.get("versions") or {}, b.meta.get("versions") or {}
    versions = {k: (va.get(k), vb.get(k)) for k in _SOFTWARE if str(va.get(k)) != str(vb.get(k))}
    return DiffResult(names[0], names[1], a.device, b.device,
                      both.loc[both["_merge"] == "left_only", keys].reset_index(drop=True),
                      both.loc[both["_merge"] == "right_only", keys].reset_index(drop=True),
                      common[keys + ["latency_a_us", "latency_b_us", "ratio", "flag_a", "flag_b"]],
                      lines, versions, tuple(ignore), edges, (len(a.df), len(b.df)))


def _diff_frame(t: tbl.LatencyTable, keys: list[str], name: str) -> pd.DataFrame:
    df = t.df
    out = df[keys + [k for k in KEY_FIELDS if k not in keys]].copy()
    out["lat"] = df["latency_norm_us_p50"].astype(float)
    out["flag"] = (df["flag_noisy"] | df["flag_drift"] | df["flag_throttled"]).astype(bool)
    dups = int(out.duplicated(subset=keys).sum())
    if dups:
        raise LatprofError(f"{name}: {dups} rows share a shape once {', '.join(set(KEY_FIELDS) - set(keys))} "
                           "is ignored (the table holds several of them); ignore fewer fields")
    return out


def _line_groups(common: pd.DataFrame, keys: list[str]):
    """(axis, rows) for every line with enough common counts, rows sorted by channel count."""
    depthwise = (common["groups"] > 1) & (common["groups"] == common["c_in"]) & (common["c_in"] == common["c_out"])
    for axis, moving in _LINE_AXES.items():
        rows = common[depthwise] if axis == "c" else common
        fixed = [k for k in keys if k not in moving]
        for _, g in rows.groupby(fixed, sort=True):
            if len(g) >= MIN_LINE_POINTS:
                yield axis, g.sort_values("c_out" if axis == "c" else axis)


def _line_diff(g: pd.DataFrame, keys: list[str], axis: str, tolerance: int) -> LineDiff:
    col = "c_out" if axis == "c" else axis
    channels = g[col].astype(int).tolist()
    last = g.iloc[-1]  # the largest common count; fields matching ignored are A's
    base = ConvSpec.from_row({k: last[k] if k in keys else last[f"{k}_a"] for k in KEY_FIELDS})
    line = plan.Line(base, axis, tuple(channels))
    fits = []
    for side in ("a", "b"):
        flags = g[f"flag_{side}"].to_numpy(dtype=bool).copy()
        if flags.all():  # every point noisy: fit them anyway, as `steps.fit_line` does
            flags[:] = False
        fits.append(fit_steps(channels, g[f"latency_{side}_us"].to_numpy(float), flagged=flags,
                              noise_rel=steps.FIT_NOISE_REL))
    fa, fb = fits
    return LineDiff(line, tuple(g["latency_a_us"]), tuple(g["latency_b_us"]), fa, fb,
                    _unmatched(fa, fb, tolerance), _unmatched(fb, fa, tolerance))


def _unmatched(x: StepFit, y: StepFit, tol: int) -> tuple[int, ...]:
    return tuple(e for e, (lo, hi) in zip(x.edges, x.edge_intervals)
                 if not any(lo2 - tol <= hi and lo <= hi2 + tol for lo2, hi2 in y.edge_intervals))


def _no_overlap_hint(only_a: pd.DataFrame, only_b: pd.DataFrame) -> str:
    for col in ("backend", "batch", "dtype", "layout", "tile"):
        if col in only_a and col in only_b and len(only_a) and len(only_b):
            va, vb = set(only_a[col]), set(only_b[col])
            if not va & vb:
                return (f"the tables differ in {col} ({', '.join(map(str, sorted(va)))} vs "
                        f"{', '.join(map(str, sorted(vb)))})" + (f"; compare across it with --ignore {col}"
                                                                  if col in ("backend", "tile", "layout") else ""))
    return ""


def plot_diff(result: DiffResult, path: str | Path, max_lines: int = 3) -> Path:
    """PNG: histogram of the B/A ratios, then up to `max_lines` lines (moved ones first) with
    both staircases overlaid and the edges found in only one table marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shown = (result.moved_lines + [d for d in result.lines if not d.moved])[:max_lines]
    fig, axes = plt.subplots(1 + len(shown), 1, figsize=(8, 3.2 * (1 + len(shown))), dpi=100, squeeze=False)
    ax = axes[0][0]
    ratios = result.common["ratio"].to_numpy()
    if len(ratios):
        wide = ratios.max() > 4 * ratios.min()  # log bins only when ratios span more than 4x
        bins = np.geomspace(ratios.min(), ratios.max(), 40) if wide else 40
        ax.hist(ratios, bins=bins, color="tab:blue", alpha=0.8)
        ax.axvline(np.median(ratios), color="tab:red", ls="--", label=f"median {np.median(ratios):.3f}")
        if wide:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no shape in common", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("latency ratio B / A (drift-normalised median)")
    ax.set_ylabel("shapes")
    ax.set_title(f"A = {result.name_a} ({result.device_a.get('name')}), B = {result.name_b} "
                 f"({result.device_b.get('name')})", fontsize=9)
    for d, row in zip(shown, axes[1:]):
        ax = row[0]
        for side, lat, fit, color, marker, ls in (("A", d.latency_a_us, d.fit_a, "tab:blue", "o", "-"),
                                                  ("B", d.latency_b_us, d.fit_b, "tab:orange", "x", "--")):
            ax.scatter(d.line.values, lat, s=12, color=color, marker=marker, label=f"{side} measured", zorder=3)
            for i, seg in enumerate(fit.segments):
                ax.hlines(seg.level, seg.start - 0.5, seg.end + 0.5, color=color, lw=2, ls=ls,
                          label=f"{side} plateaus" if i == 0 else None)
        for e in d.only_a:
            ax.axvline(e, color="tab:blue", ls=":", lw=1)
        for e in d.only_b:
            ax.axvline(e, color="tab:orange", ls=":", lw=1)
        ax.set_xlabel(d.line.axis)
        ax.set_ylabel("latency (us)")
        ax.set_title(f"{d.line.axis} of {d.line.base.label()}: only A {list(d.only_a)}, only B {list(d.only_b)}",
                     fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --- requests -----------------------------------------------------------------------------

REQUEST_VERSION = 1


@dataclass
class Request:
    specs: list[ConvSpec]
    meta: dict


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
    net, size = models.load(model, input_size)
    lines = plan.model_lines(models.conv_layers(net, size), batch=batch, dtype=dtype, layout=layout,
                             backend=backend, tile=tile)
    have = table.keys() if table is not None else set()

    def lacks(spec: ConvSpec) -> bool:
        return tuple(spec.to_row()[k] for k in KEY_FIELDS) not in have

    if missing_lines_only and table is not None:
        index = steps.TableIndex(table)
        lines = [line for line in lines if steps.fit_line(index, line).missing]
    return [s for s in dict.fromkeys(s for line in lines for s in line.specs()) if lacks(s)]


def write_request(path: str | Path, specs: list[ConvSpec], meta: dict) -> Path:
    """JSON `{"latprof_request": 1, "device": ..., ..., "specs": [row, ...]}`, one spec a line;
    `meta["device"]` (the table's device dict, or None) names the device to measure on."""
    path = Path(path)
    head = {"latprof_request": REQUEST_VERSION, "device": meta.get("device"), "created_at": tbl.now_iso(),
            **{k: v for k, v in meta.items() if k not in ("device", "latprof_request", "count", "specs")},
            "count": len(specs)}
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v, default=str)}," for k, v in head.items()]
    lines += [' "specs": [', ",\n".join("  " + json.dumps(s.to_row()) for s in specs), " ]", "}", ""]
    _atomic_write_bytes(path, "\n".join(lines).encode())
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
    return Request(list(dict.fromkeys(specs)), {k: v for k, v in doc.items() if k != "specs"})


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
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(dest, ".part")
    try:
        with open(tmp, "xb") as out:
            _copy_url(url, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
    used = sorted({s.backend for s in req.specs})
    if cfg.backend and used and used != [cfg.backend]:
        raise LatprofError(f"--backend {cfg.backend} disagrees with the request's backend(s) {', '.join(used)}; "
                           "leave out --backend")
    for backend in used:
        backends.check(backend, dev)
    if "triton" in used:
        from latprof.kernels import TileConfig

        for tile in {s.tile for s in req.specs if s.backend == "triton"}:
            TileConfig.parse(tile)
    specs = plan.shard(req.specs, *cfg.shard)
    dtypes = [s.dtype for s in specs]
    out = sweeps.table_path(cfg, dev)
    clock = sweeps.make_clock(dev, cfg)
    deadline = time.monotonic() + cfg.budget_minutes * 60 if cfg.budget_minutes else None
    t0 = time.monotonic()
    with TableStore(out, sweeps.table_meta(dev, clock, cfg.protocol)) as store:
        profiler = Profiler(dev, clock, cfg.protocol, store, dtype=max(set(dtypes), key=dtypes.count) if dtypes
                            else cfg.dtype, host=devices.host_fingerprint(), deadline=deadline,
                            progress=cfg.progress)
        result = profiler.measure(specs, desc=f"request {Path(path).name}")
    return sweeps.SweepSummary(path=out, device=dev, planned=len(specs), measured=result.measured,
                               skipped=result.skipped, left=len(result.left), noisy=result.noisy,
                               drifted=result.drifted, seconds=time.monotonic() - t0, lines=[],
                               mode=f"request {Path(path).name}", line_points=len(specs))


def _temp_name(path: Path, suffix: str) -> str:
    """A fresh name beside `path`; opened with mode "x", it gets the umask's permissions (a file
    meant to be shared), not mkstemp's 0600."""
    return str(path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}"))


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path, ".tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
