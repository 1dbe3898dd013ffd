"""evo and abc: never over target, deterministic, near-optimal on small problems, fitness caching."""

from __future__ import annotations

import numpy as np
import pytest

from latprof.errors import LatprofError
from latprof.search import exhaustive, run_search
from latprof.search.common import Repairer

HEURISTICS = ["evo", "abc"]


@pytest.mark.parametrize("name", HEURISTICS)
@pytest.mark.parametrize("slack", [0.0, 0.02, 0.2, 0.6, 1.0])
def test_never_over_target(make_problem, name, slack):
    for seed in range(10):
        p = make_problem(seed, chain=seed % 2 == 0, slack=slack, nan_share=0.2)
        r = run_search(name, p, seed=seed)
        assert p.feasible(r.choice), (seed, r)
        assert r.latency == p.latency(r.choice) <= p.target
        assert r.history == sorted(r.history)  # best so far never gets worse


@pytest.mark.parametrize("name", HEURISTICS)
def test_deterministic_for_a_seed(make_problem, name):
    p = make_problem(7, chain=False, groups=(6, 6), options=(5, 5), slack=0.5)
    a, b = run_search(name, p, seed=3), run_search(name, p, seed=3)
    assert (a.choice, a.value, a.evaluations, a.history) == (b.choice, b.value, b.evaluations, b.history)


@pytest.mark.slow
@pytest.mark.parametrize("name", HEURISTICS)
def test_close_to_the_optimum_on_small_problems(make_problem, name):
    ratios = []
    for seed in range(30):
        for slack in (0.1, 0.5):
            p = make_problem(100 + seed, chain=seed % 3 != 0, slack=slack)
            ratios.append(run_search(name, p, seed=seed).value / exhaustive(p).value)
    assert min(ratios) > 0.5
    assert np.mean(ratios) >= 0.95


@pytest.mark.parametrize("name", HEURISTICS)
def test_fitness_replaces_value_is_called_once_per_config_and_only_within_target(make_problem, name):
    p = make_problem(11, groups=(5, 5), options=(4, 4), slack=0.6)
    goal = Repairer(p).random(np.random.default_rng(0))  # some config within the target
    calls = []

    def fitness(c):
        calls.append(c)
        assert p.feasible(c)
        return -float(np.abs(np.subtract(c, goal)).sum())  # best: exactly `goal`

    r = run_search(name, p, seed=1, fitness=fitness)
    assert r.evaluations == len(calls) == len(set(calls)) > 0
    assert r.value == fitness(r.choice)
    assert r.choice == goal  # not what total_value would pick
    assert r.choice != exhaustive(p).choice


@pytest.mark.parametrize("name", HEURISTICS)
def test_a_non_finite_fitness_is_an_error(make_problem, name):
    with pytest.raises(LatprofError, match="finite"):
        run_search(name, make_problem(2), fitness=lambda c: float("nan"))


@pytest.mark.parametrize("name, params", [
    ("evo", dict(population=5, cycles=3, mutations=2, crossovers=2, parents=2, mutation_prob=0.5)),
    ("abc", dict(sources=3, cycles=4, limit=1, max_changes=3)),
])
def test_parameters_are_overridable_and_bounded(make_problem, name, params):
    p = make_problem(4, slack=0.5)
    r = run_search(name, p, **params)
    assert len(r.history) == params["cycles"] + 1 and p.feasible(r.choice)
    with pytest.raises(LatprofError, match="cycles"):
        run_search(name, p, cycles=-1)


def test_repair_lowers_the_group_with_most_latency_saved_per_value_lost():
    from latprof.search import Problem, Term
    # Group 0 saves 4 for 0.1 of value, group 1 saves 5 for 1.0: group 0 goes down first.
    p = Problem(options=((1, 2), (1, 2)), value=(np.array([0.9, 1.0]), np.array([0.0, 1.0])),
                terms=(Term((0,), [0.0, 4.0]), Term((1,), [0.0, 5.0])), constant=0.0, target=5.0)
    assert Repairer(p).repair((1, 1)) == (0, 1)
    # Non-monotonic latency: the repair may jump over a slower middle option.
    q = Problem(options=((1, 2, 3),), value=(np.array([0.0, 0.5, 1.0]),),
                terms=(Term((0,), [9.0, 9.5, 10.0]),), constant=0.0, target=9.2)
    assert Repairer(q).repair((2,)) == (0,)


def test_search_results_on_a_tight_non_chain_problem_agree_with_brute_force(make_problem):
    # Slack 0: only configs as fast as the smallest fit; both heuristics must find one.
    p = make_problem(21, chain=False, slack=0.0, monotone=True)
    best = exhaustive(p)
    for name in HEURISTICS:
        assert run_search(name, p).value == pytest.approx(best.value)
