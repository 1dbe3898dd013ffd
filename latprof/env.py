"""Every LATPROF_* environment variable is read here and nowhere else.

Read lazily (at call time, not import time) so tests and sub-processes can set them.
"""

from __future__ import annotations

import os
from pathlib import Path

from latprof.errors import LatprofError


def tables_dir() -> Path:
    """Where `latprof sweep` writes tables when no --out is given (LATPROF_TABLES, default ./tables)."""
    return Path(os.environ.get("LATPROF_TABLES", "tables"))


def cache_dir() -> Path:
    """Local cache for tables read from URLs (LATPROF_CACHE, default ~/.cache/latprof)."""
    default = Path.home() / ".cache" / "latprof"
    return Path(os.environ.get("LATPROF_CACHE", str(default)))


#: CPU threads used when neither --threads nor LATPROF_THREADS says otherwise. One thread:
#: measured on this project's shared 2-core machines, the same 64 convs swept twice at 2
#: threads differed by a median 23% (OpenMP threads wait on each other whenever any other
#: process runs) against 7% at 1 thread. Profile multi-threaded inference with --threads N.
DEFAULT_CPU_THREADS = 1


def cpu_threads() -> int:
    """Thread count for CPU timing (LATPROF_THREADS, default `DEFAULT_CPU_THREADS`); recorded in the table."""
    raw = os.environ.get("LATPROF_THREADS")
    if raw is None or raw == "":
        return DEFAULT_CPU_THREADS
    try:
        value = int(raw)
    except ValueError:
        raise LatprofError(f"LATPROF_THREADS must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise LatprofError(f"LATPROF_THREADS must be a positive integer, got {raw!r}")
    return value


def quick_protocol() -> bool:
    """LATPROF_QUICK=1 shortens the timing protocol (fewer samples, smaller budgets): tests and demos."""
    return os.environ.get("LATPROF_QUICK", "") not in ("", "0", "false")
