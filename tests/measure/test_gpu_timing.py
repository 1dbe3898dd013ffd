"""The CUDA clock (`latprof.measure.timing.CudaClock`) on a simulated asynchronous device: warm-up
bounded in GPU time, events around one call with the L2 flush before it, NVML read during the
timed call, the settings it fixes while entered; kernel names read once per shape, after timing,
with no profiler left on. No GPU needed: `SimGPU` stands in for `torch.cuda`."""

from __future__ import annotations

import math
import os
import sys
import types
from collections import deque

import pytest
import torch

from latprof.measure import scheduler as scheduler
from latprof.measure.device import Device
from latprof.measure.timing import (THROTTLE_REASONS_COUNTED, WARMUP_ESTIMATE_CALLS, WARMUP_MAX_CALLS, CudaClock,
                                    Protocol, cuda_kernel_names)
from latprof.spec import ConvSpec
from latprof.tables import io as tbl
from latprof.tables.store import TableStore
from simulate import SimClock, SimRunner

LAUNCH_S = 5e-6        # host cost of one launch
BUDGET_S = 0.03        # Protocol().warmup_s


class SimGPU:
    """Host and device on one virtual timeline, with the `torch.cuda` calls a clock makes.

    A launch costs the host `launch_s` and returns; the device runs launches back to back in
    order. At most `queue_depth` launches may be unfinished: one more blocks the host until the
    oldest ends (a stream's launch queue). An event is a zero-length entry in the stream: the
    device reaches it when everything queued before it is done."""

    def __init__(self, launch_s: float = LAUNCH_S, queue_depth: int = 1024):
        self.launch_s, self.queue_depth = launch_s, queue_depth
        self.host = 0.0                  # host time, s
        self.free_at = 0.0               # when the device has done everything queued
        self.pending: deque = deque()    # end times of launches not yet finished
        self.device = 1                  # current device (not the clock's, to see it set)
        self.synchronized = 0

    def _retire(self) -> None:
        while self.pending and self.pending[0] <= self.host:
            self.pending.popleft()

    def launch(self, duration_s: float) -> None:
        self._retire()
        if len(self.pending) >= self.queue_depth:
            self.host = self.pending.popleft()
        self.host += self.launch_s
        self.free_at = max(self.host, self.free_at) + duration_s
        self.pending.append(self.free_at)

    def busy(self) -> bool:
        return self.free_at > self.host

    # --- the torch.cuda surface CudaClock uses -------------------------------------------
    def synchronize(self, device=None) -> None:
        self.host = max(self.host, self.free_at)
        self.pending.clear()
        self.synchronized += 1

    def current_device(self) -> int:
        return self.device

    def set_device(self, device) -> None:
        self.device = device.index if isinstance(device, torch.device) else int(device)

    def Event(self, enable_timing: bool = False):  # noqa: N802 (torch.cuda.Event)
        return SimEvent(self)


class SimEvent:
    def __init__(self, gpu: SimGPU):
        self.gpu, self.t = gpu, None

    def record(self) -> None:
        self.t = max(self.gpu.host, self.gpu.free_at)

    def synchronize(self) -> None:
        self.gpu.host = max(self.gpu.host, self.t)
        self.gpu._retire()

    def elapsed_time(self, end: "SimEvent") -> float:
        return (end.t - self.t) * 1e3          # ms, as torch.cuda.Event


class Kernel:
    """A conv on the simulated device: `duration_s` of GPU time per call (`first_s` for the first:
    cuDNN autotuning, Triton compilation)."""

    def __init__(self, gpu: SimGPU, duration_s: float, first_s: float | None = None):
        self.gpu, self.duration_s, self.first_s, self.calls = gpu, duration_s, first_s, 0

    def __call__(self) -> None:
        first = self.calls == 0 and self.first_s is not None
        self.calls += 1
        self.gpu.launch(self.first_s if first else self.duration_s)


class Flush:
    """The L2 flush buffer: zeroing it is one more kernel in the stream."""

    def __init__(self, gpu: SimGPU, duration_s: float):
        self.gpu, self.duration_s = gpu, duration_s

    def zero_(self) -> None:
        self.gpu.launch(self.duration_s)


def sim_clock(gpu: SimGPU, **kw) -> CudaClock:
    return CudaClock(torch.device("cuda", 0), l2_flush=False, runtime=gpu, **kw)


# --- the simulated device ----------------------------------------------------------------

@pytest.mark.parametrize("duration_s, wall_s", [(1e-3, 1.0), (1e-2, 10.0)])
def test_the_simulated_device_reproduces_the_unbounded_host_loop(duration_s, wall_s):
    """Launching until 30 ms of host time pass, then synchronising (the old warm-up), fills the
    launch queue and then waits for ~1024 calls: ~1 s for a 1 ms conv, ~10 s for a 10 ms conv."""
    gpu = SimGPU()
    kernel = Kernel(gpu, duration_s)
    while kernel.calls < 2 or gpu.host < BUDGET_S:
        kernel()
    gpu.synchronize()
    assert wall_s < gpu.host < wall_s * 1.1


