import numpy as np
import pytest

from latprof.measure import device as device
from latprof.tables import io as tbl
from latprof.measure.scheduler import Profiler
from latprof.spec import ConvSpec
from latprof.tables.store import TableStore
from latprof.measure.timing import Protocol
from simulate import SimClock, SimRunner

PROTOCOL = Protocol(warmup_s=0.001, min_samples=7, max_samples=25, shape_budget_s=10.0, ref_interval_s=0.01,
                    window=8, remeasure_drifted=0, instances=1)


def staircase(c: int) -> float:
    """True latency in microseconds: +300 us every 8 channels."""
    return 1000.0 + 300.0 * ((c - 1) // 8)


def run_sim(tmp_path, specs, clock, protocol=PROTOCOL, noise=0.01, deadline=None, name="t.parquet"):
    dev = device.cpu_device()
    meta = {"device": {"kind": "cpu", "name": dev.name, "slug": dev.slug}, "versions": {}, "protocol": {},
            "host": "sim"}
    runners = {s: SimRunner(staircase(s.c_out), noise) for s in specs}
    with TableStore(tmp_path / name, meta) as store:
        prof = Profiler(dev, clock, protocol, store, dtype="float32", host="sim", progress=False, activity=clock.activity(),
                        make_runner=lambda spec, d: runners[spec], reference=("ref", SimRunner(500.0, 0.005)),
                        deadline=deadline)
        result = prof.measure(specs)
    return result, tbl.read(tmp_path / name).df


SPECS = [ConvSpec(c_in=16, c_out=c, h=8, w=8) for c in range(1, 41)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_normalisation_removes_a_174x_speed_switch(tmp_path, seed):
    clock = SimClock(slow=1.74, period_s=0.2, seed=seed)
    result, df = run_sim(tmp_path, SPECS, clock)
    assert result.measured == len(SPECS) and len(df) == len(SPECS)
    true = np.array([staircase(c) for c in df["c_out"]])
    raw_ratio = df["latency_us_p50"].to_numpy() / true
    norm_ratio = df["latency_norm_us_p50"].to_numpy() / true
    # the machine really drifted: raw medians of identical-speed shapes disagree by tens of percent
    assert raw_ratio.max() / raw_ratio.min() > 1.25
    # normalised medians are all the same multiple of the truth, within the noise
    assert norm_ratio.max() / norm_ratio.min() < 1.05
    # so the staircase's plateaus are flat again: no fake step inside any 8-channel plateau
    for lo in range(1, 41, 8):
        plateau = df[(df["c_out"] >= lo) & (df["c_out"] < lo + 8)]["latency_norm_us_p50"]
        assert plateau.max() / plateau.min() < 1.05


def test_rows_measured_across_a_switch_are_flagged(tmp_path):
    clock = SimClock(slow=1.74, period_s=0.2, seed=0)
    _, df = run_sim(tmp_path, SPECS, clock)
    assert df["flag_drift"].any()
    assert (df.loc[df["flag_drift"], "ref_drift_rel"] > PROTOCOL.drift_threshold).all()
    assert (df.loc[~df["flag_drift"], "ref_drift_rel"] <= PROTOCOL.drift_threshold).all()


def test_a_steady_machine_gives_no_drift_flags_and_quiet_rows(tmp_path):
    clock = SimClock(slow=1.0, seed=3)
    _, df = run_sim(tmp_path, SPECS, clock)
    assert not df["flag_drift"].any() and not df["flag_noisy"].any()
    assert (df["n_samples"] == PROTOCOL.min_samples).all()   # quiet shapes stop as early as allowed


def test_noisy_shapes_stop_at_max_samples_and_are_flagged(tmp_path):
    clock = SimClock(slow=1.0, seed=4)
    _, df = run_sim(tmp_path, SPECS[:6], clock, noise=0.3)
    assert df["flag_noisy"].all()
    assert (df["n_samples"] == PROTOCOL.max_samples).all()


def test_drifted_shapes_are_measured_again_when_asked(tmp_path):
    protocol = Protocol(**{**PROTOCOL.to_dict(), "remeasure_drifted": 3})
    # switches every 0.3 s, rows last ~0.1 s: a row caught by one is clean when measured again
    _, once = run_sim(tmp_path, SPECS, SimClock(slow=1.74, period_s=0.6, seed=0), name="a.parquet")
    _, again = run_sim(tmp_path, SPECS, SimClock(slow=1.74, period_s=0.6, seed=0), protocol, name="b.parquet")
    assert once["flag_drift"].sum() > 0
    assert again["flag_drift"].sum() < once["flag_drift"].sum()


def test_shapes_are_interleaved_not_measured_one_after_another(tmp_path):
    order = []

    class Recording(SimClock):
        def sample(self, fn, reps=1):
            order.append(id(fn))
            return super().sample(fn, reps)

    run_sim(tmp_path, SPECS[:8], Recording(slow=1.0, seed=5))
    ref = max(set(order), key=order.count)   # the reference workload is timed most often
    seq = [o for o in order if o != ref]
    # in the first 8 shape samples all 8 shapes appear once: a round, not a run of one shape
    assert len(set(seq[:8])) == 8


def test_deadline_stops_early_and_reports_what_is_left(tmp_path):
    clock = SimClock(slow=1.0, seed=6)
    result, df = run_sim(tmp_path, SPECS, clock, deadline=0.0)
    assert result.measured == 0 and len(result.left) == len(SPECS) and len(df) == 0


def test_already_measured_shapes_are_skipped(tmp_path):
    run_sim(tmp_path, SPECS[:10], SimClock(seed=7))
    result, df = run_sim(tmp_path, SPECS, SimClock(seed=8))
    assert result.skipped == 10 and result.measured == 30 and len(df) == 40
