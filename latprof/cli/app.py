"""The `latprof` group: error handling and the option parsers the command modules share.

Command modules (`sweep`, `steps`, `tables`, `prune`, `train`) define plain click commands;
`latprof.cli` adds them to `main`. Nothing here imports a command module.

The group is the CLI's one error boundary: a `LatprofError` and an OS error (permission,
read-only, not a folder, no space) each print one line and exit 1; nothing is half-written,
because every table, request and model goes through an atomic write. Before a command starts
its work, the paths it will write (`OUTPUT_PARAMS`) are checked (`check_writable`), so that a
long sweep or training run does not end in an unwritable `--out`.
"""

from __future__ import annotations

import errno
import functools
import tempfile
import traceback
from pathlib import Path

import click

from latprof.errors import LatprofError
from latprof.measure import plan
from latprof.tables.oserrors import os_errno
from latprof.tables.oserrors import os_error_message
from latprof.tables.remote import is_url

#: Parameters that name a file or folder a command writes; checked before the command runs.
OUTPUT_PARAMS = ("out", "json_path", "plot_path", "plot_dir", "checkpoint", "request_out")

#: What an OS error's innermost call was doing, by function name (pathlib, os, shutil, matplotlib).
_OPERATIONS = {"mkdir": "create the folder", "makedirs": "create the folder", "write_text": "write",
               "write_bytes": "write", "savefig": "write", "print_png": "write", "save": "write",
               "replace": "replace", "rename": "rename", "unlink": "remove", "remove": "remove",
               "rmtree": "remove", "copyfile": "copy to", "copyfileobj": "write", "read_text": "read",
               "read_bytes": "read", "touch": "create", "open": "open", "chmod": "change the mode of"}


class LatprofGroup(click.Group):
    """User errors print one line and exit 1; Ctrl-C says how to resume and exits 130."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LatprofError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except OSError as exc:
            click.echo(f"error: {describe_os_error(exc)}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("\ninterrupted: every finished row is saved; run the same command again to resume.",
                       err=True)
            ctx.exit(130)

    def add_command(self, cmd, name=None):
        _check_outputs_first(cmd)
        super().add_command(cmd, name)


def describe_os_error(exc: OSError) -> str:
    """One line for an OS error raised outside the tables' own writes: the operation (from the
    call that raised it), the path, why (errno-based) and what to do."""
    op = "write" if os_errno(exc) in (errno.ENOSPC, errno.EDQUOT) else "access"
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.name in _OPERATIONS:
            op = _OPERATIONS[frame.name]
            break
    return os_error_message(exc, op)


def check_writable(path, *, folder: bool = False, what: str = "") -> None:
    """Raise `LatprofError` unless `path` (a file, or with `folder` a folder) can be written:
    the nearest existing folder on its way must be a folder we may create files in, and no file
    may stand where a folder must go (or a folder where the file must go). Creates nothing that
    stays: a probe file is made and removed."""
    path = Path(path)
    label = f"{path} ({what})" if what else str(path)
    if path.exists():
        if folder and not path.is_dir():
            raise LatprofError(f"cannot write into {label}: it is a file, not a folder; choose another path")
        if not folder and path.is_dir():
            raise LatprofError(f"cannot write {label}: it is a folder; give a file name")
    base = path if folder and path.is_dir() else path.parent
    while not base.exists():
        if base.parent == base:
            break
        base = base.parent
    if base.exists() and not base.is_dir():
        raise LatprofError(f"cannot write {label}: {base} is a file, not a folder; choose another path")
    try:
        with tempfile.TemporaryFile(dir=base, prefix=".latprof-probe-"):
            pass
    except OSError as exc:  # the probe's own name says nothing to the user
        raise LatprofError(os_error_message(OSError(exc.errno, exc.strerror), "write", label)) from None


def _check_outputs_first(cmd: click.Command) -> None:
    """Wrap `cmd` (each command of a group, too) so that its `OUTPUT_PARAMS` are checked with
    `check_writable` before its callback runs."""
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            _check_outputs_first(sub)
        return
    outputs = {p.name: p for p in cmd.params if p.name in OUTPUT_PARAMS and isinstance(p.type, click.Path)}
    if not outputs or cmd.callback is None or getattr(cmd.callback, "_outputs_checked", False):
        return
    callback = cmd.callback

    @functools.wraps(callback)
    def checked(*args, **kwargs):
        for name, param in outputs.items():
            value = kwargs.get(name)
            if value is not None and not is_url(str(value)):
                check_writable(value, folder=not param.type.file_okay,
                               what=param.opts[0] if isinstance(param, click.Option) else name.upper())
        return callback(*args, **kwargs)

    checked._outputs_checked = True
    cmd.callback = checked


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
