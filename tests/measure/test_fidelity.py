"""Re-sweep fidelity: what the protocol does about placement (instances), other processes
(contention), a slow start (the baseline) and which kernel oneDNN chose. Logic is checked on the
simulated machine (`tests/simulate.py`); the figures are in `bench/resweep_bench.py`."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from latprof.measure import device
from latprof.measure.activity import Activity, read_cpu_seconds
from latprof.measure.scheduler import Profiler
from latprof.measure.cpu import cpu_kernel_names
from latprof.measure.timing import Clock, Protocol
from latprof.spec import ConvSpec
from latprof.staircase.lines import TableIndex, excluded_rows, row_rel_se
from latprof.tables import io as tbl
from latprof.tables.store import TableStore
from simulate import SimClock, SimRunner

PROTOCOL = Protocol(warmup_s=0.001, min_samples=7, max_samples=25, shape_budget_s=10.0, ref_interval_s=0.01,
                    window=8, remeasure_drifted=0, instances=1, remeasure_contended=0, quiet_wait_s=0.0)
SPECS = [ConvSpec(c_in=16, c_out=c, h=8, w=8) for c in range(1, 41)]
META = {"device": {"kind": "cpu", "name": "sim", "slug": "sim"}, "versions": {}, "protocol": {}, "host": "sim"}


def truth(c: int) -> float:
    return 1000.0 + 300.0 * ((c - 1) // 8)


def sweep(tmp_path, clock, protocol=PROTOCOL, make_runner=None, specs=SPECS, name="t.parquet", ref=None):
    make_runner = make_runner or (lambda spec, d: SimRunner(truth(spec.c_out), 0.01, contended=2.0))
    with TableStore(tmp_path / name, META) as store:
        prof = Profiler(device.cpu_device(), clock, protocol, store, dtype="float32", host="sim", progress=False,
                        make_runner=make_runner, reference=("ref", ref or SimRunner(500.0, 0.005)),
                        activity=clock.activity())
        result = prof.measure(specs)
    return result, tbl.read(tmp_path / name)


# --- contention -------------------------------------------------------------------------------

def test_rows_sampled_while_another_process_is_busy_are_flagged_and_left_out_of_fits(tmp_path):
    # another process busy on one CPU from 0.05 s to 0.25 s; the swept kernels run 2x slower then,
    # the reference does not notice (as measured with some oneDNN kernels)
    clock = SimClock(slow=1.0, seed=0, episodes=((0.05, 0.25, 1.0),))
    result, t = sweep(tmp_path, clock)
    df = t.df
    ratio = df["latency_norm_us_p50"] / df["c_out"].map(truth)
    assert result.contended == df["flag_contended"].sum() > 0
    assert (df.loc[df["flag_contended"], "contention"] > PROTOCOL.contention_threshold).all()
    assert (df.loc[~df["flag_contended"], "contention"] <= PROTOCOL.contention_threshold).all()
    # nothing slowed by the episode reaches a fit unflagged
    slowed = ratio > 1.1
    assert slowed.any() and df.loc[slowed, "flag_contended"].all()
    assert excluded_rows(df)[df["flag_contended"].to_numpy()].all()
    index = TableIndex(t)
    assert all(index.get(ConvSpec(c_in=16, c_out=int(c), h=8, w=8))[1] for c in df.loc[df["flag_contended"], "c_out"])


def test_the_sweep_waits_out_an_episode_and_keeps_none_of_its_samples(tmp_path):
    protocol = Protocol(**{**PROTOCOL.to_dict(), "quiet_wait_s": 30.0})
    clock = SimClock(slow=1.0, seed=0, episodes=((0.05, 1.05, 1.0),))
    with TableStore(tmp_path / "t.parquet", META) as store:
        prof = Profiler(device.cpu_device(), clock, protocol, store, dtype="float32", host="sim", progress=False,
                        make_runner=lambda spec, d: SimRunner(truth(spec.c_out), 0.01, contended=2.0),
                        reference=("ref", SimRunner(500.0, 0.005)), activity=clock.activity())
        result = prof.measure(SPECS)
    df = tbl.read(tmp_path / "t.parquet").df
    ratio = df["latency_norm_us_p50"] / df["c_out"].map(truth)
    assert prof.discarded_rounds >= 1 and 0.9 <= prof._waited_s <= 1.2
    assert result.contended == 0 and ratio.max() / ratio.min() < 1.05


def test_a_machine_that_is_never_quiet_costs_a_bounded_wait_and_flags_its_rows(tmp_path):
    protocol = Protocol(**{**PROTOCOL.to_dict(), "quiet_wait_s": 1.0})
    clock = SimClock(slow=1.0, seed=0, episodes=((0.0, 1e9, 1.0),))
    result, t = sweep(tmp_path, clock, protocol)
    assert clock.t < 1.0 + 40 * 0.1 and result.contended == len(SPECS) and t.df["flag_contended"].all()


def test_contended_rows_are_measured_again_once_the_episode_is_over(tmp_path):
    protocol = Protocol(**{**PROTOCOL.to_dict(), "remeasure_contended": 2})
    clock = SimClock(slow=1.0, seed=0, episodes=((0.05, 0.25, 1.0),))
    result, t = sweep(tmp_path, clock, protocol)
    ratio = t.df["latency_norm_us_p50"] / t.df["c_out"].map(truth)
    assert result.contended == 0 and not t.df["flag_contended"].any()
    assert ratio.max() / ratio.min() < 1.05


def test_a_rerun_measures_contended_rows_again_and_replaces_them(tmp_path):
    clock = SimClock(slow=1.0, seed=0, episodes=((0.05, 0.25, 1.0),))
    first, _ = sweep(tmp_path, clock)
    second, t = sweep(tmp_path, SimClock(slow=1.0, seed=1))
    assert second.measured == first.contended > 0 and second.skipped == len(SPECS) - first.contended
    assert len(t.df) == len(SPECS) and not t.df["flag_contended"].any()


def test_a_cuda_sweep_records_host_load_without_flagging_it(tmp_path):
    clock = SimClock(slow=1.0, seed=0, episodes=((0.0, 10.0, 1.0),))
    dev = device.Device("cuda", "Sim GPU", "simgpu", 0)
    with TableStore(tmp_path / "g.parquet", {**META, "device": {"kind": "cuda", "name": "g", "slug": "g"}}) as store:
        prof = Profiler(dev, clock, Protocol(**{**PROTOCOL.to_dict(), "instances": 3}), store, dtype="float32",
                        host="sim", progress=False, make_runner=lambda s, d: SimRunner(truth(s.c_out)),
                        reference=("ref", SimRunner(500.0)), activity=clock.activity())
        prof._kernel_names = lambda run: ""
        prof.measure(SPECS[:4])
    df = tbl.read(tmp_path / "g.parquet").df
    assert (df["contention"] > 0.9).all() and not df["flag_contended"].any()
    assert (df["n_instances"] == 1).all()           # instances are a CPU matter


def test_activity_reads_others_load_between_marks():
    state = {"t": 0.0, "busy": 0.0, "own": 0.0}
    act = Activity(read=lambda: (state["busy"], 0.0), own=lambda: state["own"], now=lambda: state["t"])
    act.mark()
    for _ in range(10):                 # 1 s: this process 1 CPU, another 0.5 CPU
        state["t"] += 0.1
        state["own"] += 0.1
        state["busy"] += 0.15
        act.mark()
    assert act.others_cores(0.0, 1.0) == pytest.approx(0.5)
    assert act.others_cores(0.25, 0.35) == pytest.approx(0.5)   # widened to the enclosing marks
    assert np.isnan(Activity(read=lambda: None).others_cores(0.0, 1.0))   # no counters: unknown


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="/proc/stat exists on Linux only")
def test_proc_stat_reads_busy_and_steal_seconds():
    busy, steal = read_cpu_seconds()
    assert busy > 0 and steal >= 0


# --- instances ----------------------------------------------------------------------------------

def placed_runners(seed: int, spread: float = 0.06):
    """Each allocation of a shape runs at its own speed (+-6%, as measured within one process)."""
    rng = np.random.default_rng(seed)
    return lambda spec, d: SimRunner(truth(spec.c_out) * (1 + spread * rng.standard_normal()), 0.01)


def test_instances_average_placement_and_report_its_spread(tmp_path):
    errors = {}
    for k in (1, 5):
        protocol = Protocol(**{**PROTOCOL.to_dict(), "instances": k})
        _, t = sweep(tmp_path, SimClock(slow=1.0, seed=1), protocol, placed_runners(k), name=f"k{k}.parquet")
        df = t.df
        errors[k] = float(np.sqrt(np.mean((df["latency_norm_us_p50"] / df["c_out"].map(truth) - 1) ** 2)))
        assert (df["n_instances"] == k).all() and (df["rel_se"] > 0).all()
        if k == 1:
            assert df["instance_spread"].isna().all()
        else:
            assert (df["instance_spread"] > 0.02).all()
            # the stored error counts the instances' scatter, which the samples' IQR alone misses
            from_samples = row_rel_se(df["rel_iqr_norm"], df["n_samples"])
            assert np.median(df["rel_se"] / from_samples) > 1.0
    assert errors[5] < 0.7 * errors[1]       # 1 / sqrt(5) = 0.45 expected


def test_every_instance_is_a_fresh_allocation(tmp_path):
    made = []

    def make(spec, d):
        made.append(spec)
        return SimRunner(truth(spec.c_out))
    sweep(tmp_path, SimClock(slow=1.0, seed=2), Protocol(**{**PROTOCOL.to_dict(), "instances": 3}), make,
          specs=SPECS[:5])
    assert len(made) == 15 and all(made.count(s) == 3 for s in SPECS[:5])


# --- baseline -------------------------------------------------------------------------------------

class SlowStart(SimClock):
    """Everything runs 1.7x slower for the first 20 ms (the first baseline readings)."""

    def slowdown(self, t):
        return 1.7 if t < 0.02 else 1.0


def test_a_slow_start_does_not_scale_a_new_table(tmp_path):
    _, t = sweep(tmp_path, SlowStart(seed=3))
    baseline = t.meta["reference"]["baseline_us"]
    assert baseline == pytest.approx(500.0, rel=0.05)
    ratio = t.df["latency_norm_us_p50"] / t.df["c_out"].map(truth)
    assert np.median(ratio) == pytest.approx(1.0, abs=0.05)


def test_a_resumed_table_keeps_its_baseline(tmp_path):
    _, first = sweep(tmp_path, SimClock(slow=1.0, seed=4), specs=SPECS[:10])
    _, second = sweep(tmp_path, SlowStart(seed=5), specs=SPECS)
    assert second.meta["reference"]["baseline_us"] == first.meta["reference"]["baseline_us"]
    assert set(second.df["ref_baseline_us"]) == {first.meta["reference"]["baseline_us"]}


# --- the real CPU: oneDNN's kernel, pinning -----------------------------------------------------------

@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")
def test_onednn_kernel_names_are_read_from_one_call(capfd):
    x, w = torch.randn(8, 128, 16, 16), torch.randn(64, 128, 3, 3)   # small convs skip oneDNN
    print("before")
    with torch.inference_mode():
        names = cpu_kernel_names(lambda: torch.nn.functional.conv2d(x, w, padding=1))
    print("after")
    assert names.startswith("convolution:") and ";" not in names.split(";")[0][len("convolution:"):]
    out = capfd.readouterr().out
    assert "before" in out and "after" in out and "onednn_verbose" not in out   # stdout restored, verbose kept out


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="pinning needs sched_setaffinity and at least two allowed cores")
def test_one_thread_is_pinned_to_one_core_and_released():
    before = os.sched_getaffinity(0)
    with Clock(1, pin=True):
        assert os.sched_getaffinity(0) == {max(before)}
    assert os.sched_getaffinity(0) == before
    with Clock(2, pin=True):           # more threads than one: never pinned
        assert os.sched_getaffinity(0) == before


def test_steady_malloc_says_what_it_set_on_glibc():
    from latprof.measure.cpu import MMAP_THRESHOLD_BYTES, steady_malloc

    done = steady_malloc()
    import platform
    if platform.libc_ver()[0] == "glibc":
        assert done == f"glibc mmap_threshold={MMAP_THRESHOLD_BYTES} trim_threshold={1024 ** 3}"
    else:
        assert done == ""
