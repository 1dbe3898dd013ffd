"""The command line: a thin click layer over the library. Commands parse, call, print."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from latprof import env, plan
from latprof.errors import LatprofError
from latprof.spec import DTYPES, LAYOUTS


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


@main.command()
@click.option("--model", help="Model name (see `latprof models`) or path/to/file.py:factory.")
@click.option("--input-size", callback=_input_size, help="C,H,W of one image (default: the model's).")
@click.option("--cin", callback=_values("cin"), help="Grid: input channels, e.g. 64 or 16-128:16.")
@click.option("--cout", callback=_values("cout"), help="Grid: output channels.")
@click.option("--hw", callback=_values("hw"), default="32", show_default=True, help="Grid: input H=W.")
@click.option("--kernel", callback=_values("kernel"), default="3", show_default=True, help="Grid: kernel size.")
@click.option("--stride", callback=_values("stride"), default="1", show_default=True, help="Grid: stride.")
@click.option("--groups", callback=_values("groups"), default="1", show_default=True, help="Grid: groups.")
@click.option("--batch", "batches", callback=_values("batch"), default="1", show_default=True,
              help="Batch size(s), e.g. 1,8,32.")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True)
@click.option("--layout", type=click.Choice(LAYOUTS), default="nchw", show_default=True)
@click.option("--device", help="cpu, cuda or cuda:N (default: the first GPU, else the CPU).")
@click.option("--gpu", help="A visible GPU by name (titan_rtx matches 'NVIDIA TITAN RTX') or index.")
@click.option("--backend", type=click.Choice(["cpu", "cudnn", "triton"]),
              help="Default: cpu on the CPU, cudnn on a GPU.")
@click.option("--tile", default="", help="Triton tile config, e.g. 64x64x32,w4,s3 (--backend triton).")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Measure every k-th channel count of each line (plus the ends).")
@click.option("--dense", is_flag=True, help="Model lines: measure every channel count (default: sparse sampling).")
@click.option("--grid/--no-grid", "measure_grid", default=True, show_default=True,
              help="Sparse model sweeps: also measure the (c_in, c_out) pairs pruning looks up.")
@click.option("--shard", "shard_text", help="Measure the i-th of n shares: i/n. Merge with `latprof tables merge`.")
@click.option("--budget-minutes", type=click.FloatRange(min=0, min_open=True),
              help="Stop after this long; run again to resume.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Table file (default: tables/<device>.parquet).")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads (default: LATPROF_THREADS, else 1: stable on shared machines).")
@click.option("--quick", is_flag=True, help="Short timing protocol (demos, smoke tests).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--request", type=click.Path(dir_okay=False, path_type=Path),
              help="Measure what this request file asks for (`latprof tables request`): its shapes, and its "
                   "lines sampled sparsely; nothing else.")
def sweep(model, input_size, cin, cout, hw, kernel, stride, groups, batches, dtype, layout, device, gpu,
          backend, tile, every, dense, measure_grid, shard_text, budget_minutes, out, threads, quick, no_progress,
          request):
    """Measure convolution latency on a device and write its table."""
    from latprof import sweep as sweeps
    from latprof.timing import Protocol

    grid = None
    if cin is not None or cout is not None:
        if cin is None or cout is None:
            raise click.BadParameter("a grid needs both --cin and --cout")
        grid = dict(cin=cin, cout=cout, hw=hw, kernel=kernel, stride=stride, groups=groups)
    if not batches:
        raise click.BadParameter("--batch: no batch size given")
    cfg = sweeps.SweepConfig(
        model=model, input_size=input_size, grid=grid, batches=tuple(batches), dtype=dtype, layout=layout,
        device=device, gpu=gpu, backend=backend, tile=tile, every=every, dense=dense, measure_grid=measure_grid,
        shard=plan.parse_shard(shard_text),
        budget_minutes=budget_minutes, out=out, threads=threads,
        protocol=Protocol.quick() if (quick or env.quick_protocol()) else Protocol(),
        progress=not no_progress)
    if request is not None:
        from latprof import request as requests

        s = requests.sweep_request(request, cfg)
    else:
        s = sweeps.run(cfg)
    click.echo(f"device   {s.device.name} ({s.device.slug})")
    click.echo(f"table    {s.path}")
    click.echo(f"shapes   {s.planned} planned in {len(s.lines)} lines ({s.mode}; dense lines would be "
               f"{s.line_points}): {s.measured} measured now, {s.skipped} already measured, {s.left} left")
    click.echo(f"flags    {s.noisy} noisy, {s.drifted} drifted (of those measured now)")
    click.echo(f"time     {s.seconds:.1f} s ({60 * s.measured / max(s.seconds, 1e-9):.0f} shapes/min)")
    if s.steps_path:
        click.echo(f"steps    {s.steps_path}")
    if s.left:
        click.echo("budget spent: run the same command again to measure the rest.")


@main.command("models")
@click.argument("name", required=False)
def models_cmd(name):
    """List the models latprof knows, or the conv layers of one."""
    from latprof import models

    if name is None:
        for key, entry in sorted(models.MODELS.items()):
            click.echo(f"{key:20s} {'x'.join(map(str, entry.input_size)):10s} {entry.note}")
        return
    model, size = models.load(name)
    for layer in models.conv_layers(model, size):
        click.echo(f"{layer.name:32s} {layer.spec.label()}")


@main.command()
@click.argument("model")
@click.option("--table", "table_path",
              help="Raw table, path or URL (default: tables/<this machine's default device>.parquet).")
@click.option("--batch", type=int, help="Batch size to read (default: the table's only one).")
@click.option("--dtype", type=click.Choice(DTYPES), help="Dtype to read (default: the table's only one).")
@click.option("--backend", type=click.Choice(["cpu", "cudnn", "triton"]), help="Backend rows to read.")
@click.option("--input-size", callback=_input_size, help="C,H,W for a model from a file.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write one PNG per layer into this folder.")
@click.option("--measure", is_flag=True, help="Measure lines the table lacks (on this machine) first.")
@click.option("--predict", is_flag=True, help="Overlay the wave model's predicted edges (GPU presets).")
@click.option("--preset", help="GPU preset for --predict (default: matched from the table's device).")
@click.option("--tile", help="Tile config for --predict (default: the table's, or 64x64x32,w4,s3).")
@click.option("--grid-check", is_flag=True,
              help="Compare the table's (c_in, c_out) pairs with a model separable in c_in and c_out.")
def steps(model, table_path, batch, dtype, backend, input_size, fmt, plot_dir, measure, predict, preset, tile,
          grid_check):
    """The latency staircase of every conv layer: step edges, efficient counts, savings."""
    from latprof import device as devices, share, steps as st, table

    if table_path is None:
        table_path = env.tables_dir() / f"{devices.select().slug}.parquet"
    if share.is_url(table_path) and measure:
        raise click.BadParameter("--measure writes into the table: give a local --table, not a URL")
    table_path, t = share.fetch(table_path)
    ctx = st.context(t, batch, dtype, backend)
    layers = st.model_steps(t, model, ctx, input_size)
    missing = st.missing_lines(layers)
    if missing and measure:
        from latprof import sweep as sweeps

        sweeps.run(sweeps.SweepConfig(model=model, input_size=input_size, batches=(ctx.batch,), dtype=ctx.dtype,
                                      layout=ctx.layout, backend=ctx.backend, tile=ctx.tile, out=table_path,
                                      device="cpu" if t.device.get("kind") == "cpu" else None,
                                      gpu=None if t.device.get("kind") == "cpu" else t.device.get("name")))
        t = table.read(table_path)
        layers = st.model_steps(t, model, ctx, input_size)
        missing = st.missing_lines(layers)
    if missing:
        listing = "\n".join(f"  {line.label()}" for line in missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise LatprofError(f"{table_path} lacks {len(missing)} line(s) of {model} at batch {ctx.batch} "
                           f"{ctx.dtype}:\n{listing}{more}\nmeasure them with `latprof sweep --model {model} "
                           f"--batch {ctx.batch} --dtype {ctx.dtype} --out {table_path}` (or add --measure)")
    fits = list({(lay.out.line.base, lay.out.line.axis): lay.out for lay in layers}.values())
    fits += list({(lay.inp.line.base, lay.inp.line.axis): lay.inp for lay in layers}.values())
    st.write_steps(st.steps_path(table_path), fits, t)
    frame = st.layer_frame(layers)
    if fmt == "json":
        click.echo(frame.to_json(orient="records", indent=1))
    elif fmt == "csv":
        flat = frame.copy()
        for col in ("edges", "efficient", "saving_pct"):
            flat[col] = flat[col].map(lambda v: " ".join(map(str, v)))
        click.echo(flat.to_csv(index=False), nl=False)
    else:
        click.echo(f"{model} on {t.device.get('name')} [{ctx.backend}, batch {ctx.batch}, {ctx.dtype}]: "
                   "staircase along each layer's output channels")
        for r in frame.itertuples(index=False):
            eff = " ".join(f"{c}({s:+.0f}%)" for c, s in zip(r.efficient[-6:], [-x for x in r.saving_pct[-6:]]))
            click.echo(f"{r.layer:26s} {r.c_in:4d}->{r.c_out:<4d} {r.latency_us:10.1f} us  "
                       f"{len(r.edges):3d} steps  efficient below: {eff or '-'}")
        check = st.grid_check(t, layers) if grid_check else ()
        if len(check):
            err = check["rel_error"].abs()
            click.echo(f"grid model (separable in c_in x c_out) vs {len(check)} measured pairs: median |error| "
                       f"{err.median():.1%}, p90 {err.quantile(0.9):.1%} (median sample IQR {check['rel_iqr'].median():.1%})")
    if plot_dir is not None:
        from latprof import plots

        predicted = _predicted_edges(t, ctx, layers, preset, tile) if predict else {}
        for lay in layers:
            title = f"{model} {lay.name}: {lay.out.line.label()}"
            plots.layer_staircase(plot_dir / f"{lay.name}.png", title, lay.out, lay.out.line.full,
                                  lay.out.line.axis, predicted.get(lay.name, ()))
        click.echo(f"plots    {len(layers)} PNG files in {plot_dir}", err=fmt != "table")


def _predicted_edges(t, ctx, layers, preset, tile) -> dict:
    from latprof.device import normalise
    from latprof.kernels import DEFAULT_TILE, PRESETS, TileConfig, get_preset, predicted_edges

    if preset is None:
        name = normalise(str(t.device.get("name", "")))
        preset = next((key for key in PRESETS if normalise(key) in name), None)
        if preset is None:
            raise LatprofError(f"no GPU preset matches {t.device.get('name')!r}; pick one with --preset "
                               f"({', '.join(PRESETS)})")
    dev = get_preset(preset)
    cfg = TileConfig.parse(tile) if tile else (TileConfig.parse(ctx.tile) if ctx.tile else DEFAULT_TILE)
    return {lay.name: predicted_edges(lay.spec, cfg, dev, "c_out") for lay in layers}


@main.command()
@click.argument("model")
@click.option("--layer", help="Conv layer name (see `latprof models MODEL`); default: every layer.")
@click.option("--preset", default="titan_rtx", show_default=True, help="GPU preset: titan_rtx, v100, a100, h100.")
@click.option("--tile", default="64x64x32,w4,s3", show_default=True, help="Tile config of the Triton kernel.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--dtype", type=click.Choice(DTYPES), default="float16", show_default=True)
@click.option("--axis", type=click.Choice(["c_out", "c_in"]), default="c_out", show_default=True)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG of the predicted staircase (needs --layer).")
def wave(model, layer, preset, tile, batch, dtype, axis, plot_path):
    """Predict step edges of a model's convs from the wave model (no GPU needed)."""
    from latprof import models
    from latprof.kernels import TileConfig, get_preset, predicted_edges, predicted_latency_curve, waves

    dev, cfg = get_preset(preset), TileConfig.parse(tile)
    net, size = models.load(model)
    layers = models.conv_layers(net, size)
    if layer is not None:
        layers = [lay for lay in layers if lay.name == layer]
        if not layers:
            raise LatprofError(f"{model} has no conv layer {layer!r}; list them with `latprof models {model}`")
    elif plot_path is not None:
        raise click.BadParameter("--plot draws one layer: give --layer")
    click.echo(f"{dev.name}: {dev.sm_count} SMs; tile {cfg}; batch {batch} {dtype}; steps along {axis}")
    for lay in layers:
        spec = lay.spec.replace(batch=batch, dtype=dtype, backend="triton", tile=str(cfg))
        edges = predicted_edges(spec, cfg, dev, axis)
        click.echo(f"{lay.name:28s} {spec.c_in:4d}->{spec.c_out:<4d} @{spec.h}x{spec.w}  "
                   f"waves {waves(spec, cfg, dev):3d}  edges {edges if len(edges) <= 12 else edges[:12] + ['...']}")
        if plot_path is not None:
            from latprof import plots

            full = spec.c_out if axis == "c_out" else spec.c_in
            counts = range(1, full + 1)
            costs = predicted_latency_curve(spec, cfg, dev, axis, counts)
            title = f"{model} {lay.name}, predicted staircase on {dev.name}\n{spec.label()}"
            plots.wave_staircase(plot_path, title, counts, costs, edges, full, axis)
            click.echo(f"plot     {plot_path}")


