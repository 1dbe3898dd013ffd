"""The one timing module: every clock read and every device synchronisation lives here.

Modelled on `triton.testing.do_bench` (warm-up by time budget, L2 flush, CUDA events,
quantiles) and `torch.utils.benchmark` (median and IQR, a named noise threshold).
The interleaved, drift-tracked scheduling that uses these primitives is in `scheduler.py`.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from latprof.measure.activity import CONTENTION_THRESHOLD
from latprof.measure.cpu import steady_malloc

#: (p75 - p25) / p50 of a shape's drift-normalised samples under which sampling stops early
#: (after `min_samples`). 5% is below the smallest CPU step we care about (vector blocks of
#: 8/16 channels in a 64+ channel layer move latency by 6% or more).
NOISE_THRESHOLD_REL_IQR = 0.05

#: Relative standard error of the stored median above which a row is flagged noisy. A shape
#: whose samples stay spread out (this project's shared CPUs: 10-20% IQR from one 0.1 s to
#: the next) is sampled until the budget; its median is still trustworthy if there are enough
#: samples: SE(median) ~ 1.25 * sd / sqrt(n) and sd ~ IQR / 1.35, so SE ~ 0.93 * rel_iqr / sqrt(n).
NOISE_THRESHOLD_MEDIAN_SE = 0.02

#: Relative change (max/min - 1) of the reference workload while one row was being sampled
#: above which the row is flagged `flag_drift`. On this project's CPUs the machine speed
#: switched between two levels 1.74x apart; a 10% swing inside a row is already a fake step.
DRIFT_THRESHOLD = 0.10

#: CUDA L2 flush buffer: larger than the L2 of any current GPU (H100: 50 MB).
L2_FLUSH_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Protocol:
    """Parameters of the measurement protocol; recorded in every table's metadata."""

    warmup_s: float = 0.03          # per shape, before the first sample (cudnn.benchmark picks here)
    min_samples: int = 7            # never stop a shape before this many samples
    max_samples: int = 40           # stop a shape here even if still noisy (then flag it)
    shape_budget_s: float = 1.5     # sampling time per shape before giving up on the threshold
    min_sample_s: float = 0.002     # CPU: repeat the call inside one sample until it lasts this long
    noise_threshold: float = NOISE_THRESHOLD_REL_IQR
    median_se_threshold: float = NOISE_THRESHOLD_MEDIAN_SE
    drift_threshold: float = DRIFT_THRESHOLD
    ref_interval_s: float = 0.2     # time the reference workload at least this often
    window: int = 48                # shapes sampled together in interleaved rounds (each row spans more time)
    remeasure_drifted: int = 0      # times a drift-flagged shape is measured again from scratch
    l2_flush: bool = True           # CUDA only: flush L2 before every timed call
    instances: int = 3              # CPU: fresh allocations of each shape, sampled side by side
    contention_threshold: float = CONTENTION_THRESHOLD   # others' busy CPUs that flag a row
    remeasure_contended: int = 2    # times a contended shape is measured again from scratch
    quiet_wait_s: float = 30.0      # most seconds a sweep waits, in all, for other processes to finish
    pin: bool = True                # CPU, one thread: pin the timing thread to one core
    steady_malloc: bool = True      # CPU: fix glibc malloc's thresholds (`steady_malloc`)

    @classmethod
    def quick(cls) -> "Protocol":
        """A short protocol for tests and demos: same logic, smaller budgets."""
        return cls(warmup_s=0.001, min_samples=5, max_samples=16, shape_budget_s=0.25,
                   min_sample_s=0.0005, ref_interval_s=0.1, remeasure_drifted=0, instances=1,
                   remeasure_contended=1, quiet_wait_s=5.0)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Stats:
    """Summary of one shape's samples, in microseconds."""

    p10: float
    p25: float
    p50: float
    p75: float
    p90: float
    min: float
    mean: float

    n: int = 0

    @property
    def rel_iqr(self) -> float:
        return (self.p75 - self.p25) / self.p50 if self.p50 > 0 else float("inf")

    @property
    def median_rel_se(self) -> float:
        """Relative standard error of the median (normal approximation from the IQR)."""
        return 0.93 * self.rel_iqr / np.sqrt(max(self.n, 1))