# --- warm-up ------------------------------------------------------------------------------

@pytest.mark.parametrize("duration_s", [1e-3, 5e-3, 1e-2])
def test_warmup_is_bounded_in_gpu_time(duration_s):
    gpu = SimGPU()
    kernel = Kernel(gpu, duration_s)
    with sim_clock(gpu) as clock:
        t0 = gpu.host
        reps = clock.warmup(kernel, BUDGET_S, 0.002)
        wall = gpu.host - t0
    assert reps == 1                                          # one call per sample on CUDA
    # the estimate: 5 calls between events, the first one's launch latency included (idle device)
    estimate_s = duration_s + LAUNCH_S / WARMUP_ESTIMATE_CALLS
    assert kernel.calls == 1 + WARMUP_ESTIMATE_CALLS + math.floor(BUDGET_S / estimate_s)
    # GPU time: the first call, the estimate, at most the budget; plus one launch per call
    assert wall <= (1 + WARMUP_ESTIMATE_CALLS) * duration_s + BUDGET_S + kernel.calls * LAUNCH_S + 1e-12
    assert not gpu.busy() and not gpu.pending                 # it ends synchronised
    if duration_s == 5e-3:
        assert wall < 0.2                                      # the smoke test's check of a 5 ms conv


def test_warmup_estimate_leaves_out_a_slow_first_call():
    """cuDNN autotuning or a Triton compile makes the first call slow; the budget is sized from
    the calls after it."""
    gpu = SimGPU()
    kernel = Kernel(gpu, 1e-3, first_s=0.5)
    with sim_clock(gpu) as clock:
        clock.warmup(kernel, BUDGET_S, 0.0)
    assert kernel.calls == 1 + WARMUP_ESTIMATE_CALLS + math.floor(BUDGET_S / (1e-3 + LAUNCH_S / 5))   # 29


def test_warmup_of_a_launch_bound_call_is_capped():
    gpu = SimGPU()
    kernel = Kernel(gpu, 0.0)       # no GPU work: each call costs one launch (5 us)
    with sim_clock(gpu) as clock:
        t0 = gpu.host
        clock.warmup(kernel, BUDGET_S, 0.0)
    assert kernel.calls == 1 + WARMUP_ESTIMATE_CALLS + WARMUP_MAX_CALLS   # 30 ms / 5 us = 6000, capped
    assert gpu.host - t0 < BUDGET_S


def test_warmup_longer_than_the_budget_adds_no_calls():
    gpu = SimGPU()
    kernel = Kernel(gpu, 0.1)
    with sim_clock(gpu) as clock:
        clock.warmup(kernel, BUDGET_S, 0.0)
    assert kernel.calls == 1 + WARMUP_ESTIMATE_CALLS


def test_warmup_outside_with_raises():
    gpu = SimGPU()
    with pytest.raises(RuntimeError, match="inside `with clock:`"):
        sim_clock(gpu).warmup(Kernel(gpu, 1e-3), BUDGET_S, 0.0)


# --- one sample -----------------------------------------------------------------------------

def test_sample_is_the_calls_gpu_time_when_the_flush_precedes_it():
    """The flush runs while the call is launched, so the start event is reached after the
    launch latency is paid: the sample is the kernel alone."""
    gpu = SimGPU()
    kernel = Kernel(gpu, 2e-4)
    with sim_clock(gpu) as clock:
        clock._flush = Flush(gpu, 1e-4)
        assert clock.sample(kernel) == pytest.approx(200.0)
        assert not gpu.busy()                      # the sample waits for its end event


def test_sample_without_the_flush_includes_the_launch_latency():
    gpu = SimGPU()
    kernel = Kernel(gpu, 2e-4)
    with sim_clock(gpu) as clock:
        assert clock.sample(kernel, reps=10) == pytest.approx(200.0 + LAUNCH_S * 1e6)
    assert kernel.calls == 1                       # reps is ignored: one call per sample


# --- settings held while entered ------------------------------------------------------------

@pytest.fixture
def flags():
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = False, True, True
    yield
    cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved


def current_flags():
    return (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)


def test_enter_sets_device_tf32_off_and_benchmark_and_exit_restores(flags):
    gpu = SimGPU()
    with sim_clock(gpu, cudnn_benchmark=True) as clock:
        assert gpu.device == 0
        assert current_flags() == (True, False, False)
        clock.check_entered()
    assert gpu.device == 1
    assert current_flags() == (False, True, True)


def test_benchmark_none_keeps_the_process_setting(flags):
    torch.backends.cudnn.benchmark = True
    with sim_clock(SimGPU()):
        assert current_flags() == (True, False, False)
    assert current_flags() == (True, True, True)


def test_exit_restores_after_an_exception(flags):
    gpu = SimGPU()
    with pytest.raises(KeyError):
        with sim_clock(gpu, cudnn_benchmark=True, tf32=True):
            assert current_flags() == (True, True, True)
            raise KeyError("boom")
    assert gpu.device == 1 and current_flags() == (False, True, True)


