"""Predicted latency of a channel configuration, from the tables alone.

    latency(config) = scale * sum over convs f_conv(c_in, c_out) + rest

f_conv comes from the raw table: a measured row when the table has that exact shape, else
the plateau level of the fitted staircase when the count lies inside a plateau (both ends of
which were measured). Nothing is interpolated across a step: a count in an unresolved edge
interval, or a (c_in, c_out) pair the table lacks, is *missing*, and the caller gets the
list (and can write a request file for `latprof sweep --request`). `scale` and `rest` come
from whole-model measurements when the table's device is this machine (`calibrate`), else
1 and 0 (the conv layers only, which the report says).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from latprof import models
from latprof.models import lines as plan
from latprof.staircase import lines as steps
from latprof.staircase import options
from latprof.errors import LatprofError
from latprof.prune.graph import Graph
from latprof.spec import ConvSpec, Context


@dataclass(frozen=True)
class ConvTerm:
    name: str
    spec: ConvSpec             # the conv at full size, with the table's batch/dtype/backend
    g_in: int | None           # index of the group its input channels belong to (None: fixed)
    g_out: int | None          # index of the group its output channels belong to


@dataclass
class LatencyModel:
    graph: Graph
    terms: list[ConvTerm]
    fits: dict[tuple, steps.LineFit]
    index: steps.TableIndex
    options: list[list[int]]                    # per group: allowed counts, ascending, last = original
    scale: float = 1.0
    rest_us: float = 0.0
    calibrated: bool = False
    missing: set = field(default_factory=set)   # ConvSpecs a lookup needed and the table lacks

    def lookup(self, term: ConvTerm, c_in: int, c_out: int) -> float | None:
        s = term.spec
        if s.depthwise:
            spec, fit = s.replace(c_in=c_out, c_out=c_out, groups=c_out), self.fits.get((s, "c"))
            axis_count = c_out
        elif c_in == s.c_in:
            spec, fit, axis_count = s.replace(c_out=c_out), self.fits.get((s, "c_out")), c_out
        elif c_out == s.c_out:
            spec, fit, axis_count = s.replace(c_in=c_in), self.fits.get((s, "c_in")), c_in
        else:
            spec, fit, axis_count = s.replace(c_in=c_in, c_out=c_out), None, None
        got = self.index.get(spec)
        if got is not None:
            return got[0]
        level = fit.level_at(axis_count) if fit is not None else None
        if level is None:
            self.missing.add(spec)
        return level

    def conv_sum(self, counts: list[int]) -> float:
        """Sum of conv lookups for channel counts per group (NaN if any is missing)."""
        total = 0.0
        for t in self.terms:
            ci = counts[t.g_in] if t.g_in is not None else t.spec.c_in
            co = counts[t.g_out] if t.g_out is not None else t.spec.c_out
            v = self.lookup(t, ci, co)
            total += np.nan if v is None else v
        return total

    def predict(self, counts: list[int]) -> float:
        return self.scale * self.conv_sum(counts) + self.rest_us

    def full_counts(self) -> list[int]:
        return [g.channels for g in self.graph.groups]

    def problem(self, values: list[np.ndarray], target_us: float):
        """The search problem over option indices (see `latprof.search.problem`)."""
        from latprof.search.problem import Problem, Term

        terms, constant = self.term_tables()
        return Problem(options=tuple(tuple(o) for o in self.options), value=tuple(values),
                       terms=tuple(Term(gs, table) for gs, table in terms), constant=constant, target=target_us)

    def term_tables(self) -> tuple[list[tuple[tuple[int, ...], np.ndarray]], float]:
        """Per conv: the groups it depends on and its scaled latency for every pair of their options
        (NaN where the table lacks the shape, which `missing` then holds); and the constant part.
        Every option pair is looked up, so after one call `missing` lists all a search could need."""
        out, constant = [], self.rest_us
        for t in self.terms:
            gs = tuple(g for g in (t.g_in, t.g_out) if g is not None)
            if len(gs) == 2 and gs[0] == gs[1]:
                gs = gs[:1]
            if not gs:
                constant += self.scale * _required(self.lookup(t, t.spec.c_in, t.spec.c_out))
                continue
            shape = tuple(len(self.options[g]) for g in gs)
            table = np.empty(shape)
            for idx in np.ndindex(*shape):
                pick = dict(zip(gs, (self.options[g][i] for g, i in zip(gs, idx))))
                ci = pick.get(t.g_in, t.spec.c_in)
                co = pick.get(t.g_out, t.spec.c_out)
                v = self.lookup(t, ci, co)
                table[idx] = np.nan if v is None else self.scale * v
            if len(gs) == 2 and gs[0] > gs[1]:
                gs, table = gs[::-1], table.T
            out.append((gs, table))
        return out, constant


def _required(v):
    return np.nan if v is None else v


def build(graph: Graph, table, ctx: Context, *, min_keep: float = options.MIN_KEEP,
          max_options: int = options.MAX_OPTIONS) -> LatencyModel:
    """Terms for every conv of the graph's model, fitted lines, and each group's options."""
    layers = models.conv_layers(graph.model, graph.input_size)
    g_in, g_out = {}, {}
    for g in graph.groups:
        for name in g.out_convs:
            g_out[name] = g.index
        for name in g.in_convs:
            g_in[name] = g.index
    terms, bases = [], []
    for layer in layers:
        spec = ctx.apply(layer.spec)
        terms.append(ConvTerm(layer.name, spec, g_in.get(layer.name), g_out.get(layer.name)))
        bases.append(layer)
    index = steps.TableIndex(table)
    lines = plan.model_lines(bases, ctx)
    fits = {(line.base, line.axis): steps.fit_line(index, line) for line in lines}
    group_options = []
    for g in graph.groups:
        root = next(t for t in terms if t.name == g.root)
        fit = fits.get((root.spec, "c" if root.spec.depthwise else "c_out"))
        if fit is None or fit.missing:
            raise LatprofError(f"the table lacks the c_out line of {g.root} ({root.spec.label()}); "
                               f"measure the model with `latprof sweep --model ... --batch {ctx.batch}`")
        opts = options.channel_options(fit, min_keep, max_options)
        step = max(root.spec.groups if not root.spec.depthwise else 1, 1)
        group_options.append([c for c in opts if c % step == 0] or [g.channels])
    return LatencyModel(graph, terms, fits, index, group_options)


def fit_calibration(predicted: list[float], measured: list[float]) -> tuple[float, float]:
    """Least-squares measured = scale * predicted + rest (rest >= 0; with one point, rest only)."""
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if not (np.isfinite(p).all() and np.isfinite(m).all()):
        raise LatprofError("calibration needs finite predicted and measured latencies; "
                           f"got predicted {p.tolist()} and measured {m.tolist()}")
    if len(p) == 1 or np.ptp(p) < 1e-9:
        return 1.0, float(max(m.mean() - p.mean(), 0.0))
    scale, rest = np.polyfit(p, m, 1)
    if rest < 0:
        scale, rest = float(m @ p / (p @ p)), 0.0
    return float(scale), float(rest)
