"""Whole models as CUDA graph replays (`latprof prune --cuda-graphs`) without a GPU: the capture
sequence on a simulated runtime, the plumbing from the prune pipeline to the clock, the
launch-bound verdict on simulated models whose eager time includes launch cost; a CPU table is
refused. The real capture and replay carry the `gpu` marker."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
import torch.nn as nn

from latprof.errors import LatprofError
from latprof.measure import backends
from latprof.measure import device as devices
from latprof.measure.device import cpu_device
from latprof.measure.modeltime import LAUNCH_BOUND_RATIO, measure_session
from latprof.measure.timing import GRAPH_WARMUP_CALLS, Clock, CudaClock, Protocol
from latprof.prune import pipeline as pruning
from latprof.prune.report import Candidate, PruneReport
from latprof.prune.timer import Timer, add_launch_check, check_cuda_graphs
from latprof.spec import Context
from simulate import REF_US, ModelClock, SimModel, SimReference
from synthetic import META, model_table

CUDA_META = {**META, "device": {"kind": "cuda", "name": "NVIDIA Synthetic GPU", "slug": "synthetic",
                                "sm_count": 8, "compute_capability": "8.0"}}


# --- the capture sequence on a simulated runtime ------------------------------------------------

class GraphRuntime:
    """The `torch.cuda` surface `CudaClock.graphed` uses, logging which stream each call ran on."""

    def __init__(self):
        self.stream_now, self.log, self.capturing = "default", [], False
        self.device = 0

    # clock basics
    def current_device(self):
        return self.device

    def set_device(self, device):
        self.device = device.index if isinstance(device, torch.device) else int(device)

    def synchronize(self, device=None):
        self.log.append(("sync", self.stream_now))

    # streams and graphs
    def Stream(self):  # noqa: N802 (torch.cuda.Stream)
        runtime = self

        class Stream:
            name = "side"

            def wait_stream(self, other):
                runtime.log.append(("wait", self.name, other.name))
        return Stream()

    def current_stream(self):
        runtime = self

        class Current:
            name = runtime.stream_now

            def wait_stream(self, other):
                runtime.log.append(("wait", self.name, other.name))
        return Current()

    @contextlib.contextmanager
    def stream(self, s):
        saved, self.stream_now = self.stream_now, s.name
        yield
        self.stream_now = saved

    def CUDAGraph(self):  # noqa: N802
        runtime = self

        class Graph:
            captured: list = []

            def replay(self):
                runtime.log.append(("replay", len(self.captured)))
        return Graph()

    @contextlib.contextmanager
    def graph(self, g):
        self.capturing, start = True, len(self.log)
        yield
        self.capturing = False
        g.captured = [e for e in self.log[start:] if e[0] == "call"]

    def call(self):
        self.log.append(("call", "capture" if self.capturing else self.stream_now))


def test_graphed_warms_up_on_a_side_stream_then_captures_once():
    rt = GraphRuntime()
    clock = CudaClock(torch.device("cuda", 0), l2_flush=False, runtime=rt)
    with clock:
        replay = clock.graphed(rt.call)
        calls = [e for e in rt.log if e[0] == "call"]
        assert calls == [("call", "side")] * GRAPH_WARMUP_CALLS + [("call", "capture")]
        side_wait = rt.log.index(("wait", "side", "default"))
        assert side_wait < rt.log.index(("call", "side"))                      # side waits for prior work
        assert rt.log.index(("wait", "default", "side")) < rt.log.index(("call", "capture"))
        before = len(rt.log)
        replay()
        assert rt.log[before:] == [("replay", 1)]                              # one launch, fn not called


def test_a_cpu_clock_has_no_graphs():
    with pytest.raises(RuntimeError, match="CUDA clock"):
        Clock(1).graphed(lambda: None)


# --- simulated whole models: eager = GPU work + launch cost, graph = GPU work ------------------------

class GraphClock(ModelClock):
    """`ModelClock` with graphs: a replayed model reports its GPU time only (`LaunchModel`)."""

    def __init__(self):
        super().__init__(slow=1.0, slow_from_s=1e9)
        self.replaying, self.captures = False, 0

    def graphed(self, fn):
        self.captures += 1

        def replay():
            self.replaying = True
            try:
                return fn()
            finally:
                self.replaying = False
        return replay


class LaunchModel(SimModel):
    def __init__(self, name: str, gpu_us: float, launch_us: float, clock: GraphClock):
        super().__init__(name, gpu_us, clock)
        self.launch_us = launch_us

    def forward(self, x):
        self.clock.ran = (self.name, self.true_us + (0.0 if self.clock.replaying else self.launch_us))
        return x

    def __deepcopy__(self, memo):
        return LaunchModel(self.name, self.true_us, self.launch_us, self.clock)


@pytest.fixture
def graph_timer(monkeypatch):
    clock = GraphClock()
    monkeypatch.setattr(backends, "reference_runner", lambda device, dtype: ("sim reference", SimReference(clock)))
    original = LaunchModel("original", 1000.0, 2000.0, clock)          # launch-bound: eager 3x graph
    t = Timer(cpu_device(), clock, Protocol.quick(), Context(1, "float32", "nchw", "cpu", ""), (3, 4, 4), REF_US,
              original, cuda_graphs=True)
    return t, clock


def test_measure_session_replays_the_models_flagged(graph_timer):
    t, clock = graph_timer
    m = LaunchModel("m", 100.0, 300.0, clock)
    s = measure_session([m, m], (3, 4, 4), 1, "float32", cpu_device(), clock, Protocol.quick(), baseline_us=REF_US,
                        graphs=[False, True])
    assert clock.captures == 1
    assert s.stats[0].p50 == pytest.approx(400.0, rel=0.05) and s.stats[1].p50 == pytest.approx(100.0, rel=0.05)
    with pytest.raises(ValueError, match="graph flags"):
        measure_session([m], (3, 4, 4), 1, "float32", cpu_device(), clock, Protocol.quick(), graphs=[True, False])


def test_with_cuda_graphs_every_session_replays(graph_timer):
    t, clock = graph_timer
    pruned = LaunchModel("pruned", 500.0, 2000.0, clock)
    got = t.measure([pruned])[0]
    assert clock.captures == 2 + 1                                     # two copies of the original, one pruned
    assert got == pytest.approx(500.0, rel=0.05)                       # graph time: 0.5 x the original's 1000


@pytest.mark.parametrize("gpu_us, launch_us, bound", [(1000.0, 2000.0, True), (1000.0, 100.0, False),
                                                      (1000.0, 520.0, True), (1000.0, 480.0, False)])
def test_the_launch_bound_verdict(graph_timer, gpu_us, launch_us, bound):
    t, clock = graph_timer
    t.original = LaunchModel("original", gpu_us, launch_us, clock)
    pruned = LaunchModel("pruned", gpu_us * 0.6, launch_us, clock)
    t.measure([pruned])
    report = PruneReport("m", "gpu", {}, "dp", "l1", 1.0, True, 1.0, 0.0,
                         Candidate("original", {}, None, 0, 0, measured_ms=gpu_us / 1e3),
                         Candidate("latprof (dp)", {}, None, 0, 0, measured_ms=0.6 * gpu_us / 1e3), [], 0.0, 0)
    add_launch_check(report, t, {"original": t.original, "latprof (dp)": pruned})
    assert report.cuda_graphs and set(report.launch) == {"original", "latprof (dp)"}
    orig = report.launch["original"]
    assert orig["eager_over_graph"] == pytest.approx((gpu_us + launch_us) / gpu_us, rel=0.03)
    assert orig["eager_ms"] == pytest.approx((gpu_us + launch_us) / 1e3, rel=0.03)
    assert orig["launch_bound"] is bound
    assert (orig["eager_over_graph"] >= LAUNCH_BOUND_RATIO) is bound
    assert report.launch["latprof (dp)"]["launch_bound"] is ((0.6 * gpu_us + launch_us) / (0.6 * gpu_us) >= 1.5)
    json.dumps(report.to_dict())                                       # the --json report carries it


# --- refusals and the pipeline ------------------------------------------------------------------

def test_cuda_graphs_on_a_cpu_table_is_refused_in_one_line():
    with pytest.raises(LatprofError) as exc:
        check_cuda_graphs(True, META["device"], measuring=True)
    assert "--cuda-graphs" in str(exc.value) and "\n" not in str(exc.value)
    assert check_cuda_graphs(False, META["device"], measuring=True) == []
    assert check_cuda_graphs(True, CUDA_META["device"], measuring=True) == []
    assert "no effect" in check_cuda_graphs(True, CUDA_META["device"], measuring=False)[0]


def test_the_cli_refuses_cuda_graphs_on_a_cpu_table(cli, tmp_path):
    table = model_table(tmp_path / "cpu.parquet", "small_cifar10", every=4, grid=True, input_size=(3, 16, 16))
    r = cli("prune", "small_cifar10", "--table", table, "--target-ratio", "0.7", "--cuda-graphs",
            "--input-size", "3,16,16")
    assert r.exit_code == 1
    assert r.output.strip().count("\n") == 0 and "--cuda-graphs" in r.output and "CPU" in r.output


def test_cuda_graphs_without_measuring_warns(cli, tmp_path):
    table = model_table(tmp_path / "gpu.parquet", "small_cifar10", every=4, grid=True, input_size=(3, 16, 16),
                        meta=CUDA_META)
    r = cli("prune", "small_cifar10", "--table", table, "--target-ratio", "0.7", "--cuda-graphs",
            "--input-size", "3,16,16", "--out", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert "--cuda-graphs has no effect" in r.output


class CpuBackedGpu(devices.Device):
    """A device the pipeline takes for the table's GPU, whose tensors stay on the CPU."""

    @property
    def torch_device(self) -> torch.device:
        return torch.device("cpu")


