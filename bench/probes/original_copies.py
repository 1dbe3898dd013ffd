"""The figure behind `prune.timer.ORIGINAL_COPIES`: a pruned model's ratio to the original over
several sessions, against one copy of the original and against the mean of three (the copies of
one session agree; a single copy's draw moves every ratio of its session).

    python bench/probes/original_copies.py out/demo/pruned/pruned.pt vgg16_cifar10 8
"""

import sys

import numpy as np
import torch

from latprof import models
from latprof.measure.device import cpu_device
from latprof.measure.modeltime import measure_session
from latprof.measure.timing import Clock, Protocol

pruned_path, model, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
orig, size = models.load(model)
pruned = torch.load(pruned_path, weights_only=False)
with Clock(1, pin=True) as clock:
    for i in range(4):
        s = measure_session([orig, orig, orig, pruned], size, batch, "float32", cpu_device(), clock, Protocol.quick())
        one = float(np.median(s.raw[3] / s.raw[0]))
        three = float(np.median(s.raw[3] / np.mean(s.raw[:3], axis=0)))
        print(f"session {i}: originals {[round(float(np.median(r)) / 1e3, 2) for r in s.raw[:3]]} ms; "
              f"ratio to one copy {one:.4f}, to the mean of three {three:.4f}", flush=True)
