"""The placement figure of docs/protocol.md ("Placement"): one conv (c_in 128 -> c_out, 16x16,
batch 8, one thread) allocated afresh 6 times in one process, the instances timed interleaved
over 15 rounds; prints each instance's median and their spread. Run it several times for the
spread between processes.

    python bench/probes/placement.py 100
"""

import sys

import numpy as np
import time
import torch

torch.set_num_threads(1)
cout = int(sys.argv[1]) if len(sys.argv) > 1 else 100
keep, insts = [], []
for _ in range(6):
    keep.append(torch.empty(int(np.random.randint(1, 5000)) * 64))   # vary where the next tensors land
    insts.append((torch.randn(8, 128, 16, 16), torch.nn.Conv2d(128, cout, 3, padding=1).eval()))
res = [[] for _ in insts]
with torch.inference_mode():
    for x, c in insts:
        for _ in range(5):
            c(x)
    for _ in range(15):
        for i in np.random.permutation(len(insts)):
            x, c = insts[i]
            t = time.perf_counter_ns()
            c(x)
            res[i].append((time.perf_counter_ns() - t) / 1e6)
med = [float(np.median(r)) for r in res]
print(f"c_out {cout}: instance medians {np.round(med, 3)} ms, spread {max(med) / min(med) - 1:.1%}")
