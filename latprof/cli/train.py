"""`latprof train` and `latprof finetune`: a thin click layer over `latprof.train.data` and `latprof.train.loop`.

Under torchrun (WORLD_SIZE > 1) every rank runs the
command and rank 0 alone prints and saves.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import click
import torch
import torch.nn as nn

from latprof.errors import LatprofError
from latprof.tables.io import atomic_file


def _training_options(epochs: int, lr: float):
    """The options `train` and `finetune` share (defaults: the seed papers' CIFAR recipe)."""
    opts = [
        click.option("--data", "data_spec", required=True,
                     help="digits | cifar10:DIR | cifar100:DIR | imagefolder:DIR (never downloaded)."),
        click.option("--epochs", type=click.IntRange(min=1), default=epochs, show_default=True),
        click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many SGD steps in all."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=lr, show_default=True),
        click.option("--momentum", type=click.FloatRange(min=0, max=1), default=0.9, show_default=True),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-4, show_default=True),
        click.option("--lr-step", type=click.IntRange(min=1), default=50, show_default=True,
                     help="Multiply the learning rate by --lr-gamma every this many epochs."),
        click.option("--lr-gamma", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True,
                     help="Per process under torchrun."),
        click.option("--val-fraction", type=click.FloatRange(min=0, max=1, max_open=True), default=0.1,
                     show_default=True, help="Share of the training set held out for validation."),
        click.option("--image-size", type=click.IntRange(min=8), help="Resize images to this size."),
        click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
                     help="Write the training state here after every epoch."),
        click.option("--resume", is_flag=True, help="Continue from --checkpoint."),
        click.option("--device", help="cpu, cuda or cuda:N (default: a GPU if there is one)."),
        click.option("--workers", type=click.IntRange(min=0), help="Data loader processes (default: 0 on CPU)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--progress/--no-progress", default=True, show_default=True),
    ]

    def decorate(fn):
        for opt in reversed(opts):
            fn = opt(fn)
        return fn
    return decorate


def _rank0() -> bool:
    from latprof.train.loop import world

    return world()[0] == 0


def _echo(text: str) -> None:
    if _rank0():
        click.echo(text)


def _check_model(model: nn.Module, splits) -> None:
    from latprof.prune.graph import classifier

    head = classifier(model)
    if head and head[0].out_features != splits.num_classes:
        raise LatprofError(f"the model has {head[0].out_features} outputs but {splits.spec} has "
                           f"{splits.num_classes} classes; pick a model built for {splits.num_classes} "
                           "(e.g. a *_cifar100 model for cifar100)")
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, *splits.input_size, device=next(model.parameters()).device))
    except Exception as exc:  # a shape the model cannot take: say which
        raise LatprofError(f"the model failed on {splits.spec}'s images ({splits.input_size}): {exc}; "
                           "try --image-size") from exc


def _accuracies(model: nn.Module, splits, batch_size: int) -> tuple[float | None, float]:
    from latprof.train import loop as training

    val = training.evaluate(model, training.eval_loader(splits.val, batch_size)) if len(splits.val) else None
    return val, training.evaluate(model, training.eval_loader(splits.test, batch_size))


def _fmt(label: str, accs: tuple[float | None, float]) -> str:
    val = f"{accs[0]:.4f}" if accs[0] is not None else "  n/a "
    return f"{label:<8} val {val}  test {accs[1]:.4f}"


def _save(model: nn.Module, splits, out: Path) -> None:
    if not _rank0():
        return
    model.latprof_input_size = tuple(splits.input_size)
    try:
        with atomic_file(out) as f:
            torch.save(model.cpu(), f)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:  # a model class not importable by name
        raise LatprofError(f"saving the model to {out} failed ({type(exc).__name__}: {exc}); its class must "
                           "be importable by name (define it in an installed module)") from exc
    _echo(f"saved    {out}")


def _run(model: nn.Module, splits, kw: dict, out: Path, before: bool) -> None:
    from latprof.train import loop as training

    dev = training.setup(kw["device"])
    model.to(dev)
    _check_model(model, splits)
    bs = max(256, kw["batch_size"])
    if before:
        _echo(_fmt("before", _accuracies(model, splits, bs)))
    r = training.train(model, splits, **kw)
    _echo(f"trained  {r.epochs} epochs, {r.steps} steps in {r.seconds:.1f} s (stopped by {r.stopped_by})")
    _echo(_fmt("after", _accuracies(model, splits, bs)))
    _save(model, splits, out)


def _train_kwargs(kw: dict) -> dict:
    keys = ("epochs", "max_steps", "lr", "momentum", "weight_decay", "lr_step", "lr_gamma", "batch_size",
            "checkpoint", "resume", "device", "workers", "seed", "progress")
    return {k: kw[k] for k in keys}


def _splits(kw: dict):
    from latprof.train import data as data

    splits = data.load(kw["data_spec"], val_fraction=kw["val_fraction"], seed=kw["seed"],
                       image_size=kw["image_size"])
    _echo(f"data     {splits.summary()}")
    return splits


@click.command("train")
@click.argument("model_name")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to save the trained model (torch.save of the whole module).")
@_training_options(epochs=200, lr=0.1)
def train_cmd(model_name, out, **kw):
    """Train MODEL_NAME (see `latprof models`) from scratch on --data; report val and test accuracy."""
    from latprof import models

    splits = _splits(kw)
    model, _ = models.load(model_name, splits.input_size)
    _run(model, splits, _train_kwargs(kw), out, before=False)


@click.command("finetune")
@click.argument("model_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to save the fine-tuned model [default: MODEL.finetuned.pt beside MODEL].")
@_training_options(epochs=200, lr=0.01)
def finetune_cmd(model_path, out, **kw):
    """Fine-tune a saved model (what `latprof prune` or `latprof train` wrote) on --data, printing
    accuracy on the validation and test splits before and after. The file is unpickled whole:
    load only files you trust."""
    from latprof.train.loop import load_model

    model = load_model(model_path)
    splits = _splits(kw)
    out = out or model_path.with_name(model_path.stem + ".finetuned.pt")
    _run(model, splits, _train_kwargs(kw), out, before=True)