def summarize(samples_us) -> Stats:
    a = np.asarray(samples_us, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples to summarise")
    q = np.quantile(a, [0.10, 0.25, 0.50, 0.75, 0.90])
    return Stats(*(float(v) for v in q), min=float(a.min()), mean=float(a.mean()), n=int(a.size))


class Clock:
    """Times calls on one device. `sample(fn, reps)` returns microseconds per call.

    Use it as a context manager: entering sets the process-wide state timing needs (the CPU
    thread count; on CUDA, the current device) and leaving restores what was there, so the
    setting does not leak into what the process does next (training, another clock)."""

    kind = "cpu"

    def __init__(self, threads: int | None = None, pin: bool = False, malloc: bool = True):
        self.threads = threads or torch.get_num_threads()
        self.pin, self.malloc = pin, malloc
        self.malloc_state = ""       # what `steady_malloc` did, once entered
        self._saved: list = []

    def __enter__(self) -> "Clock":
        if self.malloc and not self.malloc_state:
            self.malloc_state = steady_malloc()
        affinity = None
        if self.pin and self.threads == 1 and hasattr(os, "sched_setaffinity"):
            affinity = os.sched_getaffinity(0)
            if len(affinity) > 1:   # the last allowed core: the first takes most interrupts
                os.sched_setaffinity(0, {max(affinity)})
        self._saved.append((torch.get_num_threads(), affinity))
        torch.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc) -> None:
        threads, affinity = self._saved.pop()
        torch.set_num_threads(threads)
        if affinity is not None:
            os.sched_setaffinity(0, affinity)

    def check_entered(self) -> None:
        """Timing outside `with clock:` would run at whatever thread count the process has."""
        if torch.get_num_threads() != self.threads:
            raise RuntimeError(f"internal: the clock times at {self.threads} threads but torch runs "
                               f"{torch.get_num_threads()}; use the clock inside `with clock:`")

    def now(self) -> float:
        """Host time in seconds (for budgets and for placing samples on the drift timeline)."""
        return time.perf_counter()

    def sync(self) -> None:
        """Nothing to wait for on the CPU."""

    def sample(self, fn: Callable[[], object], reps: int = 1) -> float:
        t0 = time.perf_counter_ns()
        for _ in range(reps):
            fn()
        return (time.perf_counter_ns() - t0) / 1e3 / reps

    def warmup(self, fn: Callable[[], object], budget_s: float, min_sample_s: float, min_calls: int = 2) -> int:
        """Run `fn` for `budget_s` (at least `min_calls` times); return the reps per sample so that
        one sample lasts at least `min_sample_s` (timer resolution and call overhead stay small),
        sized by the last warm-up call."""
        self.check_entered()
        calls, t0, last = 0, time.perf_counter(), 0.0
        while calls < min_calls or time.perf_counter() - t0 < budget_s:
            t1 = time.perf_counter()
            fn()
            last = time.perf_counter() - t1
            calls += 1
        self.sync()
        return max(1, int(np.ceil(min_sample_s / max(last, 1e-9))))

    def pause(self, seconds: float) -> None:
        """Do nothing for `seconds` (waiting for another process to finish)."""
        time.sleep(seconds)

    def touch(self, fn: Callable[[], object]) -> None:
        """One untimed call, waited for: a fresh allocation of a shape already warmed up (another
        instance) pages its memory in; the code paths and oneDNN's primitive cache are warm."""
        self.check_entered()
        fn()
        self.sync()

    def gpu_state(self) -> dict:
        return {}

    def graphed(self, fn: Callable[[], object]) -> Callable[[], object]:
        """CUDA graphs exist only on a CUDA clock (`CudaClock.graphed`); callers refuse before."""
        raise RuntimeError("internal: CUDA graph replay needs a CUDA clock")


#: NVML clock-event ("throttle") reasons that slow the GPU down on their own: hardware slowdown,
#: software and hardware thermal slowdown, hardware power brake (nvml.h bit values; pynvml names
#: them nvmlClocksEventReason* / nvmlClocksThrottleReason*). Left out: GPU idle and applications
#: clocks (settings), SW power cap (a board holding its power limit, set much of the time under a
#: sustained load; the recorded SM clock shows its effect), sync boost and display clock: bits
#: that can stay set for a whole sweep and would then flag, hence drop from fits, every row.
THROTTLE_REASONS_COUNTED = 0x8 | 0x20 | 0x40 | 0x80

#: Calls timed together (after one untimed call) to estimate a call's GPU time before the
#: warm-up is sized, as `triton.testing.do_bench` does.
WARMUP_ESTIMATE_CALLS = 5
#: Most warm-up calls after the estimate, whatever it says (a launch-bound call of a few us).
WARMUP_MAX_CALLS = 1000
#: Calls on a side stream before a CUDA graph is captured (as the `torch.cuda.graphs` notes
#: advise): cuDNN autotuning, lazy initialisation and the allocator's first blocks, none of which
#: may happen during capture.
GRAPH_WARMUP_CALLS = 3


