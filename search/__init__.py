"""Channel-count searchers and the search problem (plug-ins keyed by name).

Searchers (``SEARCHERS``, run with ``run_search``) choose how many channels each group keeps,
maximising retained importance (or a given fitness) with predicted latency ``<= target``:

- ``dp``:  exact dynamic programming by variable elimination over the groups' interaction graph
  (chains, trees, inception and small dense blocks); too wide a graph runs ``evo`` instead and
  says so in ``SearchResult.note`` (``dp.py``);
- ``evo``: LACP-style evolutionary search, any structure (``evo.py``);
- ``abc``: ABCPruner-style artificial bee colony, any structure (``abc.py``);
- ``ddpg``: LAP-style layer-by-layer DDPG agent with latency sensitivity from the table (``ddpg.py``).

Which channels go is not the searchers' business: importance criteria live in
``latprof.prune.importance``. The searchers need only numpy.

Adding a searcher: write ``search_<name>(problem, *, seed=0, fitness=None, **params)`` returning
a ``SearchResult`` within the target, and add it to ``SEARCHERS``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from latprof.errors import LatprofError

from .abc import search_abc
from .common import Fitness, SearchResult
from .ddpg import search_ddpg
from .dp import search_dp
from .evo import search_evo
from .exhaustive import exhaustive
from .problem import Problem, Term

SEARCHERS: dict[str, Callable[..., SearchResult]] = {"dp": search_dp, "evo": search_evo, "abc": search_abc,
                                                     "ddpg": search_ddpg}

__all__ = ["SEARCHERS", "Problem", "SearchResult", "Term", "exhaustive", "run_search", "search_abc", "search_ddpg", "search_dp", "search_evo"]


def run_search(name: str, problem: Problem, *, seed: int = 0, fitness: Fitness | None = None,
               **kw) -> SearchResult:
    """Run the searcher registered as ``name``; ``kw`` are its own parameters (bins, cycles...).

    Deterministic for a given ``seed``. The result is never over ``problem.target``; a target
    that no configuration meets raises LatprofError with the smallest latency in the message.
    """
    if name not in SEARCHERS:
        raise LatprofError(f"unknown searcher {name!r}; choose one of: {', '.join(SEARCHERS)}")
    fn = SEARCHERS[name]
    accepted = [p for p in inspect.signature(fn).parameters if p not in ("problem", "seed", "fitness")]
    unknown = sorted(set(kw) - set(accepted))
    if unknown:
        raise LatprofError(f"searcher {name!r} has no parameter {', '.join(unknown)}; "
                           f"it takes: {', '.join(accepted) or 'none'}")
    result = fn(problem, seed=seed, fitness=fitness, **kw)
    assert problem.feasible(result.choice), f"internal: {name} returned a configuration over target"
    return result

