"""latprof's whole-model session against a plain loop, in one fresh process: a saved pruned model
over a freshly built original, timed three times each way, alternating (float32, one thread).
Run it twice to see how far two processes read apart; the pair's report says what the prune
process read.

    python bench/probes/session_vs_loop.py 3,64,64 densenet121 OUT [BATCH]

(OUT: a `latprof prune --out` folder holding pruned.pt, and prune.json when --json was given).
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from verify_saved import settle_malloc, time_models  # noqa: E402

from latprof import models  # noqa: E402
from latprof.measure.device import cpu_device  # noqa: E402
from latprof.measure.modeltime import measure_session  # noqa: E402
from latprof.measure.timing import Clock, Protocol  # noqa: E402

size = tuple(int(v) for v in sys.argv[1].split(","))
model, out = sys.argv[2], Path(sys.argv[3])
batch = int(sys.argv[4]) if len(sys.argv) > 4 else 1
settle_malloc()
torch.set_num_threads(1)
orig, _ = models.load(model, size)
pruned = torch.load(out / "pruned.pt", weights_only=False)
if (out / "prune.json").exists():
    rep = json.loads((out / "prune.json").read_text())["pruned"]
    print(f"report {rep['measured_ratio']:.4f}, its sessions {rep.get('session_ratios')}")
for i in range(3):
    with Clock(1, pin=True) as clock:
        s = measure_session([orig, orig, pruned], size, batch, "float32", cpu_device(), clock, Protocol.quick(),
                            ratio_se=(2, 0.01))
    session = float(np.median(s.raw[2] / np.mean(s.raw[:2], axis=0)))
    got = time_models({"o": orig.eval(), "p": pruned.eval()}, torch.randn(batch, *size), 11, 3)
    plain = float(np.median(np.array(got["p"]) / np.array(got["o"])))
    print(f"{i}: session {session:.4f} ({len(s.raw[0])} rounds), plain loop {plain:.4f} ({session / plain - 1:+.1%})",
          flush=True)
