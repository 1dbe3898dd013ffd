"""dp beyond chains: trees, inception-like and dense blocks against brute force, and the evo
fallback for problems too wide to solve exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from latprof.errors import LatprofError
from latprof.search import Problem, Term, exhaustive, run_search, search_evo
from latprof.search import dp
from latprof.search.exhaustive import all_latencies


def build(n_opts: list[int], edges, seed: int, *, grid: bool = False, slack: float = 0.4,
          nan_share: float = 0.1) -> Problem:
    """Random problem on a given interaction graph: a pair term per edge (either order, some
    cells unmeasured), single terms on most groups, values rising with the option index.
    ``grid``: integer latencies and a whole-unit budget, so dp at ``bins = budget`` is exact."""
    rng = np.random.default_rng(seed)

    def table(shape):
        return rng.integers(0, 10, size=shape).astype(float) if grid else rng.random(shape) * 10

    terms = [Term((g,), table(n)) for g, n in enumerate(n_opts) if rng.random() < 0.7]
    for g, h in edges:
        t = table((n_opts[g], n_opts[h]))
        mask = rng.random(t.shape) < nan_share
        mask[0, 0] = mask[-1, -1] = False  # the smallest and the full configuration stay measured
        t[mask] = np.nan
        terms.append(Term((g, h), t) if rng.random() < 0.5 else Term((h, g), t.T))
    options = tuple(tuple(range(1, n + 1)) for n in n_opts)
    value = tuple(np.cumsum(rng.random(n)) for n in n_opts)
    p = Problem(options, value, tuple(terms), 5.0, 0.0)
    lo, hi = p.latency(p.smallest()), p.latency(p.full())
    target = lo + slack * (hi - lo)
    if grid:  # target = constant + sum of the factor minima + a whole number of units
        minima = p.target - p.constant - dp.bin_width(p, 1)
        target = p.constant + minima + max(1, round(target - p.constant - minima))
    return dataclasses.replace(p, target=target)


def budget_units(p: Problem) -> int:
    return int(round(dp.bin_width(p, 1)))


def random_tree(seed: int, n: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)  # group numbers unrelated to the tree's shape
    return [(int(order[i]), int(order[rng.integers(i)])) for i in range(1, n)]


def inception(blocks: int) -> tuple[int, list[tuple[int, int]]]:
    """Group x feeds four branches (1x1; 1x1 -> 3x3; 1x1 -> 5x5; pool -> 1x1) whose outputs are
    concatenated into one consumer y, which feeds the next block."""
    edges, n, x = [], 1, 0
    for _ in range(blocks):
        o1, a, o2, b, o3, o4, y = range(n, n + 7)
        n += 7
        edges += [(x, o1), (x, a), (a, o2), (x, b), (b, o3), (x, o4), (o1, y), (o2, y), (o3, y), (o4, y)]
        x = y
    return n, edges


def dense(layers: int, bottleneck: bool) -> tuple[int, list[tuple[int, int]]]:
    """Each layer reads the block input and every earlier layer's output (through a 1x1
    bottleneck group when ``bottleneck``)."""
    outs, edges, n = [0], [], 1
    for _ in range(layers):
        if bottleneck:
            edges += [(j, n) for j in outs] + [(n, n + 1)]
            outs.append(n + 1)
            n += 2
        else:
            edges += [(j, n) for j in outs]
            outs.append(n)
            n += 1
    return n, edges


def check_exact(p: Problem, bins: int):
    r = run_search("dp", p, bins=bins)
    assert r.name == "dp" and r.note == ""
    assert p.feasible(r.choice) and r.latency <= p.target
    assert r.value == pytest.approx(exhaustive(p).value, abs=1e-9)
    return r


def check_band(p: Problem, bins: int = 500):
    """dp is feasible, no better than the optimum, no worse than the optimum for the target
    tightened by one bin per term (the module's exactness contract)."""
    r = run_search("dp", p, bins=bins)
    assert r.name == "dp" and r.note == ""
    assert p.feasible(r.choice) and r.latency <= p.target
    tight = dataclasses.replace(p, target=p.target - len(p.terms) * dp.bin_width(p, bins))
    try:
        floor = exhaustive(tight).value
    except LatprofError:  # nothing fits the tightened target
        floor = -np.inf
    assert floor - 1e-9 <= r.value <= exhaustive(p).value + 1e-9
    return r


@pytest.mark.parametrize("seed", range(10))
def test_dp_is_exact_on_random_trees_on_the_bin_grid(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(4, 9))
    p = build([int(k) for k in rng.integers(2, 5, size=n)], random_tree(seed, n), seed, grid=True)
    assert dp.plan(p).width == 1
    check_exact(p, budget_units(p))


@pytest.mark.parametrize("slack", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("seed", range(6))
def test_dp_on_random_trees_is_within_one_bin_per_term(seed, slack):
    rng = np.random.default_rng(200 + seed)
    n = int(rng.integers(4, 9))
    p = build([int(k) for k in rng.integers(2, 5, size=n)], random_tree(seed, n), seed, slack=slack)
    check_band(p)


@pytest.mark.parametrize("seed", range(4))
def test_dp_is_exact_on_an_inception_block(seed):
    n, edges = inception(1)
    p = build([3] * n, edges, seed, grid=True)
    assert dp.plan(p).width == 2
    check_exact(p, budget_units(p))
    check_band(build([3] * n, edges, seed, slack=0.3))


def test_dp_is_exact_on_two_chained_inception_blocks():
    n, edges = inception(2)
    p = build([2] * n, edges, 7, grid=True, slack=0.5)
    assert dp.plan(p).width == 2
    check_exact(p, budget_units(p))


@pytest.mark.parametrize(("layers", "bottleneck", "opts"), [(3, False, 5), (3, True, 3)])
@pytest.mark.parametrize("seed", range(3))
def test_dp_is_exact_on_a_dense_block_of_width_3(seed, layers, bottleneck, opts):
    n, edges = dense(layers, bottleneck)
    p = build([opts] * n, edges, seed, grid=True)
    assert dp.plan(p).width == 3
    check_exact(p, budget_units(p))
    check_band(build([opts] * n, edges, seed, slack=0.6))


def test_dp_handles_groups_in_separate_pieces_and_groups_without_terms():
    # Two trees, a lone group with a single term and one with no term at all.
    edges = [(0, 1), (1, 2), (3, 4), (3, 5)]
    p = build([3, 2, 3, 3, 2, 2, 3, 2], edges, 11, grid=True)
    p = dataclasses.replace(p, terms=tuple(t for t in p.terms if t.groups != (7,)))
    check_exact(p, budget_units(p))


def test_a_chain_numbered_out_of_order_is_still_a_chain():
    perm = [3, 0, 5, 1, 4, 2]
    edges = [(perm[i], perm[i + 1]) for i in range(5)]
    p = build([4] * 6, edges, 5, grid=True)
    pl = dp.plan(p)
    assert pl.width == 1 and sorted(pl.order) == list(range(6))
    check_exact(p, budget_units(p))


def test_a_chain_in_order_is_eliminated_front_to_back(make_problem):
    p = make_problem(4, groups=(8, 8))
    assert dp.plan(p) == dp.Plan(tuple(range(8)), 1, sum(len(o) for o in p.options[1:]) + 1)


@pytest.mark.parametrize("seed", range(3))
def test_a_wide_problem_falls_back_to_evo_and_says_so(seed):
    n, edges = dense(4, False)  # every group coupled to every other: width 4
    p = build([4] * n, edges, seed, slack=0.3)
    assert dp.plan(p).width == 4 > dp.MAX_WIDTH
    r = run_search("dp", p, seed=seed)
    assert r.name == "evo" and "fell back to evo" in r.note and "width 4" in r.note
    assert p.feasible(r.choice) and r.latency <= p.target
    assert r.value <= exhaustive(p).value + 1e-9
    assert r.value == pytest.approx(p.total_value(r.choice))


def test_fallback_when_the_tables_or_the_work_would_be_too_large(monkeypatch):
    n, edges = inception(1)
    p = build([3] * n, edges, 2, slack=0.5)
    monkeypatch.setattr(dp, "MAX_CELLS", 1000)
    r = run_search("dp", p, bins=500)
    assert r.name == "evo" and "cells" in r.note and p.feasible(r.choice)
    monkeypatch.setattr(dp, "MAX_CELLS", 10**9)
    monkeypatch.setattr(dp, "MAX_WORK", 10_000)
    r = run_search("dp", p, bins=500)
    assert r.name == "evo" and "cell updates" in r.note and p.feasible(r.choice)
    monkeypatch.setattr(dp, "MAX_WORK", 10**12)
    assert run_search("dp", p, bins=500).note == ""


def test_fallback_still_refuses_an_unreachable_target():
    n, edges = dense(4, False)
    p = build([3] * n, edges, 0)
    p = dataclasses.replace(p, target=float(np.nanmin(all_latencies(p))) - 1.0)  # nothing fits
    with pytest.raises(LatprofError, match="unreachable"):
        run_search("dp", p)


def test_dp_at_googlenet_size_beats_every_evo_result_that_fits_the_tightened_target():
    # Four inception blocks, 9 options per group, 2000 bins: the realistic size. No brute force
    # here; the contract still bounds dp from below by any configuration within the target less
    # one bin per term, such as evo's.
    n, edges = inception(4)
    rng = np.random.default_rng(0)
    terms = [Term((g,), np.sort(rng.random(9)) * 50) for g in range(n)]
    terms += [Term(e, np.sort(np.sort(rng.random((9, 9)), 0), 1) * 200) for e in edges]
    tmp = Problem(tuple(tuple(range(8, 80, 8)) for _ in range(n)),
                  tuple(np.sort(rng.random(9)) for _ in range(n)), tuple(terms), 100.0, 0.0)
    p = dataclasses.replace(tmp, target=0.5 * (tmp.latency(tmp.smallest()) + tmp.latency(tmp.full())))
    r = run_search("dp", p, bins=2000)
    assert r.name == "dp" and r.latency <= p.target
    band = len(p.terms) * dp.bin_width(p, 2000)
    for seed in range(2):
        e = search_evo(p, seed=seed)
        if e.latency <= p.target - band:
            assert r.value >= e.value - 1e-9