class CudaClock(Clock):
    """CUDA events around single calls, L2 flushed before each (as `triton.testing.do_bench`).

    Entering makes the clock's device current and fixes the settings that choose kernels:
    TF32 off by default (a float32 table is IEEE float32), cuDNN autotuning as given (None:
    as the process has it, which `latprof sweep --cudnn-benchmark/--no-cudnn-benchmark` fixes);
    leaving restores them. `runtime` stands in for `torch.cuda` (Event, synchronize,
    current_device, set_device) in tests with a simulated asynchronous device."""

    kind = "cuda"

    def __init__(self, device: torch.device, l2_flush: bool = True, nvml_handle=None, *,
                 cudnn_benchmark: bool | None = None, tf32: bool | None = False, runtime=None):
        self.device = device
        self.threads = torch.get_num_threads()
        self.cudnn_benchmark, self.tf32 = cudnn_benchmark, tf32
        self.cuda = runtime if runtime is not None else torch.cuda
        self._saved = []
        self._flush = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device=device) if l2_flush else None
        self._nvml = nvml_handle
        self._nvml_off: set[str] = set()   # readings NVML refused once: not asked again
        self._state: dict = {}

    def __enter__(self) -> "CudaClock":
        """Events are recorded on the current device: make it this clock's, restore it on exit."""
        from latprof.measure.device import cuda_settings

        settings = cuda_settings(self.cudnn_benchmark, self.tf32)
        self._saved.append((self.cuda.current_device(), settings))
        self.cuda.set_device(self.device)
        settings.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        device, settings = self._saved.pop()
        settings.__exit__(None, None, None)
        self.cuda.set_device(device)

    def check_entered(self) -> None:
        if self.cuda.current_device() != self.device.index:
            raise RuntimeError(f"internal: the clock times {self.device} but the current device is "
                               f"cuda:{self.cuda.current_device()}; use the clock inside `with clock:`")

    def sync(self) -> None:
        self.cuda.synchronize(self.device)

    def _events(self):
        return self.cuda.Event(enable_timing=True), self.cuda.Event(enable_timing=True)

    def sample(self, fn: Callable[[], object], reps: int = 1) -> float:
        """One call between two events, the L2 flush queued before the first (so the flush also
        hides the launch latency: the call is queued while the flush runs). NVML is read after
        the launch and before waiting for it: during the call when it lasts longer than an NVML
        query (tens of us); `gpu_state` returns that reading. `reps` is ignored: the flush must
        precede every timed call."""
        start, end = self._events()
        if self._flush is not None:
            self._flush.zero_()
        start.record()
        fn()
        end.record()
        self._state = self._read_nvml()
        end.synchronize()
        return start.elapsed_time(end) * 1e3

    def warmup(self, fn: Callable[[], object], budget_s: float, min_sample_s: float, min_calls: int = 2) -> int:
        """As `triton.testing.do_bench`: one synchronised call (cuDNN autotuning, Triton
        compilation, allocations), then `WARMUP_ESTIMATE_CALLS` calls timed with events to
        estimate one call's GPU time, then as many calls as fit in `budget_s` of GPU time (at
        most `WARMUP_MAX_CALLS`), synchronised. GPU time spent: the first call + 5 calls +
        at most `budget_s`. (Launching until `budget_s` of *host* time has passed would queue
        about a thousand launches before the host blocks: seconds per shape.) Returns 1: one
        call per sample."""
        self.check_entered()
        fn()
        self.sync()
        start, end = self._events()
        start.record()
        for _ in range(WARMUP_ESTIMATE_CALLS):
            fn()
        end.record()
        end.synchronize()
        per_call_s = start.elapsed_time(end) / 1e3 / WARMUP_ESTIMATE_CALLS
        for _ in range(min(WARMUP_MAX_CALLS, int(budget_s / max(per_call_s, 1e-9)))):
            fn()
        self.sync()
        return 1

    def graphed(self, fn: Callable[[], object]) -> Callable[[], object]:
        """`fn` captured once as a CUDA graph; returns the graph's `replay`: every kernel `fn`
        launches, issued by one launch (whole-model timing without the host's per-kernel launch
        cost, `latprof prune --cuda-graphs`). `fn` runs `GRAPH_WARMUP_CALLS` times on a side stream
        first, then once under capture; replays reuse the tensors `fn` closes over and write its
        outputs into the graph's private memory pool. Kept alive by the returned method."""
        self.check_entered()
        side = self.cuda.Stream()
        side.wait_stream(self.cuda.current_stream())
        with self.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_CALLS):
                fn()
        self.cuda.current_stream().wait_stream(side)
        self.sync()
        graph = self.cuda.CUDAGraph()
        with self.cuda.graph(graph):
            fn()
        self.sync()
        return graph.replay

    def gpu_state(self) -> dict:
        """SM clock, temperature and whether a reason that lowers clocks was set
        (`THROTTLE_REASONS_COUNTED`), read during the last sample; {} without NVML."""
        state, self._state = self._state, {}
        return state

    def _read_nvml(self) -> dict:
        """Each reading NVML refuses (NotSupported on many GeForce boards, a lost GPU) warns once
        and is dropped from then on; the sweep goes on."""
        if self._nvml is None:
            return {}
        import pynvml

        reasons = (getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
                   or pynvml.nvmlDeviceGetCurrentClocksThrottleReasons)
        readings = (
            ("gpu_clock_mhz", lambda h: float(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM))),
            ("gpu_temp_c", lambda h: float(pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU))),
            ("throttled", lambda h: bool(int(reasons(h)) & THROTTLE_REASONS_COUNTED)),
        )
        state = {}
        for key, read in readings:
            if key in self._nvml_off:
                continue
            try:
                state[key] = read(self._nvml)
            except pynvml.NVMLError as exc:
                self._nvml_off.add(key)
                warnings.warn(f"NVML cannot read {key} on {self.device} ({exc}); the rows go without it",
                              RuntimeWarning, stacklevel=2)
        return state


