"""Exact dynamic programming over the groups' interaction graph (variable elimination).

Structure. Groups are the variables; the latency terms over one group (summed) and over several
groups are the factors; two groups that share a term are neighbours. dp eliminates the groups one
at a time in a greedy min-fill order (fewest new edges, then fewest neighbours, then lowest
index). Eliminating group v turns everything that mentions v into one *message* over v's
remaining neighbours: per assignment of them and per number of latency bins, the best value of
the groups eliminated so far. A chain (VGG; ResNets and MobileNets with whole residual streams)
is eliminated front to back, one group at a time: the HALP-style multiple-choice knapsack over
a chain that dp was before, at the same cost. An inception block (one group feeding four branches whose
outputs meet in one consumer) has width 2, a dense block of k layers each reading all earlier
outputs has width k - 1. Where two messages meet (branches joining), their budgets are combined
by a max-plus convolution over the bins; only the bin columns where one of the two tables rises
are visited (those of the table that rises in fewer), so a branch of a few groups costs little
even against a long trunk. Terms over more than two groups would be handled the same way.

Fallback. The *width* of an order is the largest number of neighbours a group has when it is
eliminated; tables grow as options ** width * (bins + 1). When the width exceeds ``MAX_WIDTH``,
the messages would hold more than ``MAX_CELLS`` cells, the elimination would pass ``MAX_WORK``
cell updates, or the bin grid hides every feasible configuration (see below), dp runs ``evo``
(``FALLBACK_EVO`` settings, same seed) instead and says why in ``SearchResult.note``; the result
is then evo's (``name == "evo"``) and is not proven optimal. ``plan`` gives the order and width.

Discretisation. Terms over the same groups are summed into one factor, and each one-group
factor is folded into a factor over more groups that holds its group, where there is one. Each
factor's latency is split into its smallest entry (the least it can cost, whatever the choice)
plus an excess. The budget left for the excesses, ``target - constant - sum(factor minima)``,
is cut into ``bins`` equal bins of width ``w`` (``bin_width``), and each factor's excess is
rounded UP to a whole number of bins (separately per factor). Because every factor is rounded
up, the configuration returned is exactly feasible (it is also checked against
``problem.latency``). The price: a configuration within ``n_factors * w`` of the target may be
seen as over budget, so the result is at least as good as the optimum among configurations with
latency ``<= target - n_factors * w`` (n_factors <= number of terms), and at most the true
optimum. Latencies that sit on the bin grid are solved exactly. Discretising only the excess
spends the bins where choices differ: for a tight target most of the latency is the unavoidable
minimum. With 2000 bins and ~40 factors the band is 2% of that excess budget; raise ``bins`` to
narrow it (time and memory grow linearly, max-plus convolutions up to quadratically).

Cost: a chain of 20 groups x 9 options x 2000 bins takes tens of milliseconds.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from latprof.errors import LatprofError

from .common import Fitness, Repairer, SearchResult, check_int
from .evo import search_evo
from .problem import Problem

MAX_WIDTH = 3                # most neighbours a group may have when it is eliminated
MAX_CELLS = 40_000_000       # most cells (8 bytes each) in all message tables, kept for backtracking
MAX_WORK = 1_000_000_000     # most cell updates in one elimination (3-7 ns each on a 2-core CPU)
FALLBACK_EVO = {"population": 40, "cycles": 60}  # a cheap fitness affords more than evo's defaults


class _TooMuchWork(Exception):
    """Raised inside the elimination when it passes MAX_WORK cell updates."""


# --- factors and the elimination order ----------------------------------------------------

def _factors(problem: Problem) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """(scope, latency table) per factor: terms summed per set of groups, axes in ascending group
    order; a one-group factor is folded into the first factor over more groups holding it."""
    by_scope: dict[tuple[int, ...], np.ndarray] = {}
    for t in problem.terms:
        scope = tuple(sorted(t.groups))
        table = np.transpose(t.table, np.argsort(t.groups))
        by_scope[scope] = by_scope[scope] + table if scope in by_scope else table
    for scope in [s for s in by_scope if len(s) == 1]:
        host = next((s for s in by_scope if len(s) > 1 and scope[0] in s), None)
        if host is not None:
            shape = [1] * len(host)
            shape[host.index(scope[0])] = -1
            by_scope[host] = by_scope[host] + by_scope.pop(scope).reshape(shape)
    return list(by_scope.items())


def _minima(factors) -> list[float]:
    """Smallest entry of each factor (NaN for a factor with no measured entry at all)."""
    return [float(np.nanmin(t)) if np.isfinite(t).any() else float("nan") for _, t in factors]


def bin_width(problem: Problem, bins: int = 2000) -> float:
    """Width ``w`` of one latency bin (table unit): the budget above the factor minima, / bins.

    Negative or NaN when no configuration can meet the target.
    """
    return (problem.target - problem.constant - sum(_minima(_factors(problem)))) / bins


@dataclass(frozen=True)
class Plan:
    """An elimination order. ``width``: most neighbours of a group when eliminated (1 for a
    chain); ``cells``: the options of those neighbours multiplied, summed over the order (the
    message tables hold ``cells * (bins + 1)`` numbers)."""

    order: tuple[int, ...]
    width: int
    cells: int


def plan(problem: Problem) -> Plan:
    """The greedy min-fill elimination order of the problem's interaction graph."""
    n = [len(o) for o in problem.options]
    adj: list[set[int]] = [set() for _ in n]
    for scope, _ in _factors(problem):
        for g in scope:
            adj[g].update(h for h in scope if h != g)
    alive, order, width, cells = set(range(len(n))), [], 0, 0

    def fill(v: int) -> int:
        nb = sorted(adj[v])
        return sum(1 for i, a in enumerate(nb) for b in nb[i + 1:] if b not in adj[a])

    while alive:
        v = min(alive, key=lambda u: (fill(u), len(adj[u]), u))
        width = max(width, len(adj[v]))
        cells += int(np.prod([n[u] for u in adj[v]], dtype=np.float64))
        for a in adj[v]:
            adj[a].update(adj[v] - {a})
            adj[a].discard(v)
        alive.discard(v)
        order.append(v)
    return Plan(tuple(order), width, cells)