class CpuGraphClock(Clock):
    """A CPU clock that 'captures' by wrapping the callable, and counts captures."""

    kind = "cuda"

    def __init__(self, *args, **kw):
        super().__init__(1, pin=False, malloc=False)
        self.captures = 0

    def graphed(self, fn):
        self.captures += 1
        return lambda: fn()


def test_prune_with_cuda_graphs_times_replays_and_reports_the_launch_check(cli, tmp_path, monkeypatch):
    """The pipeline on a 'GPU' table of this machine: every whole-model session replays graphs
    (calibration, closed loop, final), the original and the final model are timed eager too, and
    text and --json say so."""
    clocks = []

    def make_clock(device, **kw):
        clocks.append(CpuGraphClock())
        return clocks[-1]
    here = CpuBackedGpu("cuda", CUDA_META["device"]["name"], CUDA_META["device"]["slug"], 0, {})
    monkeypatch.setattr(pruning, "_device_present", lambda table: here)
    monkeypatch.setattr(pruning, "CudaClock", make_clock)
    monkeypatch.setattr(backends, "reference_runner",
                        lambda device, dtype: ("ref", backends.make_runner(backends.REFERENCE_SPEC["cpu"], cpu_device())))
    table = model_table(tmp_path / "gpu.parquet", "small_cifar10", every=4, grid=True, input_size=(3, 16, 16),
                        meta={**CUDA_META, "reference": None})
    # a target every configuration meets (1 s): this is about the timing path, not the search
    r = cli("prune", "small_cifar10", "--table", table, "--target-ms", "1000", "--cuda-graphs", "--quick",
            "--input-size", "3,16,16", "--out", tmp_path / "out", "--json", tmp_path / "r.json", "--confirm", "0")
    assert r.exit_code == 0, r.output
    (clock,) = clocks
    assert clock.captures >= 5 + 2 + 2                # calibration (5 + the original twice) and more
    assert "CUDA graph replays" in r.output and "launch   original: eager" in r.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["cuda_graphs"] is True and set(rep["launch"]) == {"original", rep["pruned"]["name"]}
    for v in rep["launch"].values():
        assert v["graph_ms"] > 0 and v["eager_ms"] > 0 and v["launch_bound"] in (True, False)


# --- on a GPU -----------------------------------------------------------------------------------

@pytest.mark.gpu
def test_a_captured_model_replays_its_eager_output_and_is_not_slower():
    dev = devices.cuda_device(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1)).cuda().eval()
    x = torch.randn(2, 3, 16, 16, device="cuda")
    out = {}

    def run():
        with torch.inference_mode():
            out["y"] = net(x)
            return out["y"]
    with CudaClock(dev.torch_device) as clock:
        want = run().clone()
        replay = clock.graphed(run)
        replay()
        clock.sync()
        torch.testing.assert_close(out["y"], want)
        clock.warmup(run, 0.01, 0.0)
        eager = sorted(clock.sample(run) for _ in range(21))[10]
        graph = sorted(clock.sample(replay) for _ in range(21))[10]
    assert graph <= eager * 1.1
