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
    """One conv. Its input channels are the channels of every prunable group in `g_ins` (several
    after a concatenation) plus channels no search changes; pruning group k by d channels takes
    d channels off its c_in."""

    name: str
    spec: ConvSpec             # the conv at full size, with the table's batch/dtype/backend
    g_ins: tuple[int, ...]     # prunable groups its input channels come from (empty: all fixed)
    g_out: int | None          # the group its output channels belong to (None: fixed)
    unit: int = 1              # input features per channel of its input groups (a Linear after a flatten)

    @property
    def g_in(self) -> int | None:
        """The one input group of a conv that reads one (None when it reads none, or several)."""
        return self.g_ins[0] if len(self.g_ins) == 1 else None

    def inputs(self) -> tuple[int, ...]:
        """The input groups its c_in depends on. A depthwise conv is looked up by its output group
        alone (its c_in is its c_out); a grouped conv whose input and output are coupled lists
        that group here and as `g_out`."""
        return () if self.spec.depthwise else self.g_ins


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
    local: int = 0                              # closed-loop candidates the constant was last shifted on
    local_shift_us: float = 0.0                 # that shift, included in rest_us (may be negative)
    missing: set = field(default_factory=set)   # ConvSpecs a lookup needed and the table lacks
    missing_lines: list = field(default_factory=list)   # whole lines the table cannot fit (their specs in missing)
    #: price a (c_in, c_out) pair the table lacks from the layer's two lines (`pair_estimate`)
    #: instead of listing it as missing; prune does, a sweep planning what to measure does not
    estimate_pairs: bool = False
    estimated: set = field(default_factory=set)  # ConvSpecs priced that way

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
        if level is None and axis_count is None and self.estimate_pairs:
            level = self.pair_estimate(s, c_in, c_out)
            if level is not None:
                self.estimated.add(spec)
                return level
        if level is None:
            self.missing.add(spec)
        return level

    def pair_estimate(self, s: ConvSpec, c_in: int, c_out: int) -> float | None:
        """The separable grid model (`options.grid_predict`) on the layer's two fitted lines, for a
        pair the sweep did not measure (its fits moved after it planned the pairs, e.g. when rows
        measured under contention were set aside); None when either count lies in an unresolved
        interval."""
        out, inp = self.fits.get((s, "c_out")), self.fits.get((s, "c_in"))
        if out is None or inp is None:
            return None
        return options.grid_predict(steps.LayerSteps("", s, out, inp), c_in, c_out)

    def c_in(self, term: ConvTerm, counts) -> int:
        """The input channels `term` receives when group k keeps counts[k] (a list, or a dict of
        the groups that change): its full c_in less what each of its input groups lost."""
        keys = range(len(counts)) if isinstance(counts, list) else counts
        lost = sum(self.graph.groups[k].channels - counts[k] for k in term.inputs() if k in keys)
        return term.spec.c_in - lost * term.unit

    def term_cost(self, term: ConvTerm, counts) -> float | None:
        """Latency (us) of one conv under `counts` (a list per group, or a dict of some groups).

        A conv reading one group is looked up at its exact (c_in, c_out). A conv reading several
        (a concatenation) is priced to first order, as the search sees it: its cost with every
        input group whole, plus, per input group, the change when only that group is pruned;
        exact when at most one of them is pruned, and close otherwise because a conv's cost
        moves nearly in proportion to c_in (`term_tables` says why the search needs this form)."""
        keys = range(len(counts)) if isinstance(counts, list) else counts
        co = counts[term.g_out] if term.g_out is not None and term.g_out in keys else term.spec.c_out
        ins = [k for k in term.inputs() if k in keys]
        if len(ins) <= 1:
            return self.lookup(term, self.c_in(term, counts), co)
        whole = self.lookup(term, term.spec.c_in, co)
        parts = [self.lookup(term, self.c_in(term, {k: counts[k]}), co) for k in ins]
        if whole is None or any(p is None for p in parts):
            return None
        return whole + sum(p - whole for p in parts)

    def conv_sum(self, counts: list[int]) -> float:
        """Sum of conv costs for channel counts per group (NaN if any is missing)."""
        total = 0.0
        for t in self.terms:
            v = self.term_cost(t, counts)
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
                       terms=tuple(Term(gs, table) for gs, table in terms), constant=constant, target=target_us,
                       unit=" us")

    def term_tables(self) -> tuple[list[tuple[tuple[int, ...], np.ndarray]], float]:
        """Per conv: the groups it depends on and its scaled latency for every pair of their options
        (NaN where the table lacks the shape, which `missing` then holds); and the constant part.
        Every option pair is looked up, so after one call `missing` lists all a search could need."""
        out, constant = [], self.rest_us
        for t in self.terms:
            ins = t.inputs()
            if len(ins) <= 1:
                gs = tuple(dict.fromkeys(ins + ((t.g_out,) if t.g_out is not None else ())))
                if not gs:
                    constant += self.scale * _required(self.lookup(t, t.spec.c_in, t.spec.c_out))
                    continue
                out.append(self._table(t, gs, lambda pick: self.term_cost(t, pick)))
                continue
            # A concatenation's consumer depends on all its input groups and its output group, but a
            # term spans at most two groups: split its first-order cost (`term_cost`) into one pair
            # term per input group. The first carries the cost with only its group pruned; each other
            # carries the change its group makes, shifted by its smallest value (into the constant)
            # so that every table stays >= 0 as the searchers require.
            tail = (t.g_out,) if t.g_out is not None and t.g_out not in ins else ()
            first, *rest = ins
            out.append(self._table(t, (first,) + tail, lambda pick: self.term_cost(t, pick)))
            for k in rest:
                def delta(pick, k=k):
                    whole = self.lookup(t, t.spec.c_in, pick.get(t.g_out, t.spec.c_out))
                    part = self.term_cost(t, pick)
                    return None if whole is None or part is None else part - whole
                gs, table = self._table(t, (k,) + tail, delta)
                low = np.nanmin(table) if np.isfinite(table).any() else 0.0
                out.append((gs, table - low))
                constant += low
        return out, constant

    def _table(self, term: ConvTerm, gs: tuple[int, ...], cost) -> tuple[tuple[int, ...], np.ndarray]:
        """`cost(pick)` (us, or None when the table lacks a shape) scaled, for every option of the
        groups `gs`, as a latency term in ascending group order."""
        shape = tuple(len(self.options[g]) for g in gs)
        table = np.empty(shape)
        for idx in np.ndindex(*shape):
            v = cost({g: self.options[g][i] for g, i in zip(gs, idx)})
            table[idx] = np.nan if v is None else self.scale * v
        if len(gs) == 2 and gs[0] > gs[1]:
            gs, table = gs[::-1], table.T
        return gs, table


