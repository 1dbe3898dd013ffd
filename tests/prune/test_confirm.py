"""The verdict's measurement in fresh processes (`latprof.prune.confirm`): the saved pick and
baselines timed next to a freshly built original, one session per process, on this CPU."""

from __future__ import annotations

import pytest

from latprof.errors import LatprofError
from latprof.measure import device as devices
from latprof.prune import pipeline as pruning
from synthetic import META, model_table

SIZE = (3, 16, 16)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A synthetic small_cifar10 table that says it was measured on this machine's CPU (so that a
    fresh process, which sees no monkeypatch, measures too)."""
    here = devices.cpu_device()
    meta = {**META, "device": {"kind": "cpu", "name": here.name, "slug": here.slug}, "reference": None}
    return str(model_table(tmp_path_factory.mktemp("c") / "t.parquet", "small_cifar10", every=2, grid=True,
                           input_size=SIZE, meta=meta))


@pytest.mark.slow
def test_the_verdict_pools_fresh_processes_and_leaves_the_loops_session_out(table, tmp_path):
    # a target every configuration meets (1 s): this is about the measuring path, not the search
    cfg = pruning.PruneConfig(model="small_cifar10", table=table, input_size=SIZE, target_ms=1000.0, quick=True,
                              compare=True, out=tmp_path, confirm=2)
    r = pruning.run(cfg)
    for cand in [r.pruned] + r.baselines:
        assert len(cand.session_ratios) == 2 and all(v > 0 for v in cand.session_ratios)
        # the pooled median lies between the processes' medians
        assert min(cand.session_ratios) <= cand.measured_ratio <= max(cand.session_ratios)
    assert r.confirmed and r.loop_ratio is not None and r.loop_ratio > 0    # reported, not pooled
    assert r.sessions >= 1 + 1 + 2                          # calibration, the loop, two fresh processes
    assert r.noise_rel is not None and r.noise_rel >= r.sessions_apart >= r.pruned.sessions_apart


@pytest.mark.slow
def test_a_fresh_process_that_fails_says_why(table, tmp_path):
    cfg = pruning.PruneConfig(model="small_cifar10", table=table, input_size=SIZE, target_ms=1000.0, quick=True,
                              out=tmp_path)
    setup = pruning.load(cfg)
    timer = pruning.make_timer(cfg, setup)
    spec = {**pruning.asdict(cfg), "table": str(tmp_path / "gone.parquet"), "input_size": list(SIZE)}
    with pytest.raises(LatprofError, match="fresh process failed"):
        timer.fresh_sessions(spec, [setup.original], 1)
