"""What every searcher shares: the result record, the fitness cache, and the repair rule.

Repair rule (used by evo and abc, documented once here). An infeasible configuration is walked
down until it fits the target: at each step, among all moves "lower group g from option i to
some option j < i", take the one with the largest latency saved per value lost,
``(lat(i) - lat(j)) / max(value[g][i] - value[g][j], 1e-12)``, counting only moves that save
latency. Lowering to any j < i, not only i - 1, matters because measured latency is not
monotonic in the channel count (a CPU conv measured here was 2.6x faster at 119 channels than
at 118). A forbidden (NaN) cell counts as a huge latency, so moves that leave forbidden cells
come first, the cheapest in value first. Every step lowers one index, so repair ends. If no
move saves latency and the configuration is still over target, repair returns the *anchor*:
the smallest configuration, or, when that is itself over target or forbidden, the lowest-latency
configuration found by coordinate descent from it.

Latency "saved" by a move of group g only involves the terms that touch g, which is what makes
a repair step cost a few numpy operations instead of a full latency evaluation per candidate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from latprof.errors import LatprofError, Unreachable

from .problem import Problem

Choice = tuple[int, ...]
Fitness = Callable[[Choice], float]

_TINY = 1e-12  # value lost below this counts as free (avoids dividing by zero)


@dataclass(frozen=True)
class SearchResult:
    """What a searcher found.

    choice:      one option index per group (``problem.channels(choice)`` gives channel counts).
    value:       fitness of ``choice`` (by default ``problem.total_value``: retained importance).
    latency:     ``problem.latency(choice)``, in the tables' unit; always ``<= problem.target``.
    evaluations: how many times the fitness function was called (cached configs are not recounted).
    seconds:     wall time of the search itself (not a latency measurement).
    name:        the searcher's registry name.
    history:     best fitness so far, one entry per cycle (see each searcher for the exact length).
    note:        empty, or what a report should tell the user about how the result was found
                 (e.g. dp falling back to evo, and why).
    """

    choice: Choice
    value: float
    latency: float
    evaluations: int
    seconds: float
    name: str
    history: list[float] = field(default_factory=list)
    note: str = ""


class Scorer:
    """Fitness with a cache: each configuration is scored at most once, and only if feasible.

    ``fitness`` defaults to ``problem.total_value``; an accuracy-in-the-loop fitness (seconds
    per call) is why the cache and the ``evaluations`` count exist.
    """

    def __init__(self, problem: Problem, fitness: Fitness | None):
        self.problem = problem
        self.fn = problem.total_value if fitness is None else fitness
        self.cache: dict[Choice, float] = {}
        self.evaluations = 0

    def __call__(self, c: Choice) -> float:
        v = self.cache.get(c)
        if v is None:
            assert self.problem.feasible(c), f"internal: scoring an infeasible configuration {c}"
            v = float(self.fn(c))
            self.evaluations += 1
            if not math.isfinite(v):
                raise LatprofError(f"the fitness function returned {v} for configuration {c}; "
                                   "it must return a finite number (higher is better)")
            self.cache[c] = v
        return v


def unreachable(problem: Problem, lowest: float | None = None, extra: str = "") -> Unreachable:
    """The error for a target that no configuration meets, with the smallest latency in it."""
    lat = problem.latency(problem.smallest())
    unit = problem.unit
    where = "a forbidden (unmeasured) combination" if math.isnan(lat) else f"{lat:.6g}{unit}"
    msg = (f"latency target {problem.target:.6g}{unit} is unreachable: the smallest configuration "
           f"(fewest channels in every group) has latency {where}")
    if lowest is not None and not (math.isnan(lowest) and math.isnan(lat)) and lowest != lat:
        msg += f", and the lowest latency found is {lowest:.6g}{unit}"
    msg += (f" (the rest of the network alone takes {problem.constant:.6g}{unit}). {extra}"
            "Raise the target, or add smaller channel options to the groups.")
    return Unreachable(msg, smallest=where)


class Repairer:
    """Applies the repair rule of the module docstring; builds the anchor on construction.

    Raises ``unreachable`` if no configuration it can find is within the target.
    """

    def __init__(self, problem: Problem):
        self.problem = problem
        self.n_opts = np.array([len(o) for o in problem.options])
        finite = [t.table[np.isfinite(t.table)] for t in problem.terms]
        scale = 1.0 + abs(problem.target) + abs(problem.constant) + sum(float(f.max(initial=0)) for f in finite)
        self.big = 1e6 * scale  # latency charged for a forbidden cell
        self.tables = [np.where(np.isnan(t.table), self.big, t.table) for t in problem.terms]
        self.touch: list[list[tuple[int, int]]] = [[] for _ in problem.options]  # (term, position)
        self.neighbours: list[set[int]] = [{g} for g in range(problem.n_groups)]
        for k, t in enumerate(problem.terms):
            for pos, g in enumerate(t.groups):
                self.touch[g].append((k, pos))
                self.neighbours[g].update(t.groups)
        self.anchor = self._find_anchor()

    def profile(self, c, g: int) -> np.ndarray:
        """Latency of the terms touching group g, for every option of g, others as in ``c``."""
        prof = np.zeros(self.n_opts[g])
        for k, pos in self.touch[g]:
            tab, groups = self.tables[k], self.problem.terms[k].groups
            if len(groups) == 1:
                prof += tab
            elif pos == 0:
                prof += tab[:, c[groups[1]]]
            else:
                prof += tab[c[groups[0]], :]
        return prof

    def _find_anchor(self) -> Choice:
        p = self.problem
        c = list(p.smallest())
        if p.feasible(c):
            return tuple(c)
        # Non-monotonic latency or forbidden cells: descend on latency one group at a time.
        for _ in range(100):
            moved = False
            for g in range(p.n_groups):
                prof = self.profile(c, g)
                j = int(np.argmin(prof))
                if prof[j] < prof[c[g]]:
                    c[g], moved = j, True
            if not moved:
                break
        if not p.feasible(c):
            raise unreachable(p, p.latency(c))
        return tuple(c)

    def repair(self, choice) -> Choice:
        """The configuration itself if feasible, else walked down by the repair rule."""
        p = self.problem
        c = [int(i) for i in choice]
        keys: dict[int, tuple[float, int]] = {}  # group -> (best key, best j) for its moves
        for _ in range(sum(c) + 1):
            if p._latency(tuple(c)) <= p.target:
                return tuple(c)
            for g in range(p.n_groups):
                if g in keys or c[g] == 0:
                    continue
                prof = self.profile(c, g)[: c[g] + 1]
                saved = prof[c[g]] - prof[:-1]
                lost = np.maximum(p.value[g][c[g]] - p.value[g][: c[g]], _TINY)
                key = np.where(saved > 0, saved / lost, -np.inf)
                j = int(np.argmax(key))
                keys[g] = (float(key[j]), j)
            best_g, best_key = -1, -np.inf
            for g in sorted(keys):
                if keys[g][0] > best_key:
                    best_g, best_key = g, keys[g][0]
            if best_g < 0:
                return self.anchor  # nothing lower saves latency: a local minimum over target
            c[best_g] = keys[best_g][1]
            for h in self.neighbours[best_g]:
                keys.pop(h, None)
        raise AssertionError("internal: repair did not terminate")  # each step lowers sum(c)

    def random(self, rng: np.random.Generator) -> Choice:
        """A uniformly random configuration, repaired."""
        return self.repair(rng.integers(0, self.n_opts))


def check_int(name: str, value, low: int = 1) -> int:
    """A searcher parameter as an int >= low, or a LatprofError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise LatprofError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)
