"""`latprof steps` and `latprof wave`: the measured staircase of a model's layers; the wave model's prediction."""

from __future__ import annotations

from pathlib import Path

import click

from latprof import env
from latprof.cli.app import _input_size
from latprof.errors import LatprofError
from latprof.spec import DTYPES


@click.command()
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
    from latprof.measure import device as devices
    from latprof.tables import remote
    from latprof.staircase import lines as st
    from latprof.staircase import options
    from latprof.staircase import steptable
    from latprof.tables import io as tbl
    from latprof.tables import io as table

    if table_path is None:
        table_path = env.tables_dir() / f"{devices.select().slug}.parquet"
    if remote.is_url(table_path) and measure:
        raise click.BadParameter("--measure writes into the table: give a local --table, not a URL")
    table_path, t = remote.fetch(table_path)
    ctx = tbl.context(t, batch, dtype, backend)
    layers = st.model_steps(t, model, ctx, input_size)
    missing = st.missing_lines(layers)
    if missing and measure:
        from latprof.measure import sweep as sweeps

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
    steptable.write_steps(steptable.steps_path(table_path), fits, t)
    frame = st.layer_frame(layers)
    frame["kernels"] = edge_kernels(t, layers)
    if fmt == "json":
        click.echo(frame.to_json(orient="records", indent=1))
    elif fmt == "csv":
        flat = frame.copy()
        for col in ("edges", "jump_pct", "z", "efficient", "saving_pct", "outliers"):
            flat[col] = flat[col].map(lambda v: " ".join(map(str, v)))
        flat["kernels"] = flat["kernels"].map(" | ".join)     # kernel names hold spaces and ';', not '|' 
        click.echo(flat.to_csv(index=False), nl=False)
    else:
        click.echo(f"{model} on {t.device.get('name')} [{ctx.backend}, batch {ctx.batch}, {ctx.dtype}]: "
                   "staircase along each layer's output channels")
        for r in frame.itertuples(index=False):
            eff = " ".join(f"{c}({s:+.0f}%)" for c, s in zip(r.efficient[-6:], [-x for x in r.saving_pct[-6:]]))
            click.echo(f"{r.layer:26s} {r.c_in:4d}->{r.c_out:<4d} {r.latency_us:10.1f} us  "
                       f"{len(r.edges):3d} steps  efficient below: {eff or '-'}")
            if len(r.edges):
                click.echo(_edge_line(r))
            for c, change in zip(r.edges, r.kernels):
                if change:
                    click.echo(f"{'':26s} kernel at {c}: {change}")
        check = options.grid_check(t, layers) if grid_check else ()
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


def _edge_line(r) -> str:
    """A layer's edges: count (the first at the new level), jump in percent, significance z (the
    jump over its standard error); then the counts the fit set aside as outliers."""
    edges = " ".join(f"{c}({j:+.1f}%, z={z:.0f})" for c, j, z in zip(r.edges, r.jump_pct, r.z))
    outl = f"  outliers: {' '.join(map(str, r.outliers))}" if len(r.outliers) else ""
    return f"{'':26s} edges: {edges}{outl}"


def edge_kernels(t, layers) -> list[list[str]]:
    """Per layer, per edge of its c_out line: "below -> at" when the kernel names the table
    recorded (`algo`: cuDNN or Triton kernels on CUDA, oneDNN implementations on the CPU) differ
    between the last measured count below the edge and the first at or above it, else "" (the
    same kernel, or a side without names). A change at an edge explains the step."""
    from latprof.spec import KEY_FIELDS
    from latprof.tables.io import failed_rows

    df = t.df[~failed_rows(t.df)]
    named = df[df["algo"].fillna("").astype(str) != ""] if "algo" in df.columns else df.iloc[:0]
    algo = dict(zip(named[list(KEY_FIELDS)].itertuples(index=False, name=None), named["algo"].astype(str)))
    out = []
    for lay in layers:
        f = lay.out
        changes = []
        for c in (f.fit.edges if f.fit is not None else ()):
            below = [n for n in f.channels if n < c]
            above = [n for n in f.channels if n >= c]
            a = algo.get(f.line.spec_at(below[-1]).key(), "") if below else ""
            b = algo.get(f.line.spec_at(above[0]).key(), "") if above else ""
            changes.append(f"{a} -> {b}" if a and b and a != b else "")
        out.append(changes)
    return out


