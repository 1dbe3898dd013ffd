"""Shape plans: which convolution shapes a sweep measures.

A model sweep measures, for each distinct conv shape, two *lines*: c_out = 1..C_out at the
layer's c_in, and c_in = 1..C_in at its c_out (pruning layer i changes c_out of i and c_in of
i+1). A depthwise conv has one line, c_in = c_out = groups = c. A grouped conv keeps its group
count and moves in multiples of it. Layers with identical shapes share their lines.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from latprof.errors import LatprofError
from latprof.models import ConvLayer
from latprof.spec import ConvSpec

AXES = ("c_out", "c_in", "c")


@dataclass(frozen=True)
class Line:
    """A base shape and the channel counts to measure along one axis."""

    base: ConvSpec
    axis: str                       # "c_out", "c_in", or "c" (depthwise: all three move together)
    values: tuple[int, ...]
    layers: tuple[str, ...] = field(default=(), compare=False)

    def spec_at(self, c: int) -> ConvSpec:
        if self.axis == "c":
            return self.base.replace(c_in=c, c_out=c, groups=c)
        return self.base.replace(**{self.axis: c})

    def specs(self) -> list[ConvSpec]:
        return [self.spec_at(c) for c in self.values]

    @property
    def full(self) -> int:
        """The layer's own channel count on this axis (the right end of the line)."""
        return self.base.c_out if self.axis in ("c_out", "c") else self.base.c_in

    def label(self) -> str:
        return f"{self.axis} 1..{self.full} of {self.base.label()}"


def line_specs(lines: list[Line]) -> list[ConvSpec]:
    """Every distinct shape of the lines, in line order (a shape on two lines once)."""
    return list(dict.fromkeys(s for line in lines for s in line.specs()))


def channel_values(full: int, every: int = 1, step: int = 1) -> tuple[int, ...]:
    """Counts 1..full that are multiples of `step` (group size); with `every` > 1 a coarse grid
    of every `every`-th count, always keeping the smallest and the full count."""
    base = [c for c in range(step, full + 1, step)]
    if every > 1:
        base = [c for i, c in enumerate(base, 1) if i % every == 0 or i == 1 or c == full]
    return tuple(base)


def model_lines(layers: list[ConvLayer], *, batch: int, dtype: str, layout: str, backend: str,
                tile: str = "", every: int = 1) -> list[Line]:
    by_shape: dict[ConvSpec, list[str]] = {}
    for layer in layers:
        base = layer.spec.replace(batch=batch, dtype=dtype, layout=layout, backend=backend, tile=tile)
        by_shape.setdefault(base, []).append(layer.name)
    lines = []
    for base, names in by_shape.items():
        if base.depthwise:
            lines.append(Line(base, "c", channel_values(base.c_out, every), tuple(names)))
            continue
        g = base.groups
        lines.append(Line(base, "c_out", channel_values(base.c_out, every, g), tuple(names)))
        lines.append(Line(base, "c_in", channel_values(base.c_in, every, g), tuple(names)))
    return lines


def parse_values(text: str, what: str) -> list[int]:
    """"64", "16,32,64", "1-64" (inclusive), "8-64:8" (step 8), or a mix: "1-8,16,32-64:16"."""
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part)
        if not m:
            raise LatprofError(f"--{what}: cannot read {part!r}; write values like 64, 16,32,64, 1-64 or 8-64:8")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        step = int(m.group(3)) if m.group(3) else 1
        if hi < lo or step < 1:
            raise LatprofError(f"--{what}: empty range {part!r}")
        out.extend(range(lo, hi + 1, step))
    return sorted(set(out))


def grid_specs(*, cin: list[int], cout: list[int], hw: list[int], kernel: list[int], stride: list[int],
               groups: list[int], batch: int, dtype: str, layout: str, backend: str, tile: str = "") -> list[ConvSpec]:
    """The cartesian product; padding keeps "same" size (k // 2). Combinations whose channels are
    not divisible by the groups are skipped; an empty result is an error."""
    specs = []
    for ci, co, s, k, st, g in itertools.product(cin, cout, hw, kernel, stride, groups):
        if ci % g or co % g or ci < 1 or co < 1:
            continue
        specs.append(ConvSpec(c_in=ci, c_out=co, h=s, w=s, kernel_h=k, kernel_w=k, stride_h=st, stride_w=st,
                              pad_h=k // 2, pad_w=k // 2, groups=g, batch=batch, dtype=dtype, layout=layout,
                              backend=backend, tile=tile))
    if not specs:
        raise LatprofError("the grid is empty: no (c_in, c_out, groups) combination has channels divisible "
                           "by the groups; check --cin, --cout and --groups")
    return specs


def shard(items: list, index: int, count: int) -> list:
    """The `index`-th (1-based) of `count` interleaved shares of `items`, in a stable order."""
    if count < 1 or not 1 <= index <= count:
        raise LatprofError(f"--shard {index}/{count}: write i/n with 1 <= i <= n")
    return items[index - 1::count]


def parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 1, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise LatprofError(f"--shard {text!r}: write i/n, for example 2/8")
    index, count = int(m.group(1)), int(m.group(2))
    shard([], index, count)  # validates
    return index, count
