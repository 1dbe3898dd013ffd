"""Why latprof's whole-model ratios read higher than a plain loop's in bfloat16: the same pruned
model over its original, timed by `measure_session` (interleaved with the float32 reference conv)
and by `bench/verify_saved.py`'s plain loop, each with the thread pinned to one core and not.

    python bench/probes/bf16_ratio.py out/demo/pruned/pruned.pt vgg16_cifar10 8 [bfloat16 nhwc]
"""

import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from verify_saved import time_models  # noqa: E402

from latprof import models  # noqa: E402
from latprof.measure.device import cpu_device  # noqa: E402
from latprof.measure.modeltime import measure_session  # noqa: E402
from latprof.measure.timing import Clock, Protocol  # noqa: E402

pruned_path, model, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
dtype, layout = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else ("bfloat16", "nhwc")
dt = {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
orig, size = models.load(model)
pruned = torch.load(pruned_path, weights_only=False)
all_cores = os.sched_getaffinity(0)
for session in range(2):
    for pin in (True, False):
        with Clock(1, pin=pin) as clock:
            s = measure_session([orig, pruned], size, batch, dtype, cpu_device(), clock, Protocol.quick(),
                                layout=layout)
            latprof_ratio = float(np.median(s.raw[1] / s.raw[0]))
            nets = {"o": orig.eval().to(dt, memory_format=fmt), "p": pruned.eval().to(dt, memory_format=fmt)}
            x = torch.randn(batch, *size).to(dt).contiguous(memory_format=fmt)
            got = time_models(nets, x, 11, 3)
            plain_ratio = float(np.median(np.array(got["p"]) / np.array(got["o"])))
        os.sched_setaffinity(0, all_cores)
        print(f"session {session} pin={pin}: measure_session {latprof_ratio:.4f}, plain loop {plain_ratio:.4f} "
              f"({latprof_ratio / plain_ratio - 1:+.1%})", flush=True)