def _required(v):
    return np.nan if v is None else v


def build(graph: Graph, table, ctx: Context, *, min_keep: float = options.MIN_KEEP,
          max_options: int = options.MAX_OPTIONS, fitted: tuple | None = None) -> LatencyModel:
    """Terms for every conv and Linear layer of the graph's model, fitted lines, and each group's options.
    `fitted`: the (table index, line fits) of another `build` on the same model, table and context
    (the lines do not depend on the groups), so that they are not fitted again."""
    layers = models.conv_layers(graph.model, graph.input_size)
    g_ins, g_out = {}, {}
    for g in graph.groups:
        for name in g.out_convs:
            g_out[name] = g.index
        for name in g.in_convs:
            g_ins.setdefault(name, []).append(g.index)
    terms, bases = [], []
    for layer in layers:
        spec = ctx.apply(layer.spec)
        terms.append(ConvTerm(layer.name, spec, tuple(g_ins.get(layer.name, ())), g_out.get(layer.name),
                              layer.unit))
        bases.append(layer)
    if fitted is None:
        index = steps.TableIndex(table)
        fitted = index, {(line.base, line.axis): steps.fit_line(index, line) for line in plan.model_lines(bases, ctx)}
    index, fits = fitted
    group_options, missing, missing_lines = [], set(), []
    for g in graph.groups:
        root = next(t for t in terms if t.name == g.root)
        fit = fits.get((root.spec, "c" if root.spec.depthwise else "c_out"))
        if fit is None:
            raise LatprofError(f"no c_out line for {g.root} ({root.spec.label()}); this is a bug in latprof")
        if fit.missing:  # no options without the line: ask for it (with every other lack, in one request)
            missing_lines.append(fit.line)
            missing |= {s for s in fit.line.specs() if index.get(s) is None}
            group_options.append([g.channels])
            continue
        opts = options.channel_options(fit, min_keep, max_options)
        group_options.append([c for c in opts if c % g.step == 0] or [g.channels])
    return LatencyModel(graph, terms, fits, index, group_options, missing=missing, missing_lines=missing_lines)


def search_space_specs(model: str, table, ctx: Context, *, input_size=None, min_keep: float = options.MIN_KEEP,
                       max_options: int = options.MAX_OPTIONS,
                       keep_residual: bool | None | tuple = None) -> list[ConvSpec]:
    """Every shape `latprof prune MODEL` (with these options) would look up that `table` lacks:
    what a model sweep measures after its lines, so that prune needs no request round. A tuple of
    `keep_residual` values: the shapes of every one of those search spaces (the model is loaded
    and its lines fitted once)."""
    from latprof.prune import graph as graphs

    net, size = models.load(model, input_size)
    missing, fitted = {}, None
    for keep in keep_residual if isinstance(keep_residual, tuple) else (keep_residual,):
        lm = build(graphs.analyse(net, size, keep_residual=keep), table, ctx, min_keep=min_keep,
                   max_options=max_options, fitted=fitted)
        fitted = lm.index, lm.fits
        lm.term_tables()
        missing.update(dict.fromkeys(lm.missing))
    return sorted(missing)


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
