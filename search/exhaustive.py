"""Brute force over every configuration: the oracle the searchers are tested against.

Latency and value of all configurations are built at once as dense arrays by broadcasting the
terms (one array axis per group), so a million configurations cost ~10 MB and well under a
second. Not registered as a searcher: it does not scale past toy problems.
"""

from __future__ import annotations

import time

import numpy as np

from latprof.errors import LatprofError

from .common import SearchResult, unreachable
from .problem import Problem

MAX_CONFIGS = 1_000_000


def _on_axes(table: np.ndarray, groups: tuple[int, ...], n_groups: int) -> np.ndarray:
    """``table`` reshaped to broadcast over an array with one axis per group."""
    order = np.argsort(groups)
    table = np.transpose(table, order)
    shape = [1] * n_groups
    for g, n in zip(sorted(groups), table.shape):
        shape[g] = n
    return table.reshape(shape)


def all_latencies(problem: Problem) -> np.ndarray:
    """Latency of every configuration, shape ``(n_0, ..., n_{G-1})``; NaN where forbidden."""
    n = problem.n_configs()
    if n > MAX_CONFIGS:
        raise LatprofError(f"exhaustive search would enumerate {n} configurations "
                           f"(more than {MAX_CONFIGS}); use the dp, evo or abc searcher")
    shape = tuple(len(o) for o in problem.options)
    lat = np.full(shape, problem.constant)
    for t in problem.terms:
        lat = lat + _on_axes(t.table, t.groups, problem.n_groups)
    return lat


def exhaustive(problem: Problem) -> SearchResult:
    """The exact optimum of ``problem.total_value`` within the target (first in index order on ties).

    ``evaluations`` is the number of configurations enumerated; ``history`` is ``[value]``.
    """
    t0 = time.perf_counter()
    lat = all_latencies(problem)
    val = np.zeros(lat.shape)
    for g, v in enumerate(problem.value):
        val = val + _on_axes(v, (g,), problem.n_groups)
    score = np.where(lat <= problem.target, val, -np.inf)  # NaN compares False: forbidden
    flat = int(np.argmax(score))
    if score.flat[flat] == -np.inf:
        raise unreachable(problem, float(np.nanmin(lat)) if np.isfinite(lat).any() else None)
    choice = tuple(int(i) for i in np.unravel_index(flat, lat.shape))
    value = problem.total_value(choice)
    return SearchResult(choice=choice, value=value, latency=problem.latency(choice),
                        evaluations=lat.size, seconds=time.perf_counter() - t0,
                        name="exhaustive", history=[value])
