"""Artificial bee colony search over channel counts, after ABCPruner.

Food sources are configurations (one option index per group). Each cycle:

- employed bees: every source gets one neighbour and is replaced if the neighbour is strictly
  fitter (greedy replacement); otherwise its trial counter goes up;
- onlooker bees: ``sources`` more neighbour trials, each on a source drawn with probability
  proportional to its fitness (shifted by the smallest fitness when some are negative, uniform
  when all are equal to zero); same greedy rule;
- scout bee: the source with the most failed trials, if that count reached ``limit``, is
  abandoned for a random configuration (repaired).

Neighbour move (ABC's ``v = x + phi * (x - x_partner)``, on option indices): pick 1 to
``max_changes`` groups; for each, ``phi`` is uniform in [-1, 1], a partner source is drawn from
the others, and the index moves by ``round(phi * (x_g - partner_g))``, or by one step up or down
at random when that rounds to zero (the colony would otherwise freeze once sources agree);
indices are clipped to the group's options and the result repaired (``common``).

Defaults: 10 food sources (a colony of 20: 10 employed + 10 onlookers, as in ABCPruner), 20
cycles, limit 5, up to 2 genes changed per move. At most ``sources * (1 + 2 * cycles) + cycles``
= 430 fitness calls; the cache makes repeats free.
"""

from __future__ import annotations

import time

import numpy as np

from .common import Fitness, Repairer, Scorer, SearchResult, check_int
from .problem import Problem


def _weights(fit: list[float]) -> np.ndarray:
    """Onlooker probabilities: proportional to fitness, shifted to be non-negative."""
    w = np.array(fit, dtype=np.float64)
    if w.min() < 0:
        w = w - w.min()
    total = w.sum()
    return np.full(len(w), 1.0 / len(w)) if total <= 0 else w / total


# One function, as the algorithm reads in the paper: employed, onlooker and scout phases share
# the food sources and trial counters.
def search_abc(problem: Problem, *, seed: int = 0, fitness: Fitness | None = None,
               sources: int = 10, cycles: int = 20, limit: int = 5,
               max_changes: int = 2) -> SearchResult:
    """Bee colony search within the target; ``history`` has ``cycles + 1`` entries
    (best fitness of the initial sources, then after each cycle)."""
    t0 = time.perf_counter()
    sources = check_int("sources", sources)
    cycles = check_int("cycles", cycles, low=0)
    limit = check_int("limit", limit)
    max_changes = check_int("max_changes", max_changes)
    rng = np.random.default_rng(seed)
    repairer = Repairer(problem)
    score = Scorer(problem, fitness)
    n_opts = repairer.n_opts
    n_groups = problem.n_groups

    foods = [repairer.anchor] + [repairer.random(rng) for _ in range(sources - 1)]
    fit = [score(f) for f in foods]
    trials = [0] * sources
    best = foods[int(np.argmax(fit))]
    history = [score(best)]

    def neighbour(i: int):
        x = np.array(foods[i])
        changes = int(rng.integers(1, min(max_changes, n_groups) + 1))
        for g in rng.choice(n_groups, size=changes, replace=False):
            k = int(rng.integers(sources - 1)) if sources > 1 else 0
            partner = foods[k + (k >= i)] if sources > 1 else foods[i]
            step = int(round(rng.uniform(-1.0, 1.0) * (x[g] - partner[g])))
            if step == 0:
                step = int(rng.choice((-1, 1)))
            x[g] = min(max(x[g] + step, 0), n_opts[g] - 1)
        return repairer.repair(x)

    def visit(i: int):
        nonlocal best
        v = neighbour(i)
        fv = score(v)
        if fv > fit[i]:
            foods[i], fit[i], trials[i] = v, fv, 0
            if fv > score(best):
                best = v
        else:
            trials[i] += 1

    for _ in range(cycles):
        for i in range(sources):  # employed bees
            visit(i)
        for i in rng.choice(sources, size=sources, p=_weights(fit)):  # onlookers
            visit(int(i))
        j = int(np.argmax(trials))  # scout: first source with the most failures
        if trials[j] >= limit:
            foods[j] = repairer.random(rng)
            fit[j], trials[j] = score(foods[j]), 0
            if fit[j] > score(best):
                best = foods[j]
        history.append(score(best))

    return SearchResult(choice=best, value=score(best), latency=problem.latency(best),
                        evaluations=score.evaluations, seconds=time.perf_counter() - t0,
                        name="abc", history=history)
