"""`latprof tables`: inspect, check, combine, compare, request, upgrade and fetch tables.

The `tables` group of `latprof`; tables may be given by path or URL
(`tables.remote.open_table`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from latprof.cli.app import _input_size
from latprof.errors import LatprofError
from latprof.spec import BACKENDS, DTYPES, LAYOUTS, KEY_FIELDS

@click.group()
def tables():
    """Inspect, check and combine latency tables."""


@tables.command("info")
@click.argument("path")
@click.option("--model", help="Also report coverage of this model's sweep lines.")
@click.option("--batch", type=int, default=None, help="Batch size for --model coverage (default: all in table).")
def tables_info(path, model, batch):
    """What a table holds: device, shapes, batch sizes, coverage, noisy rows."""
    from latprof.tables import report as report
    from latprof.tables import remote

    t = remote.open_table(path)
    click.echo(report.table_info(t, path))
    _warn_journal(path)
    if model:
        click.echo(report.model_coverage(t, model, batch))


def _warn_journal(path) -> int:
    """Say how many rows wait in the table's journal (a sweep killed, or still running)."""
    from latprof.tables import remote
    from latprof.tables.store import journal_path, pending_rows

    if remote.is_url(str(path)):
        return 0
    n = pending_rows(path)
    if n:
        click.echo(f"warning: {n} rows in {journal_path(path)} are not in the table yet (a sweep was killed, or "
                   "is still running); the next sweep of this table, or `latprof tables merge "
                   f"{path} {path}`, folds them in", err=True)
    return n


@tables.command("validate")
@click.argument("path")
@click.option("--rehash", is_flag=True,
              help="Adopt a table whose rows have no (or another) content hash: record the hash of its rows "
                   "as they are. Only for a file you trust.")
def tables_validate(path, rehash):
    """Check a table: readable, metadata, schema version, columns, content hash, values. Exit 1 on problems."""
    from latprof.tables import remote
    from latprof.tables import io as table

    if rehash:
        click.echo(_rehash(path))
    t = remote.open_table(path)
    problems = table.validate(t)
    if problems:
        raise LatprofError(f"{path}: {len(problems)} problem(s): {'; '.join(problems)}")
    failed = int(table.failed_rows(t.df).sum())
    click.echo(f"{path}: ok ({len(t.df)} rows{f', {failed} flagged failed' if failed else ''}, "
               f"schema version {t.meta['schema_version']})")
    _warn_journal(path)


def _rehash(path) -> str:
    from latprof.tables import io as table
    from latprof.tables import remote
    from latprof.tables.store import table_lock

    if remote.is_url(str(path)):
        raise LatprofError(f"--rehash rewrites a local file; fetch {path} first (`latprof tables fetch {path} "
                           "--out FILE.parquet`) and rehash that file")
    with table_lock(Path(path), "writing"):
        t = table.read(path, check_hash=False)
        stated = t.meta.get("content_hash")
        now = table.content_hash(t.df)
        if stated == now:
            return f"{path}: the content hash matches its rows; nothing to adopt"
        t.meta = {**t.meta, "rehashed_from": stated}
        table.write(path, t)
    was = "had no content hash" if stated is None else "had a content hash its rows did not match"
    return f"{path}: {was}; adopted as it is ({len(t.df)} rows, hash {now[:23]}...)"


@tables.command("merge")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Replace OUT even though it is not among the inputs (its rows are lost).")
def tables_merge(out, inputs, force):
    """Combine tables of one device (shards, hosts; paths or URLs) into OUT.

    OUT keeps its rows only if it is named among the inputs too (`merge T.parquet T.parquet
    PART.parquet`); an existing OUT that is not an input is refused unless --force is given."""
    from latprof.tables import merge as merge

    m = merge.merge_files(list(inputs), out, force=force)
    click.echo(f"{out}: {m.rows} rows from {len(inputs)} tables; {m.overlaps} keys in several inputs, "
               f"{m.disagreements} of them disagree by more than {merge.DISAGREE_REL:.0%}")
    if m.journal_rows:
        click.echo(f"journal  {m.journal_rows} rows taken from inputs' journals (sweeps that did not finish)")
    if force and m.replaced is not None:
        click.echo(f"replaced {out} (--force): its {m.replaced} rows were not an input", err=True)


_IGNORABLE = [f for f in KEY_FIELDS if f not in ("c_in", "c_out", "groups")]


@tables.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG: histogram of the B/A ratios and a few staircases overlaid.")
@click.option("--ignore", multiple=True, type=click.Choice(_IGNORABLE),
              help="Match shapes ignoring this key field (repeatable), e.g. --ignore backend.")
@click.option("--tolerance", type=click.IntRange(min=0), default=0, show_default=True,
              help="Channels an edge may move and still count as the same edge.")
@click.option("--no-edges", is_flag=True, help="Skip the step fits (coverage and ratios only; fast).")
def tables_diff(a, b, plot_path, ignore, tolerance, no_edges):
    """Compare two tables (paths or URLs): coverage, latency ratios B/A, moved step edges."""
    from latprof.tables import remote

    from latprof.staircase import diff

    result = diff.diff_tables(remote.open_table(a), remote.open_table(b), names=(a, b), ignore=tuple(ignore),
                               tolerance=tolerance, edges=not no_edges)
    for line in result.summary():
        click.echo(line)
    if plot_path is not None:
        diff.plot_diff(result, plot_path)
        click.echo(f"plot       {plot_path}")


