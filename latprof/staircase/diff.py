"""Compare two latency tables: coverage, latency ratios, and where the staircase edges moved
(two GPUs, or one GPU before and after a driver update). Used by `latprof tables diff`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from latprof.models import lines as plan
from latprof.staircase import lines as steps
from latprof.tables import io as tbl
from latprof.errors import LatprofError
from latprof.spec import KEY_FIELDS, ConvSpec
from latprof.staircase.fit import StepFit, fit_steps

#: A line is compared when both tables measured at least this many of its counts.
MIN_LINE_POINTS = 4
#: Channel fields a line moves along; "c" is a depthwise line (c_in = c_out = groups).
_LINE_AXES = {"c_out": ("c_out",), "c_in": ("c_in",), "c": ("c_in", "c_out", "groups")}
_CHANNELS = ("c_in", "c_out", "groups")
_SOFTWARE = ("torch", "cuda", "cudnn", "triton")


@dataclass(frozen=True)
class LineDiff:
    """One line measured in both tables, fitted on the counts both measured."""

    line: plan.Line                  # base = the line's largest common count; values = common counts
    latency_a_us: tuple[float, ...]
    latency_b_us: tuple[float, ...]
    fit_a: StepFit
    fit_b: StepFit
    only_a: tuple[int, ...]          # edges of A with no edge of B in an overlapping interval
    only_b: tuple[int, ...]

    @property
    def moved(self) -> bool:
        return bool(self.only_a or self.only_b)


@dataclass
class DiffResult:
    """Coverage, latency ratios B/A (drift-normalised medians) and moved edges of two tables."""

    name_a: str
    name_b: str
    device_a: dict
    device_b: dict
    only_a: pd.DataFrame             # key columns of shapes only A holds
    only_b: pd.DataFrame
    common: pd.DataFrame             # key columns + latency_a_us, latency_b_us, ratio
    lines: list[LineDiff] = field(default_factory=list)
    versions: dict = field(default_factory=dict)   # software that differs: name -> (A's, B's)
    ignored: tuple[str, ...] = ()
    fitted: bool = True              # False: lines were not fitted (edges=False)
    rows: tuple[int, int] = (0, 0)   # rows of A and of B

    def ratio_quantile(self, q: float) -> float | None:
        return float(np.quantile(self.common["ratio"], q)) if len(self.common) else None

    @property
    def moved_lines(self) -> list[LineDiff]:
        return [d for d in self.lines if d.moved]

    def summary(self) -> list[str]:
        out = [f"A          {self.name_a} ({self.device_a.get('name')}, {self.rows[0]} rows)",
               f"B          {self.name_b} ({self.device_b.get('name')}, {self.rows[1]} rows)",
               f"coverage   {len(self.common)} shapes in both, {len(self.only_a)} only in A, "
               f"{len(self.only_b)} only in B" + (f" (matched ignoring {', '.join(self.ignored)})"
                                                   if self.ignored else "")]
        if len(self.common):
            out.append(f"ratio B/A  median {self.ratio_quantile(0.5):.3f}, p10 {self.ratio_quantile(0.1):.3f}, "
                       f"p90 {self.ratio_quantile(0.9):.3f} (latency_norm_us_p50)")
        else:
            hint = _no_overlap_hint(self.only_a, self.only_b)
            out.append("ratio B/A  no shape in common" + (f"; {hint}" if hint else ""))
        if not self.fitted:
            out.append("lines      not compared (step fits skipped)")
        else:
            out.append(f"lines      {len(self.lines)} in both (>= {MIN_LINE_POINTS} common counts), "
                       f"{len(self.moved_lines)} with moved edges")
        for d in self.moved_lines[:20]:
            out.append(f"  {d.line.axis} 1..{d.line.full} of {d.line.base.label()}: edges only in A "
                       f"{list(d.only_a)}, only in B {list(d.only_b)}")
        if len(self.moved_lines) > 20:
            out.append(f"  ... and {len(self.moved_lines) - 20} more")
        for name, (a, b) in self.versions.items():
            out.append(f"software   {name}: A {a}, B {b}")
        return out


def diff_tables(a: tbl.LatencyTable, b: tbl.LatencyTable, *, names: tuple[str, str] = ("A", "B"),
                ignore: tuple[str, ...] = (), tolerance: int = 0, edges: bool = True) -> DiffResult:
    """Compare two tables, usually of two devices.

    Shapes are matched on every key field except those in `ignore` (e.g. ("backend",) to
    compare a cudnn table with a triton one). Ratios are B/A of `latency_norm_us_p50`. Lines
    (rows that differ only in the channel count of one axis) with at least `MIN_LINE_POINTS`
    counts in both tables are fitted with `stepfit.fit_steps` on *the counts both measured*,
    so a dense and a sparse table are compared at the same resolution. An edge of A counts as
    also in B when B has an edge whose interval (`StepFit.edge_intervals`) overlaps A's, widened
    by `tolerance` counts; the others are "only in A" (and the other way round). The fits
    dominate the time (about 1 s per 2000-count line); `edges=False` skips them.
    """
    bad = [f for f in ignore if f not in KEY_FIELDS or f in _CHANNELS]
    if bad:
        raise LatprofError(f"cannot ignore {', '.join(bad)}: choose among "
                           f"{', '.join(f for f in KEY_FIELDS if f not in _CHANNELS)}")
    keys = [k for k in KEY_FIELDS if k not in ignore]
    fa, fb = (_diff_frame(t, keys, name) for t, name in ((a, names[0]), (b, names[1])))
    both = fa.merge(fb, on=keys, how="outer", suffixes=("_a", "_b"), indicator=True)
    common = both[both["_merge"] == "both"].drop(columns="_merge").reset_index(drop=True)
    common = common.rename(columns={"lat_a": "latency_a_us", "lat_b": "latency_b_us"})
    common["ratio"] = common["latency_b_us"] / common["latency_a_us"]
    common = common[np.isfinite(common["ratio"]) & (common["ratio"] > 0)].reset_index(drop=True)
    lines = [_line_diff(g, keys, axis, tolerance) for axis, g in _line_groups(common, keys)] if edges else []
    va, vb = a.meta.get("versions") or {}, b.meta.get("versions") or {}
    versions = {k: (va.get(k), vb.get(k)) for k in _SOFTWARE if str(va.get(k)) != str(vb.get(k))}
    return DiffResult(names[0], names[1], a.device, b.device,
                      both.loc[both["_merge"] == "left_only", keys].reset_index(drop=True),
                      both.loc[both["_merge"] == "right_only", keys].reset_index(drop=True),
                      common[keys + ["latency_a_us", "latency_b_us", "ratio", "flag_a", "flag_b"]],
                      lines, versions, tuple(ignore), edges, (len(a.df), len(b.df)))


def _diff_frame(t: tbl.LatencyTable, keys: list[str], name: str) -> pd.DataFrame:
    df = t.df
    out = df[keys + [k for k in KEY_FIELDS if k not in keys]].copy()
    out["lat"] = df["latency_norm_us_p50"].astype(float)
    out["flag"] = (df["flag_noisy"] | df["flag_drift"] | df["flag_throttled"]).astype(bool)  # shown
    out["excluded"] = steps.excluded_rows(df)  # left out of the fit, as by `latprof steps`
    dups = int(out.duplicated(subset=keys).sum())
    if dups:
        raise LatprofError(f"{name}: {dups} rows share a shape once {', '.join(set(KEY_FIELDS) - set(keys))} "
                           "is ignored (the table holds several of them); ignore fewer fields")
    return out


def _line_groups(common: pd.DataFrame, keys: list[str]):
    """(axis, rows) for every line with enough common counts, rows sorted by channel count."""
    depthwise = (common["groups"] > 1) & (common["groups"] == common["c_in"]) & (common["c_in"] == common["c_out"])
    for axis, moving in _LINE_AXES.items():
        rows = common[depthwise] if axis == "c" else common
        fixed = [k for k in keys if k not in moving]
        for _, g in rows.groupby(fixed, sort=True):
            if len(g) >= MIN_LINE_POINTS:
                yield axis, g.sort_values("c_out" if axis == "c" else axis)


def _line_diff(g: pd.DataFrame, keys: list[str], axis: str, tolerance: int) -> LineDiff:
    col = "c_out" if axis == "c" else axis
    channels = g[col].astype(int).tolist()
    last = g.iloc[-1]  # the largest common count; fields matching ignored are A's
    base = ConvSpec.from_row({k: last[k] if k in keys else last[f"{k}_a"] for k in KEY_FIELDS})
    line = plan.Line(base, axis, tuple(channels))
    fits = []
    for side in ("a", "b"):
        flags = steps.fit_flags(g[f"excluded_{side}"])
        fits.append(fit_steps(channels, g[f"latency_{side}_us"].to_numpy(float), flagged=flags,
                              noise_rel=steps.FIT_NOISE_REL))
    fa, fb = fits
    return LineDiff(line, tuple(g["latency_a_us"]), tuple(g["latency_b_us"]), fa, fb,
                    _unmatched(fa, fb, tolerance), _unmatched(fb, fa, tolerance))


def _unmatched(x: StepFit, y: StepFit, tol: int) -> tuple[int, ...]:
    return tuple(e for e, (lo, hi) in zip(x.edges, x.edge_intervals)
                 if not any(lo2 - tol <= hi and lo <= hi2 + tol for lo2, hi2 in y.edge_intervals))


def _no_overlap_hint(only_a: pd.DataFrame, only_b: pd.DataFrame) -> str:
    for col in ("backend", "batch", "dtype", "layout", "tile"):
        if col in only_a and col in only_b and len(only_a) and len(only_b):
            va, vb = set(only_a[col]), set(only_b[col])
            if not va & vb:
                return (f"the tables differ in {col} ({', '.join(map(str, sorted(va)))} vs "
                        f"{', '.join(map(str, sorted(vb)))})" + (f"; compare across it with --ignore {col}"
                                                                  if col in ("backend", "tile", "layout") else ""))
    return ""


def plot_diff(result: DiffResult, path: str | Path, max_lines: int = 3) -> Path:
    """PNG: histogram of the B/A ratios, then up to `max_lines` lines (moved ones first) with
    both staircases overlaid and the edges found in only one table marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shown = (result.moved_lines + [d for d in result.lines if not d.moved])[:max_lines]
    fig, axes = plt.subplots(1 + len(shown), 1, figsize=(8, 3.2 * (1 + len(shown))), dpi=100, squeeze=False)
    ax = axes[0][0]
    ratios = result.common["ratio"].to_numpy()
    if len(ratios):
        wide = ratios.max() > 4 * ratios.min()  # log bins only when ratios span more than 4x
        bins = np.geomspace(ratios.min(), ratios.max(), 40) if wide else 40
        ax.hist(ratios, bins=bins, color="tab:blue", alpha=0.8)
        ax.axvline(np.median(ratios), color="tab:red", ls="--", label=f"median {np.median(ratios):.3f}")
        if wide:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no shape in common", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("latency ratio B / A (drift-normalised median)")
    ax.set_ylabel("shapes")
    ax.set_title(f"A = {result.name_a} ({result.device_a.get('name')}), B = {result.name_b} "
                 f"({result.device_b.get('name')})", fontsize=9)
    for d, row in zip(shown, axes[1:]):
        ax = row[0]
        for side, lat, fit, color, marker, ls in (("A", d.latency_a_us, d.fit_a, "tab:blue", "o", "-"),
                                                  ("B", d.latency_b_us, d.fit_b, "tab:orange", "x", "--")):
            ax.scatter(d.line.values, lat, s=12, color=color, marker=marker, label=f"{side} measured", zorder=3)
            for i, seg in enumerate(fit.segments):
                ax.hlines(seg.level, seg.start - 0.5, seg.end + 0.5, color=color, lw=2, ls=ls,
                          label=f"{side} plateaus" if i == 0 else None)
        for e in d.only_a:
            ax.axvline(e, color="tab:blue", ls=":", lw=1)
        for e in d.only_b:
            ax.axvline(e, color="tab:orange", ls=":", lw=1)
        ax.set_xlabel(d.line.axis)
        ax.set_ylabel("latency (us)")
        ax.set_title(f"{d.line.axis} of {d.line.base.label()}: only A {list(d.only_a)}, only B {list(d.only_b)}",
                     fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
