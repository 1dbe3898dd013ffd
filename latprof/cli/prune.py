"""`latprof prune`: choose channel counts per layer from a latency table, prune, report.

The library is `latprof.prune.pipeline`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from latprof import env
from latprof.cli.app import _input_size
from latprof.spec import DTYPES
from latprof.staircase import options


@click.command("prune")
@click.argument("model")
@click.option("--table", "table_path", required=True, help="Latency table (path or URL) of the target device.")
@click.option("--target-ms", type=click.FloatRange(min=0, min_open=True), help="Latency budget in ms.")
@click.option("--target-ratio", type=click.FloatRange(min=0, max=1, min_open=True),
              help="Budget as a share of the unpruned model's latency under the same table.")
@click.option("--algo", default="dp", show_default=True, help="Searcher: dp, evo, abc or ddpg.")
@click.option("--importance", default="l1", show_default=True, help="l1, l2, bn_scale, fpgm or acs.")
@click.option("--weights-prev", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Earlier checkpoint (state_dict) for --importance acs.")
@click.option("--batch", type=int, help="Batch size (default: the table's only one).")
@click.option("--dtype", type=click.Choice(DTYPES), help="Dtype (default: the table's only one).")
@click.option("--backend", type=click.Choice(["cpu", "cudnn", "triton"]), help="Backend rows of the table.")
@click.option("--input-size", callback=_input_size, help="C,H,W for a model from a file.")
@click.option("--min-keep", type=click.FloatRange(min=0, max=1), default=options.MIN_KEEP, show_default=True,
              help="Keep at least this share of each group's channels.")
@click.option("--keep-residual/--no-keep-residual", default=None,
              help="Keep channels coupled by residual adds whole (default: on when the model has them).")
@click.option("--device", "for_device", help="The device you prune for; refused if the table is another's.")
@click.option("--force", is_flag=True, help="Use a table of another device anyway.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("out/prune"),
              show_default=True, help="Folder for the pruned model, its structure and the request file.")
@click.option("--export", type=click.Choice(["torchscript", "onnx"]), help="Also export the pruned model.")
@click.option("--compare", is_flag=True, help="Add baselines at the same MACs: uniform ratio, Torch-Pruning L1.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the report.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG: each group's staircase with its chosen count, and latency vs MACs.")
@click.option("--no-measure", is_flag=True, help="Do not measure on this machine even if it is the table's device.")
@click.option("--quick", is_flag=True, help="Short timing protocol for the measurements.")
@click.option("--confirm", type=click.IntRange(min=0), default=None,
              help="Fresh processes that time the saved models for the verdict (default 3; 0: one more "
                   "session in this process).")
@click.option("--fitness", type=click.Choice(["importance", "accuracy"]), default="importance", show_default=True,
              help="What evo/abc/ddpg maximise: retained importance, or validation accuracy after brief training.")
@click.option("--data", "data_spec", help="For --fitness accuracy: digits | cifar10:DIR | cifar100:DIR | imagefolder:DIR.")
@click.option("--fitness-steps", type=click.IntRange(min=1), default=100, show_default=True,
              help="SGD steps per candidate (--fitness accuracy).")
@click.option("--fitness-epochs", type=click.IntRange(min=1), help="Train each candidate this many epochs instead.")
@click.option("--train-device", help="Where candidates train (default: a GPU if present).")
@click.option("--cuda-graphs", is_flag=True,
              help="GPU tables: time whole models as CUDA graph replays (no per-kernel launch cost), and the "
                   "original and the final model eager too, to say whether they are launch-bound.")
def prune_cmd(model, table_path, target_ms, target_ratio, algo, importance, weights_prev, batch, dtype, backend,
              input_size, min_keep, keep_residual, for_device, force, seed, out, export, compare, json_path,
              plot_path, no_measure, quick, fitness, data_spec, fitness_steps, fitness_epochs, train_device,
              cuda_graphs, confirm):
    """Prune MODEL (a name, file.py:factory, or a trained model.pt) to a latency target using only a
    latency table, then measure it if the table's device is this machine."""
    from latprof.prune import pipeline as pruning

    if (target_ms is None) == (target_ratio is None):
        raise click.BadParameter("give exactly one of --target-ms and --target-ratio")
    cfg = pruning.PruneConfig(
        model=model, table=str(table_path), input_size=input_size, batch=batch, dtype=dtype, backend=backend,
        target_ms=target_ms, target_ratio=target_ratio, algo=algo, importance=importance, weights_prev=weights_prev,
        min_keep=min_keep, keep_residual=keep_residual, seed=seed, device=for_device, force=force, out=out,
        export=export, compare=compare, measure=False if no_measure else None,
        quick=quick or env.quick_protocol(), fitness=fitness, data=data_spec, fitness_steps=fitness_steps,
        fitness_epochs=fitness_epochs, train_device=train_device, cuda_graphs=cuda_graphs,
        **({} if confirm is None else {"confirm": confirm}))
    r = pruning.run(cfg)
    _print_prune(r, no_measure)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(r.to_dict(), indent=1, default=str) + "\n")
        click.echo(f"report   {json_path}")
    if plot_path is not None:
        from latprof import plots

        layers = [(g["root"], r.fits[g["root"]], g["kept"]) for g in r.groups if g["root"] in r.fits]
        plots.prune_summary(plot_path, f"{model} pruned to {r.target_ms:.2f} ms on {r.device}", layers,
                            [r.original, r.pruned] + r.baselines)
        click.echo(f"plot     {plot_path}")


