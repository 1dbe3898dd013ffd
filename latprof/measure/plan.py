"""Sweep plans that are not a model's lines: a grid of shapes, shards, and the option text that names them."""

from __future__ import annotations

import itertools
import re

from latprof.errors import LatprofError
from latprof.spec import ConvSpec


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
    for name, values in (("cin", cin), ("cout", cout), ("hw", hw), ("kernel", kernel), ("stride", stride),
                         ("groups", groups)):
        if any(v < 1 for v in values):
            raise LatprofError(f"--{name}: every value must be at least 1, got {min(values)}")
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