# --- NVML during the timed window -----------------------------------------------------------

class NvmlDuringWindow(types.ModuleType):
    """A pynvml whose throttle reasons say whether the simulated device was running a kernel."""

    NVML_CLOCK_SM, NVML_TEMPERATURE_GPU = 1, 0

    class NVMLError(Exception):
        pass

    def __init__(self, gpu: SimGPU, reasons_when_busy: int):
        super().__init__("pynvml")
        self.gpu, self.reasons_when_busy, self.busy_at_read = gpu, reasons_when_busy, []

    def nvmlDeviceGetClockInfo(self, handle, which):  # noqa: N802
        return 1800

    def nvmlDeviceGetTemperature(self, handle, which):  # noqa: N802
        return 61

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):  # noqa: N802
        self.busy_at_read.append(self.gpu.busy())
        return self.reasons_when_busy if self.gpu.busy() else 0x1   # idle when not busy


@pytest.mark.parametrize("reasons, throttled", [(0x40, True), (0x4 | 0x10 | 0x100, False)])
def test_throttle_reasons_are_read_while_the_call_runs(monkeypatch, reasons, throttled):
    gpu = SimGPU()
    nvml = NvmlDuringWindow(gpu, reasons)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    clock = CudaClock(torch.device("cuda", 0), l2_flush=False, nvml_handle="h", runtime=gpu)
    with clock:
        clock.sample(Kernel(gpu, 1e-3))
        state = clock.gpu_state()
    assert nvml.busy_at_read == [True]
    assert state == {"gpu_clock_mhz": 1800.0, "gpu_temp_c": 61.0, "throttled": throttled}
    assert clock.gpu_state() == {}                 # one reading per sample


def test_counted_reasons_are_thermal_power_brake_and_hw_slowdown():
    assert THROTTLE_REASONS_COUNTED == 0x8 | 0x20 | 0x40 | 0x80
    for benign in (0x1, 0x2, 0x4, 0x10, 0x100):
        assert not THROTTLE_REASONS_COUNTED & benign


# --- kernel names ---------------------------------------------------------------------------

@pytest.mark.slow  # the first profiler session of a process takes ~2.5 s
def test_kernel_names_leave_no_profiler_on_and_ask_kineto_to_detach_cupti(monkeypatch):
    from torch.profiler import ProfilerActivity

    monkeypatch.delenv("TEARDOWN_CUPTI", raising=False)
    x, w = torch.randn(1, 4, 8, 8), torch.randn(4, 4, 3, 3)
    names = cuda_kernel_names(lambda: torch.nn.functional.conv2d(x, w), [ProfilerActivity.CPU])
    assert "aten::conv2d" in names.split(";")
    assert not torch.autograd.profiler._is_profiler_enabled
    assert os.environ["TEARDOWN_CUPTI"] == "1"


def test_kernel_names_are_not_read_when_cupti_would_stay_attached(monkeypatch):
    from torch.profiler import ProfilerActivity

    monkeypatch.setenv("TEARDOWN_CUPTI", "0")
    calls = []
    assert cuda_kernel_names(lambda: calls.append(1), [ProfilerActivity.CPU]) == ""
    assert calls == []


class LoggingSimClock(SimClock):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.log = []

    def sample(self, fn, reps: int = 1) -> float:
        self.log.append(("sample", id(fn)))
        return super().sample(fn, reps)


def test_the_profiler_reads_each_shapes_kernels_once_after_its_last_sample(tmp_path, monkeypatch):
    clock = LoggingSimClock(slow=1.0, seed=0)

    def names(run):
        clock.log.append(("names", id(run)))
        return f"kernel_{run.true_us:.0f}"

    monkeypatch.setattr(scheduler, "cuda_kernel_names", names)
    dev = Device("cuda", "Sim GPU", "simgpu", 0)
    specs = [ConvSpec(c_in=8, c_out=c, h=8, w=8, backend="cudnn") for c in (8, 16, 24, 32, 40)]
    runners = {s: SimRunner(100.0 * s.c_out) for s in specs}
    meta = {"device": {"kind": "cuda", "name": dev.name, "slug": dev.slug}, "versions": {}, "protocol": {},
            "host": "sim"}
    protocol = Protocol(warmup_s=0.001, min_samples=5, max_samples=9, ref_interval_s=0.01, window=3)
    with TableStore(tmp_path / "t.parquet", meta) as store:
        prof = scheduler.Profiler(dev, clock, protocol, store, dtype="float32", host="sim", progress=False,
                                  activity=clock.activity(),
                                  make_runner=lambda spec, d: runners[spec], reference=("ref", SimRunner(50.0)))
        prof.measure(specs)
    df = tbl.read(tmp_path / "t.parquet").df
    assert sorted(df["algo"]) == sorted(f"kernel_{100 * s.c_out}" for s in specs)
    for run in runners.values():
        events = [kind for kind, who in clock.log if who == id(run)]
        assert events.count("names") == 1
        assert events[-1] == "names" and events.count("sample") >= protocol.min_samples