# --- tables over bins ----------------------------------------------------------------------

def _to_bins(table: np.ndarray, low: float, width: float, forbid: int) -> np.ndarray:
    """Excess over ``low`` in whole bins, rounded up, capped at ``forbid`` (NaN: forbidden)."""
    excess = table - low
    if width > 0:
        with np.errstate(invalid="ignore", over="ignore"):
            cost = np.ceil(excess / width)
    else:  # zero budget: only minimal entries fit
        cost = np.where(excess <= 0, 0.0, np.inf)
    return np.where(np.isnan(cost), forbid, np.minimum(cost, forbid)).astype(np.int64)


def _breaks(f: np.ndarray) -> np.ndarray:
    """Bin columns where some row of a non-decreasing table rises (or starts)."""
    rows = f.reshape(-1, f.shape[-1])
    rise = np.empty(rows.shape, dtype=bool)
    rise[:, 0] = rows[:, 0] > -np.inf
    rise[:, 1:] = rows[:, 1:] > rows[:, :-1]
    return np.flatnonzero(rise.any(axis=0))


class _Work:
    def __init__(self):
        self.done = 0

    def add(self, cells: int):
        self.done += int(cells)
        if self.done > MAX_WORK:
            raise _TooMuchWork


def _maxplus(f: np.ndarray, g: np.ndarray, work: _Work) -> np.ndarray:
    """``out[..., b] = max_k f[..., k] + g[..., b - k]`` for non-decreasing tables (last axis =
    bins; other axes broadcast). Only columns where one operand rises can win, so those of the
    operand with fewer are visited."""
    bf, bg = _breaks(f), _breaks(g)
    if len(bg) < len(bf):
        f, g, bf = g, f, bg
    shape = np.broadcast_shapes(f.shape, g.shape)
    nb1 = shape[-1]
    work.add(len(bf) * int(np.prod(shape)))
    out = np.full(shape, -np.inf)
    for k in bf:
        np.maximum(out[..., k:], f[..., k:k + 1] + g[..., : nb1 - k], out=out[..., k:])
    return out


def _fold(tables: list[np.ndarray], nb1: int, work: _Work) -> list[np.ndarray]:
    """Running max-plus combinations of ``tables`` (at least one: an empty list is the table of
    "nothing spent", 0 everywhere)."""
    if not tables:
        return [np.zeros(nb1)]
    out = [tables[0]]
    for t in tables[1:]:
        out.append(_maxplus(out[-1], t, work))
    return out