@tables.command("request")
@click.option("--model", required=True, help="Model name (see `latprof models`) or path/to/file.py:factory.")
@click.option("--batch", required=True, type=click.IntRange(min=1), help="Batch size the pruner needs.")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True)
@click.option("--layout", type=click.Choice(LAYOUTS), default="nchw", show_default=True)
@click.option("--backend", type=click.Choice(BACKENDS),
              help="Default: the table's backend; without a table, cudnn (a request goes to a GPU lab).")
@click.option("--tile", default="", help="Triton tile config (--backend triton).")
@click.option("--input-size", callback=_input_size, help="C,H,W for a model from a file.")
@click.option("--table", "table_ref", help="The table (path or URL) to complete; without it, every shape is asked for.")
@click.option("--missing-lines", is_flag=True,
              help="Ask only for lines the table cannot fit at all (default: every dense count it lacks).")
@click.option("--sparse", is_flag=True,
              help="Ask for the lines the table cannot fit, to be sampled sparsely where they are measured "
                   "(a fraction of the shapes of --missing-lines; request format 2).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Request file (JSON).")
def tables_request(model, batch, dtype, layout, backend, tile, input_size, table_ref, missing_lines, sparse, out):
    """Write the shapes a model needs that a table lacks, for the lab that has the device."""
    import latprof
    from latprof.models import lines as plan
    from latprof.spec import Context
    from latprof.staircase import lines as need
    from latprof.tables import request as requests
    from latprof.tables import remote

    t = remote.open_table(table_ref) if table_ref else None
    if backend is None:
        backend = _default_backend(t, batch, dtype)
    ctx = Context(batch, dtype, layout, backend, tile)
    if sparse:
        specs, lines = [], need.unfittable_lines(t, model, ctx, input_size=input_size)
    else:
        specs, lines = need.missing_specs(t, model, ctx, input_size=input_size,
                                          missing_lines_only=missing_lines), []
    device = t.device if t is not None else None
    requests.write_request(out, specs, {
        "device": device, "model": model, "batch": batch, "dtype": dtype, "layout": layout, "backend": backend,
        "tile": tile, "scope": "missing lines, sparse" if sparse else "missing lines" if missing_lines
        else "dense lines",
        "table": table_ref, "table_content_hash": t.meta.get("content_hash") if t is not None else None,
        "latprof_version": latprof.__version__}, lines)
    where = f"{device.get('name')}" if device else "the target device (not named: no --table)"
    what = (f"{len(lines)} lines (of up to {len(plan.line_specs(lines))} shapes, sampled sparsely)"
            if sparse else f"{len(specs)} shapes")
    click.echo(f"request  {out}: {what} of {model} (batch {batch} {dtype} {layout} {backend}) "
               f"{'the table lacks' if t is not None else 'in all'}")
    if specs or lines:
        gpu = f"--gpu '{device.get('name')}'" if device and device.get("kind") == "cuda" else (
            "--device cpu" if device or backend == "cpu" else "--gpu NAME")
        click.echo(f"measure  on {where}: latprof sweep {gpu} --request {out} --out PART.parquet")
        target = table_ref if table_ref and not remote.is_url(table_ref) else "TABLE.parquet"
        click.echo(f"merge    latprof tables merge {target} {target} PART.parquet")


def _default_backend(t, batch: int, dtype: str) -> str:
    if t is None:
        return "cudnn"
    rows = t.df[(t.df["batch"] == batch) & (t.df["dtype"] == dtype)]
    used = sorted(set((rows if len(rows) else t.df)["backend"]))
    if len(used) == 1:
        return used[0]
    if len(used) > 1:
        raise LatprofError(f"the table holds several backends ({', '.join(used)}); choose one with --backend")
    return "cpu" if t.device.get("kind") == "cpu" else "cudnn"


@tables.command("upgrade")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def tables_upgrade(path):
    """Convert a table written under an older schema version, in place."""
    from latprof.tables import upgrade

    click.echo(upgrade.upgrade_table(path))


@tables.command("fetch")
@click.argument("url")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Also copy the table here.")
@click.option("--refresh", is_flag=True, help="Download again even if a cached copy exists.")
def tables_fetch(url, out, refresh):
    """Download a table (any fsspec URL or a path), verify its content hash, say where it is."""
    from latprof.tables import remote

    from latprof.measure import device as devices
    from latprof.tables import io as tbl

    path, t = remote.fetch(url, refresh=refresh)
    click.echo(f"table    {path} ({t.device.get('name')}, {len(t.df)} rows)")
    click.echo(f"hash     {t.meta.get('content_hash')} (verified)")
    if out is not None:
        with tbl.atomic_file(out) as f, open(path, "rb") as src:
            shutil.copyfileobj(src, f)
        click.echo(f"copied   {out}")
    for warning in tbl.version_warnings(t.meta, devices.software_versions()):
        click.echo(f"warning: {warning}", err=True)