def _ms(v) -> str:
    return f"{v:9.3f}" if v is not None else "      n/a"


def _print_prune(r, no_measure: bool = False) -> None:
    for warning in r.warnings:
        click.echo(f"warning: {warning}", err=True)
    ctx = r.context
    click.echo(f"{r.model} for {r.device} [{ctx['backend']}, batch {ctx['batch']}, {ctx['dtype']}]: "
               f"{r.algo} search, {r.importance} importance, {r.search_seconds:.2f} s ({r.evaluations} evaluations)")
    if r.search_note:
        click.echo(f"note     {r.search_note}")
    where = (f", its constant shifted to the {r.local_points} candidates measured near the target"
             if r.local_points else "")
    cal = (f"calibrated on this machine: {r.scale:.3f} x conv sum + {r.rest_ms:.3f} ms{where}" if r.calibrated
           else "not calibrated (--no-measure): conv layers only" if no_measure
           else "not calibrated (the table's device is not this machine): conv layers only")
    of = (f" ({r.target_ratio:g} x the original's {r.original.measured_ms:.3f} ms measured here, pooled over "
          f"{r.sessions} sessions)" if r.target_ratio is not None and r.original.measured_ms else "")
    click.echo(f"target   {r.target_ms:.3f} ms{of}; latency model {cal}")
    if r.fitness == "accuracy":
        click.echo(f"fitness  validation accuracy after brief training: {r.fitness_value:.3f}")
    if r.accuracy:
        click.echo(f"accuracy test: original {r.accuracy['original_test']:.3f}, pruned before fine-tuning "
                   f"{r.accuracy['pruned_test']:.3f} (fine-tune with `latprof finetune {r.files.get('model', 'MODEL.pt')} "
                   f"--data ...`)")
    click.echo(f"{'group (root conv)':32s} {'before':>6s} {'after':>6s}  options")
    for g in r.groups:
        click.echo(f"{g['root']:32s} {g['channels']:6d} {g['kept']:6d}  {g['options']}")
    click.echo(f"{'':32s} {'predicted ms':>12s} {'measured ms':>12s} {'error':>7s} {'x orig':>7s} {'MMACs':>9s} "
               f"{'params':>10s} {'kept imp.':>9s}")
    for c in [r.original, r.pruned] + r.baselines:
        err = (f"{c.predicted_ms / c.measured_ms - 1:+7.1%}" if c.predicted_ms is not None and c.measured_ms
               else "    n/a")
        ratio = f"{c.measured_ratio:7.3f}" if c.measured_ratio is not None else "    n/a"
        imp = f"{c.importance:9.3f}" if c.importance is not None else f"{'n/a':>9s}"
        click.echo(f"{c.name:32s} {_ms(c.predicted_ms):>12s} {_ms(c.measured_ms):>12s} {err} {ratio} "
                   f"{c.macs / 1e6:9.1f} {c.params:10d} {imp}")
    if r.pruned.measured_ratio is not None:
        click.echo("measured: each model timed in interleaved rounds next to the original; 'x orig' is the median "
                   "per-round ratio, and ms = ratio x the original's latency pooled over the sessions")
        n = len(r.pruned.session_ratios)
        fresh = f"the saved models timed in {n} fresh process{'es' if n > 1 else ''}" if r.confirmed else "one session"
        loop = f"; the closed loop's session, which chose it, read {r.loop_ratio:.3f}" if r.loop_ratio else ""
        click.echo(f"final    {fresh}: latprof's pick x orig "
                   f"{', '.join(f'{v:.3f}' for v in r.pruned.session_ratios)}{loop}")
        if r.held_out_ms and r.pruned.measured_ms:
            click.echo(f"model    latprof's pick predicted {r.held_out_ms:.3f} ms "
                       f"({r.held_out_ms / r.pruned.measured_ms - 1:+.1%}) with the constant shifted on the other "
                       f"candidates measured ({r.pruned.predicted_ms:.3f} ms when it was searched)")
    if r.cuda_graphs:
        click.echo("timing   whole models as CUDA graph replays (--cuda-graphs); eager for comparison:")
        for name, v in r.launch.items():
            verdict = ("launch-bound: the host issuing kernels, not the GPU's work, sets its eager latency; "
                       "pruning channels cannot help it (run it as a CUDA graph, or at a larger batch)"
                       if v["launch_bound"] else "not launch-bound")
            click.echo(f"launch   {name}: eager {_ms(v['eager_ms']).strip()} ms, graph "
                       f"{_ms(v['graph_ms']).strip()} ms (eager/graph {v['eager_over_graph']:.2f}): {verdict}")
    for p in r.peers:
        same = r.peer_macs_at_equal_latency.get(p.name)
        at = (f"; at latprof's measured latency it would keep {same / 1e6:.1f} MMACs, latprof "
              f"{r.pruned.macs / same:.2f}x that" if same else "")
        imp = f", keeps {p.importance:.3f} of the importance (latprof {r.pruned.importance:.3f})" if p.importance else ""
        click.echo(f"peer     {p.name}, pruned to the target by measurement: {_ms(p.measured_ms).strip()} ms "
                   f"(x orig {p.measured_ratio:.3f}), {p.macs / 1e6:.1f} MMACs{at}{imp}")
    if len(r.attempts) > 1:
        for i, a in enumerate(r.attempts, 1):
            click.echo(f"candidate {i}: budget {a['budget_ms']:.3f} ms, predicted {a['predicted_ms']:.3f} ms, "
                       f"measured {a['measured_ms']:.3f} ms, value {a.get('value', float('nan')):.4f}")
    got = r.pruned.measured_ms if r.pruned.measured_ms is not None else r.pruned.predicted_ms
    how = "measured" if r.pruned.measured_ms is not None else "predicted"
    spread = (f", samples p25-p75 {r.pruned.measured_iqr_ms[0]:.3f}-{r.pruned.measured_iqr_ms[1]:.3f} ms"
              if r.pruned.measured_iqr_ms else "")
    click.echo(f"target met: {'yes' if r.met else 'NO'} ({how} {got:.3f} ms vs target {r.target_ms:.3f} ms"
               f"{spread}): {r.verdict}")
    for k, v in r.files.items():
        click.echo(f"{k:8s} {v}")