def _shift(table: np.ndarray, cost: np.ndarray, forbid: int) -> np.ndarray:
    """``out[..., b] = table[..., b - cost]`` (-inf where ``b < cost``), broadcasting;
    ``0 <= cost <= forbid``. Each row is one contiguous window of the table padded with -inf."""
    nb1 = table.shape[-1]
    pad = np.concatenate([np.full(table.shape[:-1] + (forbid,), -np.inf), table], axis=-1)
    win = np.lib.stride_tricks.sliding_window_view(pad, nb1, axis=-1)  # (..., forbid + 1, nb1)
    lead = np.broadcast_shapes(table.shape[:-1], cost.shape)
    win = np.broadcast_to(win, lead + win.shape[-2:])
    idx = np.broadcast_to((forbid - cost)[..., None, None], lead + (1, 1))
    return np.take_along_axis(win, idx, axis=-2)[..., 0, :]


def _align(table: np.ndarray, scope, v: int, j: int, onto, trailing: int = 0) -> np.ndarray:
    """``table`` (axes: ``scope``, then ``trailing`` more) at group ``v`` = option ``j``,
    reshaped to broadcast over the groups ``onto`` (sorted, a superset of scope minus v)."""
    sub = table[tuple(j if g == v else slice(None) for g in scope)]
    rest = [g for g in scope if g != v]
    shape = [sub.shape[rest.index(g)] if g in rest else 1 for g in onto]
    return sub.reshape(shape + list(sub.shape[len(rest):len(rest) + trailing]))


# --- elimination and backtracking ------------------------------------------------------------

@dataclass
class _Bucket:
    v: int
    scope: tuple[int, ...]      # the message's groups (v's neighbours when eliminated)
    costs: list                 # (scope, bins table) of the factors over v
    inputs: list[int]           # message ids over v, in fold order
    out: int                    # message id it produces


# One function: elimination and the traceback that recovers the choice walk the same factor
# list in opposite orders.
def _solve(problem: Problem, order, shrink: float, bins: int) -> tuple[int, ...] | None:
    """The best configuration whose rounded-up cost fits ``bins``, or None if none does.

    ``shrink`` (table unit) is taken off the budget, to absorb float rounding when needed.
    """
    factors = _factors(problem)
    minima = _minima(factors)
    budget = problem.target - problem.constant - sum(minima) - shrink
    if not budget >= 0:  # also NaN: a factor with no measured entry
        return None
    width = budget / bins if budget > 0 else 0.0
    nb = bins if budget > 0 else 0
    forbid = nb + 1  # any use of it exceeds the budget
    n = [len(o) for o in problem.options]
    pool = [(s, _to_bins(t, low, width, forbid)) for (s, t), low in zip(factors, minima)]
    messages: list[tuple[tuple[int, ...], np.ndarray]] = []
    live: list[int] = []
    buckets: list[_Bucket] = []
    work = _Work()
    for v in order:
        costs = [f for f in pool if v in f[0]]
        pool = [f for f in pool if v not in f[0]]
        inputs = [m for m in live if v in messages[m][0]]
        live = [m for m in live if v not in messages[m][0]]
        scope = tuple(sorted(({g for s, _ in costs for g in s}
                              | {g for m in inputs for g in messages[m][0]}) - {v}))
        dims = tuple(n[g] for g in scope)
        work.add(n[v] * int(np.prod(dims)) * (nb + 1))
        best = np.full(dims + (nb + 1,), -np.inf)
        for j in range(n[v]):
            cost = np.zeros([1] * len(scope), dtype=np.int64)
            for s, t in costs:
                cost = cost + _align(t, s, v, j, scope)
            comb = _fold([_align(messages[m][1], messages[m][0], v, j, scope, 1) for m in inputs], nb + 1, work)
            np.maximum(best, _shift(comb[-1] + problem.value[v][j], np.minimum(cost, forbid), forbid), out=best)
        messages.append((scope, best))
        live.append(len(messages) - 1)
        buckets.append(_Bucket(v, scope, costs, inputs, len(messages) - 1))

    rows = [messages[m][1] for m in live]
    folds = _fold(rows[:-1], nb + 1, work)
    if _best_split(folds[-1], rows[-1], nb)[0] == -np.inf:
        return None
    spend = dict(zip(live, _split(folds, rows, nb)))
    choice = [0] * len(n)
    for bk in reversed(buckets):
        left = spend[bk.out]
        at = tuple(choice[g] for g in bk.scope)
        best_val, best_j, best_rows, best_left = -np.inf, -1, None, 0
        for j in range(n[bk.v]):
            cost = sum(int(t[tuple(j if g == bk.v else choice[g] for g in s)]) for s, t in bk.costs)
            if cost > left:
                continue
            rows = [messages[m][1][tuple(j if g == bk.v else choice[g] for g in messages[m][0])]
                    for m in bk.inputs]
            folds = _fold(rows[:-1], nb + 1, work)  # the last row is met at one budget only
            val = _best_split(folds[-1], rows[-1] if rows else None, left - cost)[0] + problem.value[bk.v][j]
            if val > best_val:
                best_val, best_j, best_rows, best_left = val, j, (folds, rows), left - cost
        assert best_j >= 0, f"internal: dp backtrack found no option for group {bk.v} at {at}"
        choice[bk.v] = best_j
        spend.update(zip(bk.inputs, _split(*best_rows, best_left)))
    return tuple(choice)


