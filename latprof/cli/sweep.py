"""`latprof sweep` and `latprof models`: measure convolution latency; list the models latprof knows."""

from __future__ import annotations

from pathlib import Path

import click

from latprof import env
from latprof.cli.app import _input_size, _values
from latprof.measure import plan
from latprof.spec import DTYPES, LAYOUTS


@click.command()
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
@click.option("--dtype", type=click.Choice(DTYPES + ("auto",)), default="float32", show_default=True,
              help="auto: bfloat16 on a CPU with AMX or AVX512-BF16, else float32; float16 on a GPU.")
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
@click.option("--cudnn-benchmark/--no-cudnn-benchmark", default=False, show_default=True,
              help="CUDA: let cuDNN try several algorithms per shape and keep the fastest "
                   "(torch.backends.cudnn.benchmark). Recorded in the table's metadata (versions.cudnn_benchmark); "
                   "prune times whole models with it off. float32 always runs with TF32 off (IEEE float32), "
                   "recorded there too.")
def sweep(model, input_size, cin, cout, hw, kernel, stride, groups, batches, dtype, layout, device, gpu,
          backend, tile, every, dense, measure_grid, shard_text, budget_minutes, out, threads, quick, no_progress,
          request, cudnn_benchmark):
    """Measure convolution latency on a device and write its table."""
    from latprof.measure import sweep as sweeps
    from latprof.measure.device import cuda_settings
    from latprof.measure.timing import Protocol

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
        progress=not no_progress, request=request,
        search_space=_search_space(model, input_size) if model else None)
    with cuda_settings(cudnn_benchmark=cudnn_benchmark):  # the CUDA clock keeps it, and TF32 off
        s = sweeps.run(cfg)
    click.echo(f"device   {s.device.name} ({s.device.slug})")
    if s.dtype_note:
        click.echo(f"dtype    {s.dtype_note}")
    click.echo(f"table    {s.path}")
    click.echo(f"shapes   {s.planned} planned in {len(s.lines)} lines ({s.mode}; dense lines would be "
               f"{s.line_points}): {s.measured} measured now, {s.skipped} already measured, {s.left} left")
    click.echo(f"flags    {s.noisy} noisy, {s.drifted} drifted, {s.contended} contended (of those measured now)")
    click.echo(f"time     {s.seconds:.1f} s ({60 * s.measured / max(s.seconds, 1e-9):.0f} shapes/min; "
               f"{s.timed_s:.1f} s inside timed samples, {s.seconds / max(s.timed_s, 1e-9):.1f}x)")
    if s.contended:
        click.echo(f"note     {s.contended} rows were measured while another process kept a CPU busy, even after "
                   "re-measuring; they are flagged and left out of step fits. Run again on a quiet machine to "
                   "replace them (rows already measured are kept).")
    if s.steps_path:
        click.echo(f"steps    {s.steps_path}")
    if s.left:
        click.echo("budget spent: run the same command again to measure the rest.")


@click.command("models")
@click.argument("name", required=False)
def models_cmd(name):
    """List the models latprof knows, or the conv and Linear layers of one."""
    from latprof import models

    if name is None:
        for key, entry in sorted(models.MODELS.items()):
            click.echo(f"{key:20s} {'x'.join(map(str, entry.input_size)):10s} {entry.note}")
        return
    model, size = models.load(name)
    for layer in models.conv_layers(model, size):
        click.echo(f"{layer.name:32s} {layer.spec.label()}")


def _search_space(model: str, input_size):
    """What `latprof prune MODEL` will look up with its default options, for the sweep to measure:
    with residual groups kept whole, and pruned too (prune does that when a target is out of reach
    the first way)."""
    from latprof.prune import latmodel

    def specs(table, ctx):
        return latmodel.search_space_specs(model, table, ctx, input_size=input_size, keep_residual=(None, False))
    return specs
