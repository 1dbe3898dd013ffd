"""Exact dynamic programming over a chain of groups (a HALP-style multiple-choice knapsack).

Structure required: every term depends on one group, or on two *consecutive* groups (g, g+1)
in the problem's group order. That is the shape of VGG-like networks, and of ResNets and
MobileNets when the residual channels are kept whole (each block's inner convs form the chain
and the residual stream contributes single-group terms). Anything else raises: use evo or abc.

Discretisation. Each term's latency is split into its smallest entry (the least it can cost,
whatever the choice) plus an excess. The budget left for the excesses,
``target - constant - sum(term minima)``, is cut into ``bins`` equal bins of width ``w``, and
each term's excess is rounded UP to a whole number of bins (separately per term). The DP keeps,
for each group, option and number of bins used, the best value of the groups so far. Because
every term is rounded up, the configuration returned is exactly feasible (it is also checked
against ``problem.latency``). The price: a configuration within ``n_terms * w`` of the target
may be seen as over budget, so the result is at least as good as the optimum among
configurations with latency ``<= target - n_terms * w``, and at most the true optimum.
Discretising only the excess (not the whole budget) spends the bins where choices differ:
for a tight target most of the latency is the unavoidable minimum. With 2000 bins and ~40
terms the band is 2% of that excess budget; raise ``bins`` to narrow it (time and memory grow
linearly). ``bin_width`` gives ``w``.

Cost: ``sum_g n_g * n_{g+1} * (bins + 1)`` cell updates, vectorised; 20 groups x 9 options x
2000 bins takes tens of milliseconds.
"""

from __future__ import annotations

import time

import numpy as np

from latprof.errors import LatprofError

from .common import Fitness, Repairer, SearchResult, check_int
from .problem import Problem


def _minima(problem: Problem) -> list[float]:
    """Smallest entry of each term (NaN for a term with no measured entry at all)."""
    return [float(np.nanmin(t.table)) if np.isfinite(t.table).any() else float("nan")
            for t in problem.terms]


def bin_width(problem: Problem, bins: int = 2000) -> float:
    """Width ``w`` of one latency bin (table unit): the budget above the term minima, / bins.

    Negative or NaN when no configuration can meet the target.
    """
    return (problem.target - problem.constant - sum(_minima(problem))) / bins


def _chain_costs(problem: Problem, width: float, bins: int):
    """Per-group single costs and per-link pair costs, in whole bins (excess over each term's
    minimum, rounded up, capped at ``bins + 1`` = forbidden)."""
    forbid = bins + 1  # any use of it exceeds the budget

    def to_bins(table: np.ndarray, low: float) -> np.ndarray:
        excess = table - low
        if width > 0:
            with np.errstate(invalid="ignore", over="ignore"):
                cost = np.ceil(excess / width)
        else:  # zero budget: only minimal entries fit
            cost = np.where(excess <= 0, 0.0, np.inf)
        return np.where(np.isnan(cost), forbid, np.minimum(cost, forbid)).astype(np.int64)

    n = [len(o) for o in problem.options]
    single = [np.zeros(k, dtype=np.int64) for k in n]
    pair = [np.zeros((n[g], n[g + 1]), dtype=np.int64) for g in range(len(n) - 1)]
    for t, low in zip(problem.terms, _minima(problem)):
        if len(t.groups) == 1:
            single[t.groups[0]] += to_bins(t.table, low)
            continue
        g, h = t.groups
        if h == g + 1:
            pair[g] += to_bins(t.table, low)
        elif g == h + 1:
            pair[h] += to_bins(t.table.T, low)
        else:
            raise LatprofError(
                f"dp needs chain structure: every two-group term must couple consecutive groups "
                f"(g, g+1), but one couples groups {g} and {h}. Reorder the groups so coupled "
                "ones are adjacent, or use the evo or abc searcher, which take any structure.")
    return [np.minimum(s, forbid) for s in single], [np.minimum(p, forbid) for p in pair]


def _solve(problem: Problem, shrink: float, bins: int) -> tuple[int, ...] | None:
    """The best chain configuration whose rounded-up cost fits ``bins``, or None if none does.

    ``shrink`` (table unit) is taken off the budget, to absorb float rounding when needed.
    """
    budget = bin_width(problem, bins) * bins - shrink
    if not budget >= 0:  # also NaN: a term with no measured entry
        _chain_costs(problem, 1.0, bins)  # still report a non-chain problem as such
        return None
    width = budget / bins if budget > 0 else 0.0
    nb = bins if budget > 0 else 0
    single, pair = _chain_costs(problem, width, nb)
    b = np.arange(nb + 1)
    # best[j, b]: best value of groups 0..g with group g at option j, using at most b bins.
    best = np.where(b[None, :] >= single[0][:, None], problem.value[0][:, None], -np.inf)
    back, steps = [], []
    for g in range(1, problem.n_groups):
        step = pair[g - 1] + single[g][None, :]  # (n_prev, n_g): bins added by choosing (j, k)
        idx = b[None, None, :] - step[:, :, None]  # (n_prev, n_g, bins + 1)
        cand = best[np.arange(best.shape[0])[:, None, None], np.maximum(idx, 0)]
        cand[idx < 0] = -np.inf
        arg = np.argmax(cand, axis=0)  # (n_g, bins + 1): best previous option
        best = np.take_along_axis(cand, arg[None], axis=0)[0] + problem.value[g][:, None]
        back.append(arg)
        steps.append(step)
    k = int(np.argmax(best[:, nb]))
    if best[k, nb] == -np.inf:
        return None
    choice, left = [k], nb
    for g in range(problem.n_groups - 1, 0, -1):
        j = int(back[g - 1][k, left])
        left -= int(steps[g - 1][j, k])
        choice.append(j)
        k = j
    assert left >= single[0][k], "internal: dp backtrack left a negative budget"
    return tuple(reversed(choice))


def search_dp(problem: Problem, *, seed: int = 0, fitness: Fitness | None = None,
              bins: int = 2000) -> SearchResult:
    """Best total value within the target for chain-structured problems (see module docstring).

    ``seed`` is accepted for a uniform signature and unused: dp is deterministic. ``fitness``
    must be None: dp needs an additive objective (``problem.value``); use evo or abc for an
    arbitrary fitness. ``evaluations`` is 0 (no fitness calls); ``history`` is ``[value]``.
    """
    t0 = time.perf_counter()
    if fitness is not None:
        raise LatprofError("dp maximises the sum of per-group values and cannot take a fitness "
                           "function; use the evo or abc searcher for accuracy-in-the-loop search")
    bins = check_int("bins", bins)
    choice = _solve(problem, 0.0, bins)
    if choice is not None and not problem.feasible(choice):
        # Float rounding in the bin arithmetic; a hair less budget restores the guarantee.
        choice = _solve(problem, 1e-9 * (abs(problem.target) + 1.0), bins)
    if choice is None:
        anchor = Repairer(problem).anchor  # raises `unreachable` if nothing fits at all
        raise LatprofError(
            f"dp found no configuration within the target {problem.target:.6g} at bins={bins} "
            f"(bin width {bin_width(problem, bins):.3g}; each of the {len(problem.terms)} terms "
            f"is rounded up to a bin), but configuration {anchor} has latency "
            f"{problem.latency(anchor):.6g}. Raise bins, or use the evo or abc searcher.")
    assert problem.feasible(choice), "internal: dp returned an infeasible configuration"
    value = problem.total_value(choice)
    return SearchResult(choice=choice, value=value, latency=problem.latency(choice), evaluations=0,
                        seconds=time.perf_counter() - t0, name="dp", history=[value])
