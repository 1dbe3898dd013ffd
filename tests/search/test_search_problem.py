"""The search problem: validation, latency with forbidden cells, the registry and its errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from latprof.errors import LatprofError
from latprof.search import SEARCHERS, Problem, Term, exhaustive, run_search


def tiny() -> Problem:
    """Two groups; latency = 1 + [1, 2, 4][a] + [[0, 1], [1, nan], [2, 3]][a, b]."""
    return Problem(options=((8, 16, 32), (4, 8)),
                   value=(np.array([0.2, 0.6, 1.0]), np.array([0.5, 1.0])),
                   terms=(Term((0,), [1.0, 2.0, 4.0]), Term((0, 1), [[0, 1], [1, np.nan], [2, 3]])),
                   constant=1.0, target=5.0)


def test_latency_value_and_feasibility_by_hand():
    p = tiny()
    assert p.latency((0, 0)) == 2.0
    assert p.latency((2, 1)) == 8.0
    assert math.isnan(p.latency((1, 1)))  # unmeasured: forbidden
    assert not p.feasible((1, 1))
    assert p.feasible((1, 0)) and p.latency((1, 0)) == 4.0
    assert not p.feasible(p.full())
    assert p.total_value((1, 0)) == pytest.approx(1.1)
    assert p.smallest() == (0, 0) and p.full() == (2, 1)
    assert p.channels((1, 0)) == (16, 4)
    assert p.n_configs() == 6


@pytest.mark.parametrize("kwargs, words", [
    (dict(options=()), "at least one group"),
    (dict(options=((8, 4), (4, 8))), "ascending"),
    (dict(value=(np.array([0.2, 0.6]), np.array([0.5, 1.0]))), "group 0: value has 2 entries"),
    (dict(terms=(Term((0, 1), np.zeros((2, 2))),)), "expected (3, 2)"),
    (dict(terms=(Term((0, 5), np.zeros((3, 2))),)), "only 2 groups"),
    (dict(target=float("nan")), "finite"),
])
def test_bad_problems_raise_with_a_reason(kwargs, words):
    p = tiny()
    args = dict(options=p.options, value=p.value, terms=p.terms, constant=p.constant, target=p.target)
    args.update(kwargs)
    with pytest.raises(LatprofError) as err:
        Problem(**args)
    assert words in str(err.value)


@pytest.mark.parametrize("groups, table, words", [
    ((0, 0), np.zeros((2, 2)), "two different groups"),
    ((0, 1, 2), np.zeros((2, 2, 2)), "1 or 2 groups"),
    ((0,), np.zeros((2, 2)), "1-d table"),
    ((0,), [1.0, -1.0], ">= 0"),
    ((0,), [1.0, np.inf], "finite"),
])
def test_bad_terms_raise(groups, table, words):
    with pytest.raises(LatprofError) as err:
        Term(groups, table)
    assert words in str(err.value)


def test_bad_choices_raise():
    p = tiny()
    with pytest.raises(LatprofError, match="one option index per group"):
        p.latency((0,))
    with pytest.raises(LatprofError, match="out of range"):
        p.latency((3, 0))


def test_term_tables_are_private_read_only_copies():
    table = np.array([1.0, 2.0])
    t = Term((0,), table)
    table[0] = 100.0
    assert t.table[0] == 1.0
    with pytest.raises(ValueError):
        t.table[0] = 5.0


def test_registry_names_and_unknown_searcher():
    assert set(SEARCHERS) == {"dp", "evo", "abc", "ddpg"}
    with pytest.raises(LatprofError) as err:
        run_search("greedy", tiny())
    assert all(name in str(err.value) for name in ("dp", "evo", "abc"))


def test_unknown_searcher_parameter_lists_the_accepted_ones():
    with pytest.raises(LatprofError) as err:
        run_search("evo", tiny(), generations=5)
    assert "generations" in str(err.value) and "cycles" in str(err.value)


@pytest.mark.parametrize("name", ["dp", "evo", "abc"])
def test_unreachable_target_reports_the_smallest_latency(name):
    p = tiny()
    p = Problem(p.options, p.value, p.terms, p.constant, target=1.5)  # smallest config is 2.0
    with pytest.raises(LatprofError) as err:
        run_search(name, p)
    assert "unreachable" in str(err.value)
    assert f"{p.latency(p.smallest()):.6g}" in str(err.value)


def test_exhaustive_unreachable_and_size_limit():
    p = tiny()
    with pytest.raises(LatprofError, match="unreachable"):
        exhaustive(Problem(p.options, p.value, p.terms, p.constant, target=1.0))
    big = Problem(options=((1, 2, 3, 4, 5, 6, 7, 8, 9, 10),) * 7, value=(np.zeros(10),) * 7,
                  terms=(), constant=0.0, target=1.0)
    with pytest.raises(LatprofError, match="more than"):
        exhaustive(big)


@pytest.mark.parametrize("name", ["dp", "evo", "abc"])
def test_smallest_over_target_is_not_unreachable_when_latency_is_not_monotonic(name):
    # Measured CPU latency can drop with more channels (an algorithm switch): here the smallest
    # option is slow, the middle one fast. The target is reachable, only not by the smallest.
    p = Problem(options=((96, 119, 128), (8, 16)), value=(np.array([0.5, 0.9, 1.0]), np.array([0.6, 1.0])),
                terms=(Term((0,), [9.0, 3.5, 4.0]), Term((1,), [1.0, 2.0])), constant=0.0, target=4.5)
    assert not p.feasible(p.smallest())
    r = run_search(name, p)
    assert r.choice == exhaustive(p).choice == (1, 0)
    assert r.latency <= p.target
