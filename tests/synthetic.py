"""Synthetic raw tables with a known staircase, for tests of everything downstream of a sweep."""

from __future__ import annotations

import math

import pandas as pd

from latprof.models import lines as plan
from latprof.tables import io as tbl
from latprof.spec import Context, ConvSpec

META = {"device": {"kind": "cpu", "name": "Synthetic CPU", "slug": "cpu-synthetic"}, "versions": {},
        "protocol": {}, "host": "synthetic", "reference": {"workload": "none", "baseline_us": 1.0}}


def staircase_us(spec: ConvSpec, block: int = 16) -> float:
    """Latency of an implicit GEMM with `block`-wide tiles over c_out and K-chunks over c_in:
    proportional to ceil(c_out/block) * ceil(c_in/block), times the pixels, plus 5 us."""
    work = math.ceil(spec.c_out / block) * math.ceil((spec.c_in // spec.groups) / block)
    return 5.0 + 1e-3 * work * spec.h_out * spec.w_out * spec.batch * spec.kernel_h * spec.kernel_w


def row(spec: ConvSpec, lat: float, flag: bool = False) -> dict:
    return {**spec.to_row(), "latency_us_p50": lat, "latency_us_p10": lat, "latency_us_p25": lat,
            "latency_us_p75": lat, "latency_us_p90": lat, "latency_us_min": lat, "latency_us_mean": lat,
            "rel_iqr": 0.0, "latency_norm_us_p50": lat, "latency_norm_us_p25": lat, "latency_norm_us_p75": lat,
            "rel_iqr_norm": 0.0, "ref_us_p50": 1.0, "ref_baseline_us": 1.0, "ref_drift_rel": 0.0, "n_samples": 7,
            "inner_reps": 1, "threads": 1, "macs": spec.macs(), "flag_noisy": flag, "flag_drift": False,
            "flag_throttled": False, "algo": "", "gpu_clock_mhz": None, "gpu_temp_c": None,
            "measured_at": "2026-01-01T00:00:00+00:00", "host": "synthetic", "session": "synthetic"}


def model_table(path, model: str, batch: int = 1, latency=staircase_us, extra_specs=(), drop_lines=0,
                every: int = 1, grid: bool = False, meta=None, input_size=None):
    """A table of every line of `model` (minus the last `drop_lines` lines), every `every`-th
    count; with `grid`, also the (c_in, c_out) pairs pruning looks up, as a sweep measures them."""
    from latprof.staircase import lines as steps
    from latprof.staircase import options

    lines = plan.load_lines(model, Context(batch=batch), input_size=input_size, every=every)[1]
    if drop_lines:
        lines = lines[:-drop_lines]
    specs = list(dict.fromkeys([s for line in lines for s in line.specs()] + list(extra_specs)))
    t = tbl.LatencyTable(pd.DataFrame([row(s, latency(s)) for s in specs]), dict(meta or META))
    if grid:
        index = steps.TableIndex(t)
        pairs = options.grid_pairs([steps.fit_line(index, line) for line in lines])
        t.df = tbl.upsert(t.df, pd.DataFrame([row(s, latency(s)) for s in pairs]))
    tbl.write(path, t)
    return path
