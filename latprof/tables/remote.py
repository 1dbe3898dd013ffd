"""Tables given by URL: downloaded once into a cache (`LATPROF_CACHE`) and verified against
their content hash. Any fsspec URL works (`file://`, `http(s)://`, `s3://`, `gs://`, `hf://`)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import re
import shutil
from pathlib import Path

from latprof import env
from latprof.errors import LatprofError
from latprof.tables import io as tbl

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
    atomically and verified with `table.read` *before* it takes its place in the cache: a
    download that fails the check (truncated, tampered: the rows do not match the content
    hash) is dropped and raises `LatprofError`, and a good copy cached before stays (so
    `refresh=True` never loses it). A cached copy is reused, and re-verified, on every call;
    `refresh=True` downloads again. http(s) goes through
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
        return dest, _download(ref, dest)
    try:
        return dest, tbl.read(dest)
    except LatprofError as exc:
        version = tbl.file_schema_version(dest)
        if version is not None and version != tbl.SCHEMA_VERSION:
            raise LatprofError(f"{ref} (cached as {dest}): {exc}") from None  # intact, only old or new: kept
        dest.unlink(missing_ok=True)
        raise LatprofError(f"{ref} failed verification and was removed from the cache: {exc}") from None


def _download(url: str, dest: Path) -> tbl.LatencyTable:
    """Download into a staging file beside `dest`, verify it, then move it over `dest`."""
    staging = dest.with_name(dest.name + ".new")
    try:
        with tbl.atomic_file(staging, ".part") as out:
            _copy_url(url, out)
        try:
            table = tbl.read(staging)
        except LatprofError as exc:
            version = tbl.file_schema_version(staging)
            if version is not None and version != tbl.SCHEMA_VERSION:
                with tbl.os_errors("cache", dest):
                    staging.replace(dest)  # intact, only of another schema version: cached, and said
                raise LatprofError(f"{url} (cached as {dest}): {exc}") from None
            kept = f"; the copy cached before is kept ({dest})" if dest.exists() else ""
            raise LatprofError(f"{url} failed verification and was not cached{kept}: {exc}") from None
        with tbl.os_errors("cache", dest):
            staging.replace(dest)
        return table
    finally:
        with contextlib.suppress(OSError):
            staging.unlink()


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