@main.group()
def tables():
    """Inspect, check and combine latency tables."""


@tables.command("info")
@click.argument("path")
@click.option("--model", help="Also report coverage of this model's sweep lines.")
@click.option("--batch", type=int, default=None, help="Batch size for --model coverage (default: all in table).")
def tables_info(path, model, batch):
    """What a table holds: device, shapes, batch sizes, coverage, noisy rows."""
    from latprof import report, share

    t = share.open_table(path)
    click.echo(report.table_info(t, path))
    if model:
        click.echo(report.model_coverage(t, model, batch))


@tables.command("validate")
@click.argument("path")
def tables_validate(path):
    """Check a table: readable, schema version, columns, content hash, values. Exit 1 on problems."""
    from latprof import share, table

    t = share.open_table(path)
    problems = table.validate(t)
    if problems:
        for p in problems:
            click.echo(f"problem: {p}", err=True)
        raise LatprofError(f"{path}: {len(problems)} problem(s)")
    click.echo(f"{path}: ok ({len(t.df)} rows, schema version {t.meta['schema_version']})")


@tables.command("merge")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
def tables_merge(out, inputs):
    """Combine tables of one device (shards, hosts) into OUT."""
    from latprof import merge

    m = merge.merge_files(inputs, out)
    click.echo(f"{out}: {m.rows} rows from {len(inputs)} tables; {m.overlaps} keys in several inputs, "
               f"{m.disagreements} of them disagree by more than {merge.DISAGREE_REL:.0%}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
from latprof import cli_prune  # noqa: F401,E402
from latprof import cli_share  # noqa: F401,E402
from latprof import cli_train  # noqa: F401,E402
