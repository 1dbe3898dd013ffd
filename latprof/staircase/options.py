"""What a pruner may choose from a staircase: efficient channel counts per line (LACP's shrunk
search space), the (c_in, c_out) grid pairs it will look up, and the separable grid model.

`MIN_KEEP` is the one declared lower bound: a model sweep measures the grid for it and
`latprof prune --min-keep` defaults to it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from latprof.spec import ConvSpec
from latprof.staircase.lines import LayerSteps, LineFit
from latprof.tables.io import LatencyTable


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