def _predicted_edges(t, ctx, layers, preset, tile) -> dict:
    from latprof.kernels import DEFAULT_TILE, TileConfig, predicted_edges

    dev = _wave_device(t.device, preset)
    cfg = TileConfig.parse(tile) if tile else (TileConfig.parse(ctx.tile) if ctx.tile else DEFAULT_TILE)
    out = {}
    for lay in layers:
        regs, smem = _resources_here(t.device, lay.spec, cfg) or (None, None)
        out[lay.name] = predicted_edges(lay.spec, cfg, dev, "c_out", regs_per_thread=regs, smem_bytes=smem)
    return out


def _resources_here(device: dict, spec, tile):
    """(registers, shared memory) of the Triton kernel compiled on this machine's GPU when it is
    the table's (`kernels.compiled_resources`); None otherwise: the wave model estimates them."""
    from latprof.kernels import compiled_resources
    from latprof.measure import device as devices

    if device.get("kind") != "cuda" or device.get("name") not in devices.visible_gpus():
        return None
    return compiled_resources(spec.replace(backend="triton", tile=str(tile)), tile)


def _wave_device(device: dict, preset: str | None):
    """The wave model's GPU: `--preset` if given, else built from the table's recorded device (SM
    count, compute capability, shared memory: right for an H100 PCIe, an H200 or a MIG slice),
    else the preset whose name the device's name contains (tables that record no SM count)."""
    from latprof.measure.device import normalise
    from latprof.kernels import ARCH_LIMITS, PRESETS, get_preset, preset_from_identity

    if preset is not None:
        return get_preset(preset)
    dev = preset_from_identity(device)
    if dev is not None:
        return dev
    name = normalise(str(device.get("name", "")))
    by_name = next((key for key in PRESETS if normalise(key) in name), None)
    if by_name is None:
        raise LatprofError(f"the table's device {device.get('name')!r} records no SM count and compute capability "
                           f"the wave model knows ({', '.join(ARCH_LIMITS)}) and no preset matches its name; "
                           f"pick one with --preset ({', '.join(PRESETS)})")
    return get_preset(by_name)


@click.command()
@click.argument("model")
@click.option("--layer", help="Conv layer name (see `latprof models MODEL`); default: every layer.")
@click.option("--preset", help="GPU preset: titan_rtx, v100, a100, h100 (default: --table's device, else titan_rtx).")
@click.option("--table", "table_path", help="Take the GPU from this table's recorded device (SM count, compute "
                                            "capability, shared memory) instead of a preset.")
@click.option("--tile", default="64x64x32,w4,s3", show_default=True, help="Tile config of the Triton kernel.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--dtype", type=click.Choice(DTYPES), default="float16", show_default=True)
@click.option("--axis", type=click.Choice(["c_out", "c_in"]), default="c_out", show_default=True)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG of the predicted staircase (needs --layer).")
def wave(model, layer, preset, table_path, tile, batch, dtype, axis, plot_path):
    """Predict step edges of a model's convs from the wave model (no GPU needed)."""
    from latprof import models
    from latprof.kernels import TileConfig, dot_note, get_preset, predicted_edges, predicted_latency_curve, waves

    if table_path is not None:
        from latprof.tables import remote

        dev = _wave_device(remote.open_table(table_path).device, preset)
    else:
        dev = get_preset(preset or "titan_rtx")
    cfg = TileConfig.parse(tile)
    net, size = models.load(model)
    layers = models.conv_layers(net, size)
    if layer is not None:
        layers = [lay for lay in layers if lay.name == layer]
        if not layers:
            raise LatprofError(f"{model} has no conv layer {layer!r}; list them with `latprof models {model}`")
    elif plot_path is not None:
        raise click.BadParameter("--plot draws one layer: give --layer")
    click.echo(f"{dev.name}: {dev.sm_count} SMs; tile {cfg}; batch {batch} {dtype}; steps along {axis}")
    if dot_note(dev.compute_capability):
        click.echo(f"note     {dot_note(dev.compute_capability)}")
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