def _best_split(fold: np.ndarray, row: np.ndarray | None, left: int) -> tuple[float, int]:
    """Best ``fold[left - k] + row[k]`` over ``k`` in 0..left, and that k (``fold[left]``, 0
    without a row)."""
    if row is None:
        return float(fold[left]), 0
    cand = fold[left::-1] + row[: left + 1]
    k = int(np.argmax(cand))
    return float(cand[k]), k


def _split(folds: list[np.ndarray], rows: list[np.ndarray], left: int) -> list[int]:
    """Bins given to each of ``rows`` (``folds``: running combinations of all but the last
    row) so that their values add up to the best total within ``left`` bins."""
    out = [0] * len(rows)
    for i in range(len(rows) - 1, 0, -1):
        out[i] = _best_split(folds[i - 1], rows[i], left)[1]
        left -= out[i]
    if rows:
        out[0] = left
    return out


def search_dp(problem: Problem, *, seed: int = 0, fitness: Fitness | None = None,
              bins: int = 2000) -> SearchResult:
    """Best total value within the target, by variable elimination (see module docstring).

    ``seed`` is only used by the evo fallback: dp itself is deterministic. ``fitness`` must be
    None: dp needs an additive objective (``problem.value``); use evo or abc for an arbitrary
    fitness. ``evaluations`` is 0 (no fitness calls); ``history`` is ``[value]``. When dp gives
    way to evo, the result is evo's and ``note`` says why.
    """
    t0 = time.perf_counter()
    if fitness is not None:
        raise LatprofError("dp maximises the sum of per-group values and cannot take a fitness "
                           "function; use the evo or abc searcher for accuracy-in-the-loop search")
    bins = check_int("bins", bins)
    order = plan(problem)
    if order.width > MAX_WIDTH or order.cells * (bins + 1) > MAX_CELLS:
        why = (f"its interaction graph has width {order.width} (dp solves up to {MAX_WIDTH})"
               if order.width > MAX_WIDTH else
               f"its tables would hold {order.cells * (bins + 1):,} cells (dp allows {MAX_CELLS:,}; "
               "fewer bins shrink them)")
        return _fallback(problem, seed, t0, why)
    try:
        choice = _solve(problem, order.order, 0.0, bins)
        if choice is not None and not problem.feasible(choice):
            # Float rounding in the bin arithmetic; a hair less budget restores the guarantee.
            choice = _solve(problem, order.order, 1e-9 * (abs(problem.target) + 1.0), bins)
    except _TooMuchWork:
        return _fallback(problem, seed, t0, f"the elimination (width {order.width}) would take more than "
                                            f"{MAX_WORK:,} cell updates")
    if choice is None:
        Repairer(problem)  # raises `unreachable` if nothing fits at all
        return _fallback(problem, seed, t0, f"at bins={bins} (bin width {bin_width(problem, bins):.3g}) every "
                                            "configuration within the target rounds up over it; raise bins "
                                            "for an exact answer")
    assert problem.feasible(choice), "internal: dp returned an infeasible configuration"
    value = problem.total_value(choice)
    return SearchResult(choice=choice, value=value, latency=problem.latency(choice), evaluations=0,
                        seconds=time.perf_counter() - t0, name="dp", history=[value])


def _fallback(problem: Problem, seed: int, t0: float, why: str) -> SearchResult:
    result = search_evo(problem, seed=seed, **FALLBACK_EVO)
    return dataclasses.replace(result, seconds=time.perf_counter() - t0,
                               note=f"dp fell back to evo: {why}; evo's result is not proven optimal")
