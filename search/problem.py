"""The channel-count search problem: options per group, their value, and a latency model made of terms.

A *group* is a set of coupled channels that must keep the same count (one conv's outputs, or a
residual stream with every conv writing into it). A *configuration* (``choice``) picks one option
INDEX per group; ``options[g][choice[g]]`` is the channel count kept.

Latency is additive: ``constant + sum(term.table[choice of its groups])``. A term depends on one
group (e.g. a conv whose input channels are fixed) or on two (a conv between two prunable groups:
its c_in comes from one, its c_out from the other). Units are whatever the tables use (the
latprof tables use microseconds); only comparisons with ``target`` matter here.

NaN in a table marks a combination that was not measured; such configurations are forbidden,
so their latency is NaN and they are never feasible. Every other table entry must be finite
and non-negative: a negative latency would let a searcher "buy" budget that does not exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from latprof.errors import LatprofError


@dataclass(frozen=True, eq=False)
class Term:
    """One latency term over one group ``(g,)`` or two groups ``(g, h)``.

    ``table`` has shape ``(n_g,)`` or ``(n_g, n_h)`` (option indices of the groups, in the order
    given by ``groups``), in the problem's latency unit; NaN = not measured = forbidden.
    Equality is identity (``eq=False``): numpy tables do not compare to a single bool.
    """

    groups: tuple[int, ...]
    table: np.ndarray

    def __post_init__(self):
        groups = tuple(int(g) for g in self.groups)
        if len(groups) not in (1, 2):
            raise LatprofError(f"a latency term depends on 1 or 2 groups, got groups={groups}")
        if len(groups) == 2 and groups[0] == groups[1]:
            raise LatprofError(f"a pair term needs two different groups, got groups={groups}")
        table = np.array(self.table, dtype=np.float64)  # a private copy
        if table.ndim != len(groups):
            raise LatprofError(f"term over groups {groups} needs a {len(groups)}-d table, "
                               f"got shape {table.shape}")
        measured = table[~np.isnan(table)]
        if not np.all(np.isfinite(measured)) or np.any(measured < 0):
            raise LatprofError(f"term over groups {groups}: latencies must be finite and >= 0 "
                               "(use NaN for combinations that were not measured)")
        table.setflags(write=False)
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "table", table)


@dataclass(frozen=True, eq=False)
class Problem:
    """Maximise the total retained value subject to ``latency(choice) <= target``.

    options:  per group, the allowed channel counts, strictly ascending; the last is the original.
    value:    per group, importance retained by each option (same length as ``options[g]``);
              higher is better. ``importance.option_values`` gives comparable values in [0, 1].
    terms:    the latency model (see the module docstring).
    constant: latency of the rest of the network, which pruning does not change.
    target:   the latency budget, same unit as the tables.
    unit:     how messages write that unit (" us" for latprof's tables; "" when unknown).
    """

    options: tuple[tuple[int, ...], ...]
    value: tuple[np.ndarray, ...]
    terms: tuple[Term, ...]
    constant: float
    target: float
    unit: str = ""

    def __post_init__(self):
        options = tuple(tuple(int(c) for c in opts) for opts in self.options)
        if not options:
            raise LatprofError("a search problem needs at least one group of channels")
        for g, opts in enumerate(options):
            if not opts:
                raise LatprofError(f"group {g} has no channel-count options")
            if any(c < 1 for c in opts) or any(b <= a for a, b in zip(opts, opts[1:])):
                raise LatprofError(f"group {g}: options must be positive and strictly ascending, "
                                   f"got {opts}")
        if len(self.value) != len(options):
            raise LatprofError(f"value has {len(self.value)} entries but there are {len(options)} groups")
        values = []
        for g, (v, opts) in enumerate(zip(self.value, options)):
            v = np.array(v, dtype=np.float64).reshape(-1)
            if v.shape != (len(opts),):
                raise LatprofError(f"group {g}: value has {v.size} entries for {len(opts)} options")
            if not np.all(np.isfinite(v)):
                raise LatprofError(f"group {g}: values must be finite, got {v.tolist()}")
            v.setflags(write=False)
            values.append(v)
        terms = tuple(self.terms)
        for t in terms:
            if not isinstance(t, Term):
                raise LatprofError(f"terms must be Term objects, got {type(t).__name__}")
            if any(g < 0 or g >= len(options) for g in t.groups):
                raise LatprofError(f"term over groups {t.groups}: there are only {len(options)} groups")
            want = tuple(len(options[g]) for g in t.groups)
            if t.table.shape != want:
                raise LatprofError(f"term over groups {t.groups}: table shape {t.table.shape}, "
                                   f"expected {want} (one entry per option index)")
        constant, target = float(self.constant), float(self.target)
        if not (np.isfinite(constant) and np.isfinite(target)):
            raise LatprofError(f"constant and target must be finite, got {constant} and {target}")
        object.__setattr__(self, "options", options)
        object.__setattr__(self, "value", tuple(values))
        object.__setattr__(self, "terms", terms)
        object.__setattr__(self, "constant", constant)
        object.__setattr__(self, "target", target)

    # --- configurations -------------------------------------------------------------------

    @property
    def n_groups(self) -> int:
        return len(self.options)

    def check(self, choice: Sequence[int]) -> tuple[int, ...]:
        """``choice`` as a tuple of option indices, or a LatprofError saying what is wrong."""
        c = tuple(int(i) for i in choice)
        if len(c) != self.n_groups:
            raise LatprofError(f"a choice needs one option index per group ({self.n_groups}), got {len(c)}")
        for g, i in enumerate(c):
            if not 0 <= i < len(self.options[g]):
                raise LatprofError(f"group {g}: option index {i} out of range 0..{len(self.options[g]) - 1}")
        return c

    def smallest(self) -> tuple[int, ...]:
        """Fewest channels everywhere (option index 0 in every group)."""
        return (0,) * self.n_groups

    def full(self) -> tuple[int, ...]:
        """The original network (last option in every group)."""
        return tuple(len(o) - 1 for o in self.options)

    def channels(self, choice: Sequence[int]) -> tuple[int, ...]:
        """Channel counts kept per group for a choice of option indices."""
        return tuple(self.options[g][i] for g, i in enumerate(self.check(choice)))

    # --- objective and constraint ---------------------------------------------------------

    def latency(self, choice: Sequence[int]) -> float:
        """Predicted latency (table unit); NaN when a term hits a forbidden (unmeasured) cell."""
        return self._latency(self.check(choice))

    def _latency(self, c: tuple[int, ...]) -> float:
        total = self.constant
        for t in self.terms:
            total += t.table[tuple(c[g] for g in t.groups)]
        return float(total)

    def total_value(self, choice: Sequence[int]) -> float:
        """Sum over groups of the value of the chosen option."""
        c = self.check(choice)
        return float(sum(self.value[g][i] for g, i in enumerate(c)))

    def feasible(self, choice: Sequence[int]) -> bool:
        """True iff the latency is known (no forbidden cell) and ``<= target``."""
        lat = self.latency(choice)
        return bool(lat <= self.target)  # NaN compares False

    def n_configs(self) -> int:
        """How many configurations exist (product of the option counts), as a Python int."""
        n = 1
        for o in self.options:
            n *= len(o)
        return n
