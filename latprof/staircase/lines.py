"""Fitted lines of a raw table: which rows a fit uses, the fit of one line, a model's layers.

A *line* (`models.lines.Line`) is read from the raw table by its specs; whatever counts were
measured (dense, sparse or coarse) are fitted with `staircase.fit.fit_steps` on the
drift-normalised medians, each with its own standard error (`row_rel_se`; which flagged rows
take part: see `excluded_rows`). A line with
fewer than two measured counts, or without its full count, is *missing*: the caller
reports it and how to measure it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from latprof.models import lines as plan
from latprof.spec import KEY_FIELDS, ConvSpec, Context
from latprof.staircase.fit import StepFit, fit_steps
from latprof.tables.io import LatencyTable, failed_rows

#: Relative noise of a row without a usable error of its own (the protocol's 5% IQR threshold as
#: a standard deviation: IQR / 1.35). `fit_line` fits each row with its own error (`row_rel_se`);
#: `staircase.diff` still fits both tables with this one value.
FIT_NOISE_REL = 0.05 / 1.35
#: Relative standard error of a row's median from its samples: SE ~ 1.25 sd / sqrt(n) and
#: sd ~ IQR / 1.35 (`measure.timing.Stats.median_rel_se`, the same formula).
MEDIAN_SE_PER_IQR = 0.93


def row_rel_se(rel_iqr, n_samples, stored=None) -> np.ndarray:
    """Each row's relative standard error of its median, NaN where the row has none: no samples,
    or an IQR of exactly 0 (a timer too coarse for the call, or a table written without
    spreads), which says nothing about the error. The fitter then uses the line's other rows,
    or `FIT_NOISE_REL` when none has one. `stored`: the table's `rel_se` column (schema 3: the
    sweep's own figure, which also counts the scatter between instances), used where present."""
    iqr = np.asarray(rel_iqr, dtype=float)
    n = np.asarray(n_samples, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = MEDIAN_SE_PER_IQR * iqr / np.sqrt(n)
    if stored is not None:
        stored = np.asarray(stored, dtype=float)
        se = np.where(np.isfinite(stored) & (stored > 0), stored, se)
    return np.where(np.isfinite(se) & (n >= 1) & (se > 0), se, np.nan)


@dataclass(frozen=True)
class LineFit:
    line: plan.Line
    channels: tuple[int, ...]       # measured counts on the line, ascending
    latency_us: tuple[float, ...]   # drift-normalised medians
    excluded: tuple[bool, ...]      # left out of the fit (`excluded_rows`, `fit_flags`)
    noisy: tuple[bool, ...]         # flag_noisy rows (fitted unless excluded)
    fit: StepFit | None             # None when the line is missing
    rel_se: tuple[float, ...] = ()  # each row's relative standard error (`row_rel_se`; NaN: none)

    @property
    def missing(self) -> bool:
        return self.fit is None

    def level_at(self, c: int) -> float | None:
        """Fitted latency at count c (its plateau's line, sloped or flat); None when c falls in an
        unresolved edge interval. Counts beyond the measured ends take the nearest end's value."""
        if self.fit is None or not 1 <= c <= self.line.full:
            return None
        segs = self.fit.segments
        for seg in segs:
            if seg.start <= c <= seg.end:
                return seg.at(c)
        for seg, nxt in zip(segs, segs[1:]):
            if seg.end < c < nxt.start:
                return None
        return segs[-1].level if c > segs[-1].end else segs[0].at(segs[0].start)


def excluded_rows(df: pd.DataFrame, drop_noisy: bool = False) -> np.ndarray:
    """Which rows of a raw table stay out of a step fit (the one rule `steps` and `diff` use).

    Excluded: rows measured on a throttling GPU or while another process kept a CPU busy
    (`flag_contended`: such an episode slows some kernels 2x and not the reference, so
    normalisation cannot correct it; the sweep re-measures such rows first), and with ``drop_noisy`` rows flagged
    `flag_noisy` too. By default noisy rows (median still uncertain when the
    protocol's budget ran out) are fitted, as are rows flagged `flag_drift` (their
    normalised latency is what corrects the drift): the fitter pools every plateau's
    points, so one uncertain median costs little, while a hole in a line costs an edge.
    On this project's CPU a tenth to two fifths of the rows of a quick-protocol sweep end
    flagged noisy, wherever the machine was busy, edge probes of a sparse sweep included;
    `bench/steps_bench.py` measures edge recall both ways (its table "The same sweeps with
    the rows flagged noisy left out of every fit").
    The noisy flag stays in the table and in the plots (hollow points).
    Rows flagged `flag_failed` (the shape could not run; no latency) are always excluded."""
    contended = (df["flag_contended"].fillna(False).to_numpy(dtype=bool) if "flag_contended" in df.columns
                 else np.zeros(len(df), dtype=bool))
    return (df["flag_throttled"].to_numpy(dtype=bool) | (df["flag_noisy"].to_numpy(dtype=bool) & drop_noisy)
            | failed_rows(df) | contended)


def fit_flags(excluded) -> np.ndarray:
    """The points to leave out of a fit: `excluded`, unless that is every point; then none
    (a fit of uncertain points says more than no fit)."""
    flags = np.asarray(excluded, dtype=bool)
    return np.zeros_like(flags) if flags.all() else flags


class TableIndex:
    """Key -> (latency_norm_us_p50, excluded from the fit, flagged noisy, relative standard error
    of the median) for one raw table; `excluded_rows` says which rows are excluded, `row_rel_se`
    how the error is computed (from rel_iqr_norm and n_samples). Rows flagged failed are not in
    the index: a shape that could not run is unavailable, as if never measured."""

    def __init__(self, table: LatencyTable, drop_noisy: bool = False):
        df = table.df
        df = df[~failed_rows(df)]
        keys = df[list(KEY_FIELDS)].itertuples(index=False, name=None)
        values = zip(df["latency_norm_us_p50"].astype(float), excluded_rows(df, drop_noisy),
                     df["flag_noisy"].to_numpy(dtype=bool),
                     row_rel_se(df["rel_iqr_norm"], df["n_samples"], df.get("rel_se")))
        self.values = dict(zip(keys, values))

    def get(self, spec: ConvSpec):
        return self.values.get(spec.key())


def fit_line(index: TableIndex, line: plan.Line) -> LineFit:
    step = line.step
    got = [(c, index.get(line.spec_at(c))) for c in range(step, line.full + 1, step)]
    got = [(c, v) for c, v in got if v is not None]
    channels = tuple(c for c, _ in got)
    lat = tuple(v[0] for _, v in got)
    excluded = tuple(bool(v[1]) for _, v in got)
    noisy = tuple(bool(v[2]) for _, v in got)
    se = tuple(float(v[3]) for _, v in got)
    if len(channels) < 2 or channels[-1] != line.full:
        return LineFit(line, channels, lat, excluded, noisy, None, se)
    flags = fit_flags(excluded)
    fit = fit_steps(channels, lat, flagged=flags, rel_se=se, noise_rel=FIT_NOISE_REL, period="auto")
    return LineFit(line, channels, lat, tuple(flags.tolist()), noisy, fit, se)


@dataclass(frozen=True)
class LayerSteps:
    """A conv layer's staircases: along its c_out and along its c_in."""

    name: str
    spec: ConvSpec
    out: LineFit
    inp: LineFit


def model_steps(table: LatencyTable, model: str, ctx: Context, input_size=None) -> list[LayerSteps]:
    """Every conv and Linear layer of `model` with its fitted lines (missing ones included:
    `missing_lines`)."""
    layers, lines = plan.load_lines(model, ctx, input_size=input_size)
    index = TableIndex(table)
    fits = {(line.base, line.axis): fit_line(index, line) for line in lines}
    out = []
    for layer in layers:
        base = ctx.apply(layer.spec)
        if base.depthwise:
            f = fits[(base, "c")]
            out.append(LayerSteps(layer.name, base, f, f))
        else:
            inp = fits[(base, "c_in")]   # the classifier has no c_out line (its outputs stay): shown by c_in
            out.append(LayerSteps(layer.name, base, fits.get((base, "c_out"), inp), inp))
    return out


def missing_lines(layers: list[LayerSteps]) -> list[plan.Line]:
    seen = {}
    for lay in layers:
        for f in (lay.out, lay.inp):
            if f.missing:
                seen[(f.line.base, f.line.axis)] = f.line
    return list(seen.values())


def layer_frame(layers: list[LayerSteps]) -> pd.DataFrame:
    """One row per layer: its count, the step edges below it (each with its jump in percent and
    its significance, the jump over its standard error), efficient counts, savings per step, the
    counts the fit set aside as outliers."""
    rows = []
    for lay in layers:
        f = lay.out
        base = {"layer": lay.name, "c_in": lay.spec.c_in, "c_out": lay.spec.c_out, "axis": f.line.axis}
        if f.missing:
            rows.append({**base, "latency_us": None, "edges": [], "jump_pct": [], "z": [], "efficient": [],
                         "saving_pct": [], "outliers": [], "status": "missing"})
            continue
        full_level = f.level_at(f.line.full)
        eff = [c for c in f.fit.efficient if c < f.line.full]
        saving = [round(100 * (1 - f.level_at(c) / full_level), 1) for c in eff]
        rows.append({**base, "latency_us": round(full_level, 2), "edges": list(f.fit.edges),
                     "jump_pct": [round(100 * j, 1) for j in f.fit.jumps],
                     "z": [round(z, 1) for z in f.fit.z_scores], "efficient": eff, "saving_pct": saving,
                     "outliers": list(f.fit.outliers), "status": "ok"})
    return pd.DataFrame(rows)


def unfittable_lines(table: LatencyTable | None, model: str, ctx: Context, *, input_size=None) -> list[plan.Line]:
    """`model`'s sweep lines that `table` cannot fit (all of them when `table` is None)."""
    _, lines = plan.load_lines(model, ctx, input_size=input_size)
    if table is None:
        return lines
    index = TableIndex(table)
    return [line for line in lines if fit_line(index, line).missing]


def missing_specs(table: LatencyTable | None, model: str, ctx: Context, *, input_size=None,
                  missing_lines_only: bool = False) -> list[ConvSpec]:
    """The shapes of `model`'s sweep lines that `table` lacks (all of them when `table` is None).

    The requirement is the *dense* lines (`models.lines.model_lines`: every count of c_out and
    of c_in per distinct conv shape), the complete set a pruner could look up. A model sweep
    is sparse by default, so against a sparsely swept table this asks for every count the
    sampler skipped. With `missing_lines_only`, only lines the table cannot fit at all are
    requested, densely. The (c_in, c_out) grid pairs of a sparse sweep are not part of it.
    """
    lines = unfittable_lines(table if missing_lines_only else None, model, ctx, input_size=input_size)
    have = table.keys() if table is not None else set()
    return [s for s in plan.line_specs(lines) if s.key() not in have]
