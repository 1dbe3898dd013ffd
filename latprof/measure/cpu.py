"""CPU-only settings and provenance for timing: glibc's allocator put in a steady state
(`steady_malloc`), which oneDNN implementation a call ran (`cpu_kernel_names`), and the dtype
this CPU runs convolutions fastest in (`best_dtype`)."""

from __future__ import annotations

import os
from typing import Callable

import torch

#: glibc `mallopt` settings for timing (`steady_malloc`): blocks up to 32 MiB come from the heap,
#: and up to 1 GiB of freed heap is kept rather than returned to the system.
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # malloc.h


def best_dtype(simd_flags) -> tuple[str, str]:
    """The dtype a CPU deployment would run in, and why: bfloat16 where the CPU has bfloat16
    matrix instructions (AMX tiles, or AVX512-BF16 dot products: oneDNN's bf16 convolutions use
    them), else float32. Measured on this project's Xeon with AMX: a 3x3 conv (c_in 128, 16x16,
    batch 8, one thread) ran 4-5x faster in bfloat16 than in float32, with its own staircase."""
    flags = set(simd_flags or ())
    if "amx_bf16" in flags:
        return "bfloat16", "the CPU has AMX bfloat16 tiles (amx_bf16)"
    if "avx512_bf16" in flags:
        return "bfloat16", "the CPU has AVX512-BF16 (avx512_bf16)"
    return "float32", "the CPU has no bfloat16 matrix instructions (amx_bf16, avx512_bf16)"


def steady_malloc() -> str:
    """Put glibc's allocator in the state a long-running process reaches, for the rest of the process.

    glibc serves a large block (128 KiB at first) with a fresh mmap, and raises that threshold
    only as the process frees such blocks; until then every forward pass page-faults its
    activations in. Measured on this project's CPU, one thread: a fresh process ran
    mobilenet_v2 (batch 1) at 16.5-20 ms for its first few models and 14.5 ms once the
    threshold had risen, and with the thresholds fixed at 32 MiB / 1 GiB at 14.3-15.3 ms from the
    start; latprof's own long process and a user's fresh script disagreed by 15% on the
    original's latency before. Fixing them makes a timing independent of what the process did
    before. Returns what was done ("" where the C library is not glibc)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return ""
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1 or mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) != 1:
        return ""
    return f"glibc mmap_threshold={MMAP_THRESHOLD_BYTES} trim_threshold={TRIM_THRESHOLD_BYTES}"


def cpu_kernel_names(fn: Callable[[], object]) -> str:
    """The oneDNN implementations one call of `fn` runs on the CPU, e.g.
    "convolution:brg_conv_fwd:avx10_1_512_amx;reorder:jit:uni" (primitive kind and
    implementation, compute primitives first): which kernel variant oneDNN chose for the shape,
    as `cuda_kernel_names` records cuDNN's. oneDNN writes its verbose lines to the C standard
    output, so file descriptor 1 is pointed at a temporary file for that one call. "" when the
    call ran no oneDNN primitive (torch's own kernels: e.g. a depthwise conv) or verbose mode is
    unavailable. Read once per shape, after its timing (verbose mode is slow)."""
    import sys
    import tempfile

    mkldnn = torch.backends.mkldnn
    if not mkldnn.is_available() or not hasattr(mkldnn, "verbose"):
        return ""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as tmp:
        try:
            os.dup2(tmp.fileno(), 1)
            with mkldnn.verbose(mkldnn.VERBOSE_ON):
                fn()
        except RuntimeError:
            return ""
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    found: dict[str, None] = {}
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) > 6 and parts[0] == "onednn_verbose" and "exec" in parts[1:4] and "cpu" in parts:
            at = parts.index("cpu")
            found[f"{parts[at + 1]}:{parts[at + 2]}"] = None
    names = sorted(found, key=lambda n: (n.startswith("reorder"), n))
    return ";".join(names)[:500]
