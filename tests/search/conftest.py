"""Random search problems with a known optimum (via `exhaustive`) for the searcher tests."""

from __future__ import annotations

import numpy as np
import pytest

from latprof.search import Problem, Term


def random_problem(seed: int, *, chain: bool = True, groups: tuple[int, int] = (3, 6),
                   options: tuple[int, int] = (2, 5), nan_share: float = 0.1,
                   slack: float = 0.5, monotone: bool = False) -> Problem:
    """A random problem; ``slack`` in [0, 1] puts the target between the smallest and the
    full configuration's latency (0 = smallest, 1 = full). Chain problems couple only (g, g+1);
    non-chain ones add a term over (0, G-1). Values rise with the option index (like
    `option_values`); latencies are random (non-monotonic, as measured on CPUs) unless `monotone`.
    """
    rng = np.random.default_rng(seed)
    n_groups = int(rng.integers(groups[0], groups[1] + 1))
    n = [int(rng.integers(options[0], options[1] + 1)) for _ in range(n_groups)]
    opts = tuple(tuple(int(c) for c in np.sort(rng.choice(np.arange(1, 65), size=k, replace=False)))
                 for k in n)
    value = tuple(np.cumsum(rng.random(k)) / k for k in n)

    def table(shape):
        t = rng.random(shape) * 10
        if monotone:
            for ax in range(t.ndim):
                t = np.sort(t, axis=ax)
        return t

    terms = []
    for g in range(n_groups):
        if rng.random() < 0.7:
            terms.append(Term((g,), table(n[g])))
        if g + 1 < n_groups:
            t = table((n[g], n[g + 1]))
            mask = rng.random(t.shape) < nan_share
            mask[0, 0] = mask[-1, -1] = False  # keep the smallest and the full config measured
            t[mask] = np.nan
            pair = (g, g + 1) if rng.random() < 0.7 else (g + 1, g)
            terms.append(Term(pair, t if pair[0] == g else t.T))
    if not chain:
        terms.append(Term((0, n_groups - 1), table((n[0], n[-1]))))
    constant = float(rng.random() * 20)
    tmp = Problem(opts, value, tuple(terms), constant, 0.0)
    lo, hi = tmp.latency(tmp.smallest()), tmp.latency(tmp.full())
    return Problem(opts, value, tuple(terms), constant, lo + slack * (hi - lo))


@pytest.fixture
def make_problem():
    return random_problem
