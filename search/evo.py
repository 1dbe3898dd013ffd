"""Evolutionary search over channel counts, after LACP's search stage.

Genome: one option index per group. Each cycle breeds ``mutations`` children by mutation (each
gene of a parent is re-drawn uniformly among its group's options with probability
``mutation_prob``) and ``crossovers`` children by uniform crossover (each gene from one of two
parents with probability 1/2); parents are drawn uniformly from the ``parents`` fittest
individuals. Children over the target are repaired (``common``: lower the group with the best
latency saved per value lost until feasible). Parents and children are pooled, duplicates
dropped, and the ``population`` fittest survive (ties keep the earlier individual, so a run is
deterministic for a seed).

The initial population is the anchor (the smallest configuration, or the lowest-latency one
when the smallest is over target) plus random configurations, repaired: uniform random draws
mostly land over a tight target, and repair pulls them down along different paths.

Defaults follow LACP's scale for a cheap fitness: population 30, 10 cycles, 15 + 15 children,
top 10 as parents, mutation probability 0.1 per gene (with ~20 groups, two genes change per
mutated child on average). At most ``population + cycles * (mutations + crossovers)`` = 330
fitness calls; the cache makes repeats free.
"""

from __future__ import annotations

import time

import numpy as np

from latprof.errors import LatprofError

from .common import Fitness, Repairer, Scorer, SearchResult, check_int
from .problem import Problem


def search_evo(problem: Problem, *, seed: int = 0, fitness: Fitness | None = None,
               population: int = 30, cycles: int = 10, mutations: int = 15, crossovers: int = 15,
               parents: int = 10, mutation_prob: float = 0.1) -> SearchResult:
    """Evolve configurations within the target; ``history`` has ``cycles + 1`` entries
    (best fitness of the initial population, then after each cycle)."""
    t0 = time.perf_counter()
    population = check_int("population", population)
    cycles = check_int("cycles", cycles, low=0)
    mutations = check_int("mutations", mutations, low=0)
    crossovers = check_int("crossovers", crossovers, low=0)
    parents = check_int("parents", parents)
    if not 0.0 <= float(mutation_prob) <= 1.0:
        raise LatprofError(f"mutation_prob must be in [0, 1], got {mutation_prob!r}")
    rng = np.random.default_rng(seed)
    repairer = Repairer(problem)
    score = Scorer(problem, fitness)
    n_opts = repairer.n_opts

    pop = [repairer.anchor]
    for _ in range(20 * population):  # small problems may have fewer distinct configurations
        if len(pop) >= population:
            break
        c = repairer.random(rng)
        if c not in pop:
            pop.append(c)
    pop.sort(key=score, reverse=True)  # stable: ties keep their order
    history = [score(pop[0])]

    for _ in range(cycles):
        top = pop[:parents]
        children = []
        for _ in range(mutations):
            parent = np.array(top[rng.integers(len(top))])
            redraw = rng.random(len(parent)) < mutation_prob
            child = np.where(redraw, rng.integers(0, n_opts), parent)
            children.append(repairer.repair(child))
        for _ in range(crossovers):
            a, b = (np.array(top[i]) for i in rng.integers(len(top), size=2))
            child = np.where(rng.random(len(a)) < 0.5, a, b)
            children.append(repairer.repair(child))
        pool = list(dict.fromkeys(pop + children))  # unique, first occurrence order
        pool.sort(key=score, reverse=True)
        pop = pool[:population]
        history.append(score(pop[0]))

    best = pop[0]
    return SearchResult(choice=best, value=score(best), latency=problem.latency(best),
                        evaluations=score.evaluations, seconds=time.perf_counter() - t0,
                        name="evo", history=history)
