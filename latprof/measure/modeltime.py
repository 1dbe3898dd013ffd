"""Whole models timed as the sweeps time shapes: warmed-up copies on the table's device, dtype
and layout, sampled in interleaved rounds with the drift reference (`scheduler.interleaved_round`)
and normalised to the table's baseline. `latprof prune` calibrates and checks with this."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from latprof.measure import backends
from latprof.measure.device import Device
from latprof.measure.scheduler import _Shape, interleaved_round
from latprof.measure.timing import Clock, Protocol, Reference, Stats, summarize


@dataclass
class Session:
    """One interleaved timing session of whole models: each model's drift-normalised `Stats` (us)
    and its raw samples (us), one per round in round order, so that two models' samples of the
    same round can be divided (the ratio cancels the machine's speed in that round)."""

    stats: list[Stats]
    raw: list[np.ndarray]

    def ratios(self, to: int = 0) -> list[np.ndarray]:
        """Each model's per-round latency over model `to`'s in the same round."""
        base = self.raw[to]
        return [r / base for r in self.raw]


def measure_session(models: list[nn.Module], input_size, batch: int, dtype: str, device: Device, clock: Clock,
                    protocol: Protocol, rounds: int | None = None, seed: int = 0,
                    baseline_us: float | None = None, layout: str = "nchw",
                    graphs: bool | Sequence[bool] = False, ratio_se: tuple[int, float] | None = None) -> Session:
    """Time each model's forward pass at `batch` in interleaved rounds with the reference
    (`interleaved_round`, as the sweeps are); every model is sampled once per round, warm: one
    untimed call right before its sample, as a model serving requests runs back to back. (Cold,
    each sample right after another model's, a pruned VGG-16 read 3-5% slower next to the
    original than next to models of its own size: the original's 59 MB of weights had pushed its
    own out of the caches.)

    The models are timed as copies moved to the device, dtype and layout (NHWC: channels_last)
    of the table: the callers' models stay where they were. `baseline_us`: the reference
    latency to normalise to; pass the table's (`meta["reference"]["baseline_us"]`) so that
    measurements taken in different calls, and the table's own rows, are on one scale.
    Default: this call's median reference reading. `graphs`: time a model (all, or those whose
    entry is True) as the replay of a CUDA graph captured after its warm-up (`CudaClock.graphed`)
    instead of eager calls; the same model may be passed twice, eager and graphed.
    `ratio_se` = (k, se): after the rounds, go on in steps of `MORE_ROUNDS` (at most
    `MAX_SESSION_ROUNDS` in all) until every model's per-round ratio to the mean of the first k
    has a relative standard error of its median under `se` (`ratio_rel_se`)."""
    dt = backends.DTYPES[dtype]
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    x = torch.randn(batch, *input_size).to(device.torch_device, dt).contiguous(memory_format=fmt)
    items = []
    graphed = [graphs] * len(models) if isinstance(graphs, bool) else list(graphs)
    if len(graphed) != len(models):
        raise ValueError(f"internal: {len(graphed)} graph flags for {len(models)} models")
    for m, graph in zip(models, graphed):
        m = copy.deepcopy(m).to(device.torch_device, dt, memory_format=fmt).eval()

        def run(m=m):
            with torch.inference_mode():
                return m(x)
        if graph:
            run = clock.graphed(run)
        reps = clock.warmup(run, protocol.warmup_s * 3, protocol.min_sample_s)
        items.append(_Shape(None, run, reps, prime=True))
    label, ref_fn = backends.reference_runner(device, dtype)
    ref = Reference(ref_fn, clock, label)
    rng = np.random.default_rng(seed)
    ref.read()
    last_ref = clock.now()
    done = 0
    for _ in range(rounds or max(protocol.min_samples * 2, 15)):
        last_ref = interleaved_round(items, clock, ref, rng, protocol.ref_interval_s, last_ref)
        done += 1
    while ratio_se is not None and done < MAX_SESSION_ROUNDS and ratio_rel_se(items, ratio_se[0]) > ratio_se[1]:
        for _ in range(min(MORE_ROUNDS, MAX_SESSION_ROUNDS - done)):
            last_ref = interleaved_round(items, clock, ref, rng, protocol.ref_interval_s, last_ref)
            done += 1
    base = baseline_us or ref.baseline()
    stats = [summarize(np.asarray(it.samples) * base / ref.at(it.times)) for it in items]
    return Session(stats, [np.asarray(it.samples, dtype=float) for it in items])


#: Rounds added at a time, and the most a session runs, when it goes on until its ratios are
#: known (`ratio_se`). Measured: in bfloat16 (vgg16_cifar10, batch 8, AMX) four sessions of 15
#: rounds gave a pruned model's ratio to its original as 0.629-0.713 (13% apart), of 45 rounds
#: 0.689-0.704 (2%); in float32 15 rounds were within about 2%.
MORE_ROUNDS = 10
MAX_SESSION_ROUNDS = 60


def ratio_rel_se(items, k: int) -> float:
    """The largest relative standard error of a median per-round ratio (1.25 sd / sqrt(n) / median)
    of every item after the first k over the mean of those k, from the rounds sampled so far."""
    base = np.mean([np.asarray(it.samples, dtype=float) for it in items[:k]], axis=0)
    worst = 0.0
    for it in items[k:]:
        r = np.asarray(it.samples, dtype=float) / base
        worst = max(worst, 1.2533 * float(np.std(r)) / np.sqrt(len(r)) / float(np.median(r)))
    return worst


#: Eager time over CUDA-graph time from which a whole model is called launch-bound: at 1.5 a
#: third of its eager latency is the host issuing kernels while the GPU waits, and pruning
#: channels shrinks only the GPU's part (docs/protocol.md, "Whole models on a GPU").
LAUNCH_BOUND_RATIO = 1.5


def eager_over_graph(session: Session, eager: int, graph: int) -> float:
    """Median per-round ratio of model `eager`'s sample over model `graph`'s (the same model timed
    both ways in one session)."""
    return float(np.median(session.raw[eager] / session.raw[graph]))


def measure_models(models: list[nn.Module], input_size, batch: int, dtype: str, device: Device, clock: Clock,
                   protocol: Protocol, rounds: int | None = None, seed: int = 0,
                   baseline_us: float | None = None, layout: str = "nchw", summary: bool = False) -> list:
    """Drift-normalised median latency (us) of each model (`measure_session`); with `summary`,
    each model's `Stats` (quantiles of its normalised samples, in us) instead of the median alone."""
    stats = measure_session(models, input_size, batch, dtype, device, clock, protocol, rounds, seed, baseline_us,
                            layout).stats
    return stats if summary else [s.p50 for s in stats]
