"""Lines: which convolution shapes a model's layers need measured.

A model sweep measures, for each distinct conv shape, two *lines*: c_out = 1..C_out at the
layer's c_in, and c_in = 1..C_in at its c_out (pruning layer i changes c_out of i and c_in of
i+1). A depthwise conv has one line, c_in = c_out = groups = c. A grouped conv keeps its group
count and moves in multiples of it. A Linear layer (`op` "linear") has the same two lines;
one that reads a flattened feature map moves its c_in in whole channels (`Line.unit` features
each). The classifier, whose outputs are never pruned, has its c_in line only. Layers with
identical shapes share their lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from latprof.models.registry import ConvLayer, conv_layers, load
from latprof.spec import ConvSpec, Context

AXES = ("c_out", "c_in", "c")


@dataclass(frozen=True)
class Line:
    """A base shape and the channel counts to measure along one axis."""

    base: ConvSpec
    axis: str                       # "c_out", "c_in", or "c" (depthwise: all three move together)
    values: tuple[int, ...]
    layers: tuple[str, ...] = field(default=(), compare=False)
    unit: int = 1                   # c_in features per channel (a Linear after a flatten), else 1

    def spec_at(self, c: int) -> ConvSpec:
        if self.axis == "c":
            return self.base.replace(c_in=c, c_out=c, groups=c)
        return self.base.replace(**{self.axis: c})

    def specs(self) -> list[ConvSpec]:
        return [self.spec_at(c) for c in self.values]

    @property
    def step(self) -> int:
        """Counts on the line are multiples of this: a grouped conv keeps its group count; a
        Linear after a flatten loses whole channels of `unit` features."""
        return 1 if self.axis == "c" else self.base.groups * (self.unit if self.axis == "c_in" else 1)

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


def model_lines(layers: list[ConvLayer], ctx: Context, every: int = 1) -> list[Line]:
    """The lines of `layers` under `ctx`; layers of one shape share their lines."""
    by_shape: dict[ConvSpec, list[str]] = {}
    units: dict[ConvSpec, int] = {}
    outputs_only: dict[ConvSpec, bool] = {}
    for layer in layers:
        base = ctx.apply(layer.spec)
        by_shape.setdefault(base, []).append(layer.name)
        units[base] = max(units.get(base, 1), layer.unit)
        outputs_only[base] = outputs_only.get(base, True) and layer.output
    lines = []
    for base, names in by_shape.items():
        if base.depthwise:
            lines.append(Line(base, "c", channel_values(base.c_out, every), tuple(names)))
            continue
        g = base.groups
        if not outputs_only[base]:  # the classifier's outputs stay: no c_out line for it alone
            lines.append(Line(base, "c_out", channel_values(base.c_out, every, g), tuple(names)))
        unit = units[base]
        lines.append(Line(base, "c_in", channel_values(base.c_in, every, g * unit), tuple(names), unit))
    return lines


def load_lines(model: str, ctx: Context, *, input_size=None, every: int = 1) -> tuple[list[ConvLayer], list[Line]]:
    """The one model -> lines path: a model by name or `file.py:factory`, its conv layers, and
    their lines under `ctx`."""
    net, size = load(model, input_size)
    layers = conv_layers(net, size)
    return layers, model_lines(layers, ctx, every)