def cuda_kernel_names(fn: Callable[[], object], activities=None) -> str:
    """Names of the kernels one call of `fn` launches (how cuDNN's algorithm choice shows), read
    once per shape after its timing is done (`scheduler.Profiler`).

    A `torch.profiler` session attaches CUPTI, and Kineto detaches it when the session ends only
    under TEARDOWN_CUPTI=1 (pytorch/pytorch#144455: left attached, it slowed later kernels by
    10-20%), so that is set unless the environment already says otherwise; under
    TEARDOWN_CUPTI=0 the names are not read (""), rather than slow every later shape; nor when the
    profiler fails (a warning). `activities`: the profiler activities (default CUDA; tests pass CPU)."""
    from torch.profiler import ProfilerActivity, profile

    if os.environ.setdefault("TEARDOWN_CUPTI", "1") != "1":
        return ""
    activities = activities or [ProfilerActivity.CUDA]
    on_gpu = ProfilerActivity.CUDA in activities
    if on_gpu:
        torch.cuda.synchronize()
    try:
        with profile(activities=activities) as prof:
            fn()
            if on_gpu:
                torch.cuda.synchronize()
    except RuntimeError as exc:  # the profiler (CUPTI) unavailable: the names are provenance, not data
        warnings.warn(f"kernel names not read: the profiler failed ({exc})", RuntimeWarning, stacklevel=2)
        return ""
    kind = "CUDA" if on_gpu else "CPU"
    names = [e.key for e in prof.key_averages() if e.device_type.name == kind]
    return ";".join(sorted(set(names)))[:500]


class Reference:
    """A fixed workload timed between samples to track the machine's speed.

    Each reading is the median of `calls` single-call samples, placed at its mid time. The
    speed used for normalisation is a running median over `smooth` consecutive readings:
    measured on this project's CPU, the reference and a swept conv read alternately had
    correlated *slow* drifts but uncorrelated 10-20% jitter from one reading to the next;
    dividing by single readings added that jitter (sample IQR 11% -> 18%), the running
    median of 5 did not (11% -> 12%) while still following level switches lasting seconds.
    """

    def __init__(self, fn: Callable[[], object], clock: Clock, label: str, calls: int = 5, smooth: int = 5):
        self.fn, self.clock, self.label, self.calls, self.smooth = fn, clock, label, calls, smooth
        self.times: list[float] = []
        self.values_us: list[float] = []
        self._smoothed: np.ndarray | None = None
        clock.warmup(fn, 0.05, 0.0)

    def read(self) -> float:
        t0 = self.clock.now()
        value = float(np.median([self.clock.sample(self.fn, 1) for _ in range(self.calls)]))
        self.times.append((t0 + self.clock.now()) / 2)
        self.values_us.append(value)
        self._smoothed = None
        return value

    def smoothed(self) -> np.ndarray:
        if self._smoothed is None:
            from scipy.ndimage import median_filter

            values = np.asarray(self.values_us)
            self._smoothed = median_filter(values, size=min(self.smooth, len(values)), mode="nearest")
        return self._smoothed

    def at(self, times) -> np.ndarray:
        """The smoothed reference latency interpolated at `times` (held constant beyond the ends)."""
        if not self.values_us:
            raise RuntimeError("reference never read")
        return np.interp(np.asarray(times, dtype=np.float64), self.times, self.smoothed())

    def baseline(self) -> float:
        return float(np.median(self.values_us))
