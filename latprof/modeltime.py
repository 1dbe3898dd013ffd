"""Whole-model latency, measured with the same protocol as the sweeps: interleaved rounds over
the candidate models and the drift reference (so a slow stretch of the machine hits them all)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from latprof import backends
from latprof.device import Device
from latprof.timing import Clock, Protocol, Reference, summarize


def measure_models(models: list[nn.Module], input_size, batch: int, dtype: str, device: Device, clock: Clock,
                   protocol: Protocol, rounds: int | None = None, seed: int = 0,
                   baseline_us: float | None = None) -> list[float]:
    """Drift-normalised median latency (us) of each model's forward pass at `batch`.

    `baseline_us`: the reference latency to normalise to; pass the table's
    (`meta["reference"]["baseline_us"]`) so that measurements taken in different calls, and
    the table's own rows, are on one scale. Default: this call's median reference reading."""
    dt = backends.DTYPES[dtype]
    x = torch.randn(batch, *input_size).to(device.torch_device, dt)
    runs = []
    for m in models:
        m = m.to(device.torch_device, dt).eval()

        def run(m=m):
            with torch.inference_mode():
                return m(x)
        runs.append(run)
    label, ref_fn = backends.reference_runner(device, dtype)
    ref = Reference(ref_fn, clock, label)
    reps = [clock.warmup(r, protocol.warmup_s * 3, protocol.min_sample_s) for r in runs]
    rng = np.random.default_rng(seed)
    n = rounds or max(protocol.min_samples * 2, 15)
    samples = [[] for _ in runs]
    times = [[] for _ in runs]
    for _ in range(n):
        ref.read()
        for i in rng.permutation(len(runs)):
            t0 = clock.now()
            samples[i].append(clock.sample(runs[i], reps[i]))
            times[i].append((t0 + clock.now()) / 2)
    ref.read()
    base = baseline_us or ref.baseline()
    return [summarize(np.asarray(s) * base / ref.at(t)).p50 for s, t in zip(samples, times)]
