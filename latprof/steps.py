"""Staircases of a model's layers from a raw table: fitted lines, step tables, layer reports.

A *line* (see `plan.py`) is read from the raw table by its specs; whatever counts were
measured (dense, sparse or coarse) are fitted with `stepfit.fit_steps` on the
drift-normalised medians (which flagged rows take part: see `TableIndex`). A line with
fewer than two measured counts, or without its full count, is *missing*: the caller
reports it and how to measure it.

Step tables (`<raw>.steps.parquet`) hold one row per fitted segment per line, with the
line's key, and record the raw table's content hash they were fitted from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from latprof import models, plan
from latprof.errors import LatprofError
from latprof.spec import KEY_FIELDS, ConvSpec
from latprof.stepfit import StepFit, fit_steps
from latprof.table import LatencyTable, check_version, now_iso

STEPS_SCHEMA_VERSION = 1

#: Relative noise handed to the fitter: the protocol's 5% IQR threshold is an IQR, and
#: IQR / 1.35 is the standard deviation of a normal sample.
FIT_NOISE_REL = 0.05 / 1.35


@dataclass(frozen=True)
class LineFit:
    line: plan.Line
    channels: tuple[int, ...]       # measured counts on the line, ascending
    latency_us: tuple[float, ...]   # drift-normalised medians
    excluded: tuple[bool, ...]      # left out of the fit (`excluded_rows`, `fit_flags`)
    noisy: tuple[bool, ...]         # flag_noisy rows (fitted unless excluded)
    fit: StepFit | None             # None when the line is missing

    @property
    def missing(self) -> bool:
        return self.fit is None

    def level_at(self, c: int) -> float | None:
        """Latency of the plateau holding count c; None when c falls in an unresolved edge interval."""
        if self.fit is None or not 1 <= c <= self.line.full:
            return None
        for seg in self.fit.segments:
            if seg.start <= c <= seg.end:
                return seg.level
        for seg, nxt in zip(self.fit.segments, self.fit.segments[1:]):
            if seg.end < c < nxt.start:
                return None
        return self.fit.segments[-1].level if c > self.fit.segments[-1].end else self.fit.segments[0].level


def excluded_rows(df: pd.DataFrame, drop_noisy: bool = False) -> np.ndarray:
    """Which rows of a raw table stay out of a step fit (the one rule `steps` and `diff` use).

    Excluded: rows measured on a throttling GPU, and with ``drop_noisy`` rows flagged
    `flag_noisy` too. By default noisy rows (median still uncertain when the
    protocol's budget ran out) are fitted, as are rows flagged `flag_drift` (their
    normalised latency is what corrects the drift): the fitter pools every plateau's
    points, so one uncertain median costs little, while a hole in a line costs an edge.
    On this project's CPU a tenth to two fifths of the rows of a quick-protocol sweep end
    flagged noisy, wherever the machine was busy, edge probes of a sparse sweep included;
    `bench/steps_bench.py` measures edge recall both ways (its table "The same sweeps with
    the rows flagged noisy left out of every fit").
    The noisy flag stays in the table and in the plots (hollow points)."""
    return df["flag_throttled"].to_numpy(dtype=bool) | (df["flag_noisy"].to_numpy(dtype=bool) & drop_noisy)


def fit_flags(excluded) -> np.ndarray:
    """The points to leave out of a fit: `excluded`, unless that is every point; then none
    (a fit of uncertain points says more than no fit)."""
    flags = np.asarray(excluded, dtype=bool)
    return np.zeros_like(flags) if flags.all() else flags


class TableIndex:
    """Key -> (latency_norm_us_p50, excluded from the fit, flagged noisy) for one raw table;
    `excluded_rows` says which rows are excluded."""

    def __init__(self, table: LatencyTable, drop_noisy: bool = False):
        df = table.df
        keys = df[list(KEY_FIELDS)].itertuples(index=False, name=None)
        values = zip(df["latency_norm_us_p50"].astype(float), excluded_rows(df, drop_noisy),
                     df["flag_noisy"].to_numpy(dtype=bool))
        self.values = dict(zip(keys, values))

    def get(self, spec: ConvSpec):
        return self.values.get(spec.key())


def fit_line(index: TableIndex, line: plan.Line) -> LineFit:
    got = [(c, index.get(line.spec_at(c))) for c in range(1, line.full + 1)]
    got = [(c, v) for c, v in got if v is not None]
    channels = tuple(c for c, _ in got)
    lat = tuple(v[0] for _, v in got)
    excluded = tuple(bool(v[1]) for _, v in got)
    noisy = tuple(bool(v[2]) for _, v in got)
    if len(channels) < 2 or channels[-1] != line.full:
        return LineFit(line, channels, lat, excluded, noisy, None)
    flags = fit_flags(excluded)
    fit = fit_steps(channels, lat, flagged=flags, noise_rel=FIT_NOISE_REL)
    return LineFit(line, channels, lat, tuple(flags.tolist()), noisy, fit)


@dataclass(frozen=True)
class Context:
    """Which rows of a table a model's lines are read from."""

    batch: int
    dtype: str
    layout: str
    backend: str
    tile: str


def context(table: LatencyTable, batch=None, dtype=None, backend=None, layout=None, tile=None) -> Context:
    """The one (batch, dtype, layout, backend, tile) combination asked for, or the table's only one."""
    combos = table.df[["batch", "dtype", "layout", "backend", "tile"]].drop_duplicates()
    for col, want in (("batch", batch), ("dtype", dtype), ("backend", backend), ("layout", layout), ("tile", tile)):
        if want is not None:
            combos = combos[combos[col] == want]
    if combos.empty:
        asked = {k: v for k, v in dict(batch=batch, dtype=dtype, backend=backend, layout=layout).items() if v}
        have = table.df[["batch", "dtype", "layout", "backend"]].drop_duplicates().to_dict("records")
        raise LatprofError(f"the table holds no rows for {asked}; it holds {have}. Measure them with "
                           f"`latprof sweep --model MODEL --batch B --dtype D`, or pick one of those")
    if len(combos) > 1:
        options = "; ".join(f"--batch {r.batch} --dtype {r.dtype} --backend {r.backend}" + (
            f" --tile {r.tile}" if r.tile else "") for r in combos.itertuples())
        raise LatprofError(f"the table holds several batch/dtype/backend combinations; choose one: {options}")
    r = combos.iloc[0]
    return Context(int(r["batch"]), str(r["dtype"]), str(r["layout"]), str(r["backend"]), str(r["tile"]))


@dataclass(frozen=True)
class LayerSteps:
    """A conv layer's staircases: along its c_out and along its c_in."""

    name: str
    spec: ConvSpec
    out: LineFit
    inp: LineFit


def model_steps(table: LatencyTable, model: str, ctx: Context, input_size=None) -> list[LayerSteps]:
    net, size = models.load(model, input_size)
    layers = models.conv_layers(net, size)
    index = TableIndex(table)
    lines = plan.model_lines(layers, batch=ctx.batch, dtype=ctx.dtype, layout=ctx.layout,
                             backend=ctx.backend, tile=ctx.tile)
    fits: dict[tuple, LineFit] = {}
    for line in lines:
        fits[(line.base, line.axis)] = fit_line(index, line)
    out = []
    for layer in layers:
        base = layer.spec.replace(batch=ctx.batch, dtype=ctx.dtype, layout=ctx.layout, backend=ctx.backend,
                                  tile=ctx.tile)
        if base.depthwise:
            f = fits[(base, "c")]
            out.append(LayerSteps(layer.name, base, f, f))
        else:
            out.append(LayerSteps(layer.name, base, fits[(base, "c_out")], fits[(base, "c_in")]))
    return out


def missing_lines(layers: list[LayerSteps]) -> list[plan.Line]:
    seen = {}
    for lay in layers:
        for f in (lay.out, lay.inp):
            if f.missing:
                seen[(f.line.base, f.line.axis)] = f.line
    return list(seen.values())


def layer_frame(layers: list[LayerSteps]) -> pd.DataFrame:
    """One row per layer: its count, the step edges below it, efficient counts, savings per step."""
    rows = []
    for lay in layers:
        f = lay.out
        if f.missing:
            rows.append({"layer": lay.name, "c_in": lay.spec.c_in, "c_out": lay.spec.c_out, "axis": f.line.axis,
                         "latency_us": None, "edges": [], "efficient": [], "saving_pct": [], "status": "missing"})
            continue
        full_level = f.level_at(f.line.full)
        eff = [c for c in f.fit.efficient if c < f.line.full]
        saving = [round(100 * (1 - f.level_at(c) / full_level), 1) for c in eff]
        rows.append({"layer": lay.name, "c_in": lay.spec.c_in, "c_out": lay.spec.c_out, "axis": f.line.axis,
                     "latency_us": round(full_level, 2), "edges": list(f.fit.edges), "efficient": eff,
                     "saving_pct": saving, "status": "ok"})
    return pd.DataFrame(rows)


# --- step tables -------------------------------------------------------------------------

_LINE_COLUMNS = ("axis", "line_full", "noise_rel", "n_measured")
_SEGMENT_COLUMNS = ("seg_start", "seg_end", "level_us", "spread_us", "n_points", "edge_lo", "edge_hi", "efficient")


def steps_frame(fits: list[LineFit]) -> pd.DataFrame:
    rows, seen = [], set()
    for f in fits:
        if f.missing or (f.line.base, f.line.axis) in seen:
            continue
        seen.add((f.line.base, f.line.axis))
        seg = f.fit.to_frame()
        for r in seg.itertuples(index=False):
            rows.append({**f.line.base.to_row(), "axis": f.line.axis, "line_full": f.line.full,
                         "noise_rel": f.fit.noise_rel, "n_measured": len(f.channels),
                         "seg_start": r.start, "seg_end": r.end, "level_us": r.level, "spread_us": r.spread,
                         "n_points": r.n, "edge_lo": r.edge_lo, "edge_hi": r.edge_hi, "efficient": r.efficient})
    return pd.DataFrame(rows, columns=list(KEY_FIELDS) + list(_LINE_COLUMNS) + list(_SEGMENT_COLUMNS))


def steps_path(raw_path) -> Path:
    raw_path = Path(raw_path)
    return raw_path.with_name(raw_path.name.removesuffix(".parquet") + ".steps.parquet")


def write_steps(path, fits: list[LineFit], raw: LatencyTable) -> Path:
    """Write (or replace) the step table; lines already in it and not refitted are kept."""
    path = Path(path)
    new = steps_frame(fits)
    if path.exists():
        old = read_steps(path)[0]
        line_key = list(KEY_FIELDS) + ["axis"]
        keep = old.merge(new[line_key].drop_duplicates(), on=line_key, how="left", indicator=True)
        old = old[(keep["_merge"] == "left_only").to_numpy()]
        new = pd.concat([old, new], ignore_index=True) if len(old) else new
    meta = {"schema_version": STEPS_SCHEMA_VERSION, "kind": "steps", "device": raw.meta.get("device"),
            "raw_content_hash": raw.meta.get("content_hash"), "created_at": now_iso(),
            "fit": {"noise_rel": FIT_NOISE_REL, "latency": "latency_norm_us_p50"}}
    arrow = pa.Table.from_pandas(new, preserve_index=False)
    arrow = arrow.replace_schema_metadata({b"latprof": json.dumps(meta, default=str).encode()})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(arrow, tmp)
    tmp.replace(path)
    return path


def read_steps(path) -> tuple[pd.DataFrame, dict]:
    path = Path(path)
    if not path.exists():
        raise LatprofError(f"step table {path} does not exist; make it with `latprof steps MODEL --table RAW`")
    try:
        arrow = pq.read_table(path)
        meta = json.loads((arrow.schema.metadata or {})[b"latprof"])
    except (pa.ArrowInvalid, OSError, KeyError, ValueError):
        raise LatprofError(f"{path} is not a latprof step table (unreadable or without metadata)") from None
    check_version(meta.get("schema_version"), path)
    return arrow.to_pandas(), meta


# --- the (c_in, c_out) grid --------------------------------------------------------------

def grid_predict(lay: LayerSteps, c_in: int, c_out: int) -> float | None:
    """Separable grid model: f(c_in, c_out) = f(C_in, c_out) * f(c_in, C_out) / f(C_in, C_out).

    Implicit-GEMM work is (tiles over c_out) x (K-chunks over c_in), a product, so the two
    measured lines scale each other. None when either count falls in an unresolved edge interval.
    """
    if lay.out.missing or lay.inp.missing or lay.spec.depthwise:
        return None
    out_level, in_level = lay.out.level_at(c_out), lay.inp.level_at(c_in)
    full = lay.out.level_at(lay.out.line.full)
    if out_level is None or in_level is None or not full:
        return None
    return out_level * in_level / full


def grid_check(table: LatencyTable, layers: list[LayerSteps]) -> pd.DataFrame:
    """Measured off-line (c_in, c_out) pairs of each layer shape vs the separable grid model."""
    df = table.df
    rows, seen = [], set()
    for lay in layers:
        base = lay.spec
        if base in seen or lay.out.missing or lay.inp.missing or base.depthwise:
            continue
        seen.add(base)
        same = np.ones(len(df), dtype=bool)
        for k, v in base.to_row().items():
            if k not in ("c_in", "c_out"):
                same &= (df[k] == v).to_numpy()
        inside = ((df["c_in"] < base.c_in) & (df["c_out"] < base.c_out)).to_numpy()  # pruned pairs only
        sub = df[same & inside]
        for r in sub.itertuples(index=False):
            pred = grid_predict(lay, int(r.c_in), int(r.c_out))
            if pred is not None:
                rows.append({"layer": lay.name, "c_in": int(r.c_in), "c_out": int(r.c_out),
                             "measured_us": float(r.latency_norm_us_p50), "predicted_us": pred,
                             "rel_error": pred / float(r.latency_norm_us_p50) - 1.0,
                             "rel_iqr": float(r.rel_iqr_norm)})
    return pd.DataFrame(rows, columns=["layer", "c_in", "c_out", "measured_us", "predicted_us", "rel_error",
                                       "rel_iqr"])


# --- search space -------------------------------------------------------------------------

#: Default lower bound on kept channels, as a share of the original count (the seed papers' 0.2).
MIN_KEEP = 0.2
#: Most channel options per layer besides the full count: the efficient counts, thinned evenly.
MAX_OPTIONS = 8


def thin(values: list[int], cap: int) -> list[int]:
    """At most `cap` of the sorted `values`, evenly spread, keeping the smallest and the largest."""
    values = sorted(set(values))
    if len(values) <= cap:
        return values
    idx = np.unique(np.round(np.linspace(0, len(values) - 1, cap)).astype(int))
    return [values[i] for i in idx]


def channel_options(fit: LineFit, min_keep: float = MIN_KEEP, cap: int = MAX_OPTIONS) -> list[int]:
    """The counts a pruner may choose for a line's layer (LACP's shrunk search space): efficient
    counts >= min_keep * full, thinned to `cap`, plus the full count itself."""
    full = fit.line.full
    eff = [c for c in (fit.fit.efficient if fit.fit else ()) if min_keep * full <= c < full]
    return thin(eff, cap) + [full]


def grid_pairs(fits: list[LineFit], min_keep: float = MIN_KEEP, cap: int = MAX_OPTIONS) -> list[ConvSpec]:
    """Shapes a pruner will look up that the lines do not already hold.

    c_out: the layer's own options (measured points of its c_out line). c_in: the options of
    every line whose layer produces that many channels (the producer's pruned count is the
    consumer's c_in); matching by channel count is exact for chains (VGG) and a superset where
    residual adds couple several layers. Pairs with c_out = C_out lie on the c_in line but are
    listed too, since a sparse line need not hold that exact c_in. Depthwise lines get the
    producers' counts.
    """
    produced: dict[int, set[int]] = {}
    for f in fits:
        if f.line.axis in ("c_out", "c") and not f.missing:
            produced.setdefault(f.line.full, set()).update(channel_options(f, min_keep, cap))
    by_base: dict[ConvSpec, dict[str, LineFit]] = {}
    for f in fits:
        by_base.setdefault(f.line.base, {})[f.line.axis] = f
    out = []
    for base, axes in by_base.items():
        below = sorted(c for c in produced.get(base.c_in, ()) if c < base.c_in)
        if "c" in axes:  # depthwise: groups moves with the channels
            out += [base.replace(c_in=c, c_out=c, groups=c) for c in below]
            continue
        c_ins = [c for c in below if c % base.groups == 0]
        if "c_out" not in axes or axes["c_out"].missing:
            continue
        c_outs = [c for c in channel_options(axes["c_out"], min_keep, cap) if c % base.groups == 0]
        out += [base.replace(c_in=ci, c_out=co) for ci in c_ins for co in c_outs]
    return out
