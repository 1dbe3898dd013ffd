"""The `latprof` group: error handling and the option parsers the command modules share.

Command modules (`sweep`, `steps`, `tables`, `prune`, `train`) define plain click commands;
`latprof.cli` adds them to `main`. Nothing here imports a command module.
"""

from __future__ import annotations

import click

from latprof.errors import LatprofError
from latprof.measure import plan


class LatprofGroup(click.Group):
    """User errors print one line and exit 1; Ctrl-C says how to resume and exits 130."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LatprofError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("\ninterrupted: every finished row is saved; run the same command again to resume.",
                       err=True)
            ctx.exit(130)


@click.group(cls=LatprofGroup)
@click.version_option(package_name="latprof")
@click.pass_context
def main(ctx):
    """latprof: measure convolution latency, fit its staircase, prune to a latency target."""
    ctx.ensure_object(dict)


def _values(what):
    def convert(ctx, param, value):
        if value is None:
            return None
        try:
            return plan.parse_values(value, what)
        except LatprofError as exc:
            raise click.BadParameter(str(exc)) from None
    return convert


def _input_size(ctx, param, value):
    if value is None:
        return None
    parts = value.replace("x", ",").split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(f"{value!r}: write C,H,W, for example 3,224,224")
    return tuple(int(p) for p in parts)
