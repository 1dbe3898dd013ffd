"""Whole-model timing for `latprof prune`: every model as a ratio to the original, timed in the
same interleaved rounds (`Timer`)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from latprof.measure import device as devices
from latprof.errors import LatprofError
from latprof.measure.modeltime import LAUNCH_BOUND_RATIO, eager_over_graph, measure_session
from latprof.measure.timing import Clock, Protocol, Stats, summarize
from latprof.spec import Context

#: Copies of the original in every whole-model timing session (`Timer.ratios`).
ORIGINAL_COPIES = 2
#: Relative standard error a session's ratios must reach before it ends (at most
#: `modeltime.MAX_SESSION_ROUNDS` rounds): 1%, a third of the closed loop's `MEASURE_MARGIN`.
RATIO_SE = 0.01
#: Fresh processes the verdict's measurement runs in (`prune --confirm`, `latprof.prune.confirm`):
#: the spread of their medians is the noise the verdict states.
CONFIRM_PROCESSES = 3


@dataclass
class Timer:
    """Whole-model timing on this machine, when it is the table's device, relative to the original.

    Every session times the original model next to the models asked about, and a model's latency
    is its per-round ratio to the original (both sampled in the same round) times the original's
    latency pooled over every session so far (`scale_us`: the median of its drift-normalised
    medians, on the table's scale). Measured on this project's 2-core CPU: the same two models
    timed in two sessions a minute apart read 5-7% apart in absolute terms (and the drift
    reference, a small conv, does not follow whole models), while their ratio moved by 1%; so
    the loop's measurement of a candidate, the final report's and a user's own timing of the saved
    files agree on the ratio, and differ only by how fast the machine was that minute."""

    here: devices.Device
    clock: Clock
    protocol: Protocol
    ctx: Context
    size: tuple[int, int, int]
    baseline_us: float | None
    original: nn.Module | None = None
    sessions_us: list = field(default_factory=list)   # the original's normalised median, each session
    cuda_graphs: bool = False       # time every model as a CUDA graph replay (`prune --cuda-graphs`)

    def ratios(self, nets: list[nn.Module]) -> list[np.ndarray]:
        """Each model's per-round latency over the original's, from one interleaved session. The
        original runs as `ORIGINAL_COPIES` copies and the denominator is their mean in the round.
        With warm samples, one copy and the mean of three gave the same ratios over four sessions
        (`bench/probes/original_copies.py`: 0.567-0.575 and 0.568-0.580); the second copy is
        insurance against one copy's unlucky placement, at the cost of one more original per round.
        The session goes on until every ratio is known to `RATIO_SE` (`modeltime.ratio_rel_se`)."""
        k = ORIGINAL_COPIES
        session = measure_session([self.original] * k + list(nets), self.size, self.ctx.batch, self.ctx.dtype,
                                  self.here, self.clock, self.protocol, baseline_us=self.baseline_us,
                                  layout=self.ctx.layout, graphs=self.cuda_graphs, ratio_se=(k, RATIO_SE))
        self.sessions_us.append(float(np.mean([st.p50 for st in session.stats[:k]])))
        base = np.mean(session.raw[:k], axis=0)
        return [r / base for r in session.raw[k:]]

    def fresh_sessions(self, spec: dict, nets: list[nn.Module], processes: int) -> list[list[np.ndarray]]:
        """Each model's per-round ratios to the original, from one session in each of `processes`
        fresh processes (`latprof.prune.confirm`) timing the models saved to files, as a user
        would time the saved result. `spec`: the prune configuration as a dict (JSON-safe). The
        original's latency in each joins the pool `scale_us` reads."""
        out = []
        with tempfile.TemporaryDirectory(prefix="latprof-confirm-") as tmp:
            files = []
            for i, net in enumerate(nets):
                files.append(str(Path(tmp) / f"model{i}.pt"))
                torch.save(net, files[-1])
            (Path(tmp) / "spec.json").write_text(json.dumps({"cfg": spec, "files": files}, default=str))
            for i in range(processes):
                result = Path(tmp) / f"result{i}.json"
                done = subprocess.run([sys.executable, "-m", "latprof.prune.confirm", str(Path(tmp) / "spec.json"),
                                       str(result)], capture_output=True, text=True)
                if done.returncode != 0:
                    tail = "\n".join(done.stderr.strip().splitlines()[-5:])
                    raise LatprofError(f"timing the pruned model in a fresh process failed:\n{tail}")
                got = json.loads(result.read_text())
                self.sessions_us.append(float(got["original_us"]))
                out.append([np.asarray(r, dtype=float) for r in got["ratios"]])
        return out

    def scale_us(self) -> float:
        return float(np.median(self.sessions_us))

    def measure(self, nets: list[nn.Module], summary: bool = False) -> list:
        """Each model's latency (us, on the pooled original's scale), timed together with the
        original in interleaved rounds (with `summary`: the quantiles, `timing.Stats`)."""
        ratios = self.ratios(nets)
        scale = self.scale_us()
        stats = [scaled(summarize(r), scale) for r in ratios]
        return stats if summary else [st.p50 for st in stats]

    def eager_over_graph(self, nets: list[nn.Module]) -> list[float]:
        """Each model's eager latency over its CUDA-graph latency: both timed in one session, the
        median of the per-round ratios (`modeltime.LAUNCH_BOUND_RATIO` says when it is launch-bound)."""
        session = measure_session([m for net in nets for m in (net, net)], self.size, self.ctx.batch, self.ctx.dtype,
                                  self.here, self.clock, self.protocol, baseline_us=self.baseline_us,
                                  layout=self.ctx.layout, graphs=[False, True] * len(nets))
        return [eager_over_graph(session, 2 * i, 2 * i + 1) for i in range(len(nets))]

    def original_stats(self) -> Stats:
        """The original's latency: its medians over the sessions (us)."""
        return summarize(self.sessions_us)


def scaled(st: Stats, k: float) -> Stats:
    return Stats(st.p10 * k, st.p25 * k, st.p50 * k, st.p75 * k, st.p90 * k, st.min * k, st.mean * k, st.n)


def check_cuda_graphs(wanted: bool, table_device: dict, measuring: bool) -> list[str]:
    """`prune --cuda-graphs`: refused for a CPU table; the warning to report when nothing is
    measured on this machine (the option then changes nothing)."""
    if not wanted:
        return []
    if table_device.get("kind") != "cuda":
        raise LatprofError(f"--cuda-graphs replays whole models as CUDA graphs, but the table was measured on "
                           f"{table_device.get('name') or 'the CPU'}; prune without --cuda-graphs")
    if not measuring:
        return ["--cuda-graphs has no effect: no model is measured on this machine (it is not the table's GPU)"]
    return []


def add_launch_check(report, timer: Timer, nets: dict[str, nn.Module]) -> None:
    """With --cuda-graphs: time the original and the final model eager as well (`eager_over_graph`)
    and record, per model, its graph and eager latency and whether it is launch-bound
    (`modeltime.LAUNCH_BOUND_RATIO`). `nets`: the report's candidate name -> that model."""
    cands = {c.name: c for c in (report.original, report.pruned)}
    report.cuda_graphs = True
    for name, ratio in zip(nets, timer.eager_over_graph(list(nets.values()))):
        graph_ms = cands[name].measured_ms
        report.launch[name] = {"graph_ms": graph_ms, "eager_ms": graph_ms * ratio if graph_ms else None,
                               "eager_over_graph": ratio, "launch_bound": ratio >= LAUNCH_BOUND_RATIO}
