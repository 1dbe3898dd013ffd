"""The glibc malloc figure of docs/protocol.md ("The allocator"): mobilenet_v2 (batch 1, one
thread) timed in a fresh process, model after model, with glibc's default thresholds and with
them fixed as `latprof.measure.cpu.steady_malloc` fixes them.

    python bench/probes/malloc_threshold.py          # default thresholds: slow until they rise
    python bench/probes/malloc_threshold.py fixed    # fixed: steady from the start
"""

import ctypes
import statistics
import sys
import time

import torch

from latprof import models

torch.set_num_threads(1)
if sys.argv[1:] == ["fixed"]:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 32 * 1024 * 1024)   # M_MMAP_THRESHOLD
    libc.mallopt(-1, 1024 * 1024 * 1024)  # M_TRIM_THRESHOLD
x = torch.randn(1, 3, 224, 224)
with torch.inference_mode():
    for seed in (3, 0, 1, 3, 0, 1):
        torch.manual_seed(seed)
        m, _ = models.load("mobilenet_v2")
        m.eval()
        for _ in range(3):
            m(x)
        t = []
        for _ in range(21):
            a = time.perf_counter()
            m(x)
            t.append(time.perf_counter() - a)
        print(f"model {seed}: {statistics.median(t) * 1e3:.2f} ms", flush=True)
