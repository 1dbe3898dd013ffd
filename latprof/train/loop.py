"""Training and fine-tuning: SGD with a step schedule, checkpoints that resume, DDP under torchrun.

The default recipe is the seed papers' CIFAR one: SGD with momentum 0.9, weight decay 1e-4,
learning rate 0.1 divided by 10 every 50 epochs; every part is a parameter.

Determinism. Each epoch's sample order comes from its own generator seeded by (seed, epoch), and
the global RNGs (which data augmentation uses) are seeded once by `seed`; a checkpoint stores
them, so on a CPU an interrupted run resumed from its checkpoint ends with the same weights as a
run that was never interrupted (with `workers=0`, the CPU default).

Several GPUs: launch with `torchrun --nproc-per-node N --no-python latprof finetune ...`. When
WORLD_SIZE > 1 (set by torchrun) the process group is initialised (nccl on CUDA, gloo on the
CPU), the model is wrapped in DistributedDataParallel, each rank draws its share of every epoch
from a DistributedSampler, evaluation is sharded and summed, and rank 0 alone writes
checkpoints and shows progress. Batch size is per rank. BatchNorm statistics stay per rank.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Subset

from latprof.errors import LatprofError
from latprof.tables.io import atomic_file

CHECKPOINT_FORMAT = "latprof-train-checkpoint/1"


@dataclass
class TrainResult:
    epochs: int                      # completed epochs in all (a resumed run counts the earlier ones)
    steps: int                       # optimizer steps in all
    seconds: float                   # wall time of this call
    stopped_by: str                  # "epochs", or "max_steps" when the step budget ended training
    train_loss: float | None = None  # mean loss of the last epoch run (on this rank's share)
    train_accuracy: float | None = None
    val_accuracy: float | None = None  # after the last epoch run (None without validation)
    history: list[dict] = field(default_factory=list)  # one record per epoch (or partial epoch)


def world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's variables (not latprof knobs: torchrun sets them)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0"))


def setup(device: str | torch.device | None = None) -> torch.device:
    """The device to train on; under torchrun, also initialise the process group (once)."""
    rank, size, local = world()
    if size > 1:
        import torch.distributed as dist

        cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
        if cuda:
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
        return torch.device("cpu")
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise LatprofError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LatprofError(f"device {device!r} asked for, but torch sees no CUDA GPU here; use --device cpu")
    return dev


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def eval_loader(dataset: Dataset, batch_size: int = 256, workers: int = 0) -> DataLoader:
    """Loader for `evaluate`, in dataset order; under DDP each rank gets every world-th item."""
    if _distributed():
        import torch.distributed as dist

        dataset = Subset(dataset, range(dist.get_rank(), len(dataset), dist.get_world_size()))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | None = None) -> float:
    """Top-1 accuracy in [0, 1] (summed over ranks under DDP). Leaves the model's mode as it was."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    counts = torch.zeros(2, dtype=torch.long, device=device)
    with torch.inference_mode():
        for x, y in loader:
            y = y.to(device)
            counts[0] += (model(x.to(device)).argmax(1) == y).sum()
            counts[1] += y.numel()
    model.train(was_training)
    if _distributed():
        import torch.distributed as dist

        dist.all_reduce(counts)
    correct, total = counts.tolist()
    if total == 0:
        raise LatprofError("nothing to evaluate: the split is empty (a val_fraction of 0 leaves no validation set)")
    return correct / total


# Long by design: one training loop whose resume points (epoch, step inside an epoch, RNG state,
# checkpoint) must stay in one scope to be exactly resumable.
def train(model: nn.Module, splits, *, epochs: int | None = None, lr: float = 0.1, momentum: float = 0.9,
          weight_decay: float = 1e-4, batch_size: int = 128, lr_step: int = 50, lr_gamma: float = 0.1,
          max_steps: int | None = None, device: str | torch.device | None = None,
          checkpoint: str | Path | None = None, resume: bool = False, progress: bool = True, seed: int = 0,
          validate: bool = True, workers: int | None = None) -> TrainResult:
    """Train `model` in place on `splits.train` for `epochs` (or until `max_steps` optimizer steps in
    all), validating on `splits.val` after each epoch. The learning rate is multiplied by `lr_gamma`
    every `lr_step` epochs. With `checkpoint`, the state is written atomically after every epoch
    (and when `max_steps` stops mid-epoch); `resume` continues from it, with the checkpoint's
    optimizer and schedule (its learning rate wins over `lr`)."""
    _check_args(epochs, max_steps, batch_size, lr, lr_step, checkpoint, resume)
    if len(splits.train) == 0:
        raise LatprofError("the training split is empty")
    rank, size, _ = world()
    dev = setup(device)
    if workers is None:
        workers = 0 if dev.type == "cpu" else min(8, (os.cpu_count() or 1) // size)
    model.to(dev)
    net = model
    if size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=lr_step, gamma=lr_gamma)
    per_rank = math.ceil(len(splits.train) / size)
    per_epoch = math.ceil(per_rank / batch_size)
    if epochs is None:
        epochs = math.ceil(max_steps / per_epoch)
    start, step, skip, history = 0, 0, 0, []
    _seed_all(seed)
    path = Path(checkpoint) if checkpoint is not None else None
    if resume:
        state = _load(path, model, opt, sched, dev)
        start, step, skip, history = state["epoch"], state["step"], state["epoch_step"], state["history"]
    elif path is not None and path.exists():
        raise LatprofError(f"checkpoint {path} already exists; resume it with --resume, or delete it to start over")
    val = eval_loader(splits.val, max(batch_size, 256), workers) if validate and len(splits.val) else None
    loss_fn = nn.CrossEntropyLoss()
    result = TrainResult(epochs=start, steps=step, seconds=0.0, stopped_by="epochs", history=history)
    t0 = time.perf_counter()
    for epoch in range(start, epochs):
        if max_steps is not None and step >= max_steps:
            result.stopped_by = "max_steps"
            break
        order = _epoch_order(splits.train, seed, epoch, size)[skip * batch_size:]
        loader = DataLoader(splits.train, batch_size=batch_size, sampler=order, num_workers=workers,
                            pin_memory=dev.type == "cuda")
        bar = _bar(per_epoch, skip, f"epoch {epoch + 1}/{epochs}", progress and rank == 0)
        done_in_epoch, skip = skip, 0
        sums = torch.zeros(3, device=dev)  # loss * n, correct, n
        net.train()
        for x, y in loader:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            out = net(x)
            loss = loss_fn(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            done_in_epoch += 1
            sums[0] += loss.detach() * len(y)
            sums[1] += (out.argmax(1) == y).sum()
            sums[2] += len(y)
            bar.update(1)
            if done_in_epoch % 10 == 0 or done_in_epoch == per_epoch:
                bar.set_postfix(loss=f"{sums[0] / sums[2]:.3f}", acc=f"{sums[1] / sums[2]:.3f}")
            if max_steps is not None and step >= max_steps:
                break
        complete = done_in_epoch >= per_epoch
        record = {"epoch": epoch + 1, "complete": complete, "steps": step, "lr": opt.param_groups[0]["lr"],
                  "loss": (sums[0] / sums[2]).item() if sums[2] else None,
                  "accuracy": (sums[1] / sums[2]).item() if sums[2] else None}
        if complete:
            sched.step()
        if val is not None:
            record["val_accuracy"] = evaluate(model, val, dev)
            bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.3f}",
                            val=f"{record['val_accuracy']:.3f}")
        bar.close()
        history.append(record)
        result.epochs = epoch + 1 if complete else epoch
        result.steps = step
        result.train_loss, result.train_accuracy = record["loss"], record["accuracy"]
        result.val_accuracy = record.get("val_accuracy")
        if path is not None:
            _save(path, model, opt, sched, result.epochs, step, 0 if complete else done_in_epoch, history, rank)
        if not complete:
            result.stopped_by = "max_steps"
            break
    result.seconds = time.perf_counter() - t0
    return result


def load_model(path: str | Path) -> nn.Module:
    """A whole model saved with torch.save(model) (what `latprof prune`, `train` and `finetune` write).
    The file is unpickled whole, which runs code from it: load only files you trust."""
    path = Path(path)
    if not path.is_file():
        raise LatprofError(f"model file {path} does not exist")
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise LatprofError(f"cannot load {path} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(model, nn.Module):
        raise LatprofError(f"{path} holds a {type(model).__name__}, not a model; latprof needs the whole module "
                           "as `latprof prune` and `latprof train` save it (torch.save(model)), not a state_dict")
    return model


def _check_args(epochs, max_steps, batch_size, lr, lr_step, checkpoint, resume) -> None:
    if epochs is None and max_steps is None:
        raise LatprofError("give a number of epochs, or max_steps")
    for name, v in (("epochs", epochs), ("max_steps", max_steps)):
        if v is not None and v < 1:
            raise LatprofError(f"{name} must be at least 1, got {v}")
    if batch_size < 1 or lr_step < 1 or not lr > 0:
        raise LatprofError(f"batch size and lr step must be >= 1 and lr > 0 (got {batch_size}, {lr_step}, {lr})")
    if resume and checkpoint is None:
        raise LatprofError("resume needs the checkpoint to resume from: --checkpoint PATH")


def _epoch_order(dataset: Dataset, seed: int, epoch: int, size: int) -> list[int]:
    """This rank's sample order for an epoch: a function of (seed, epoch) only, so resumes repeat it."""
    if size > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(len(dataset), generator=g).tolist()


def _bar(total: int, initial: int, desc: str, show: bool):
    """Updated by hand (not wrapping the loader, which would close it before validation is shown)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not show, dynamic_ncols=True)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _save(path: Path, model, opt, sched, epoch: int, step: int, epoch_step: int, history, rank: int) -> None:
    """Write the checkpoint atomically (a temporary file renamed over it); rank 0 only."""
    if rank == 0:
        state = {"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "epoch": epoch, "step": step, "epoch_step": epoch_step,
                 "history": history, "rng": _rng_state()}
        with atomic_file(path) as f:
            torch.save(state, f)
    if _distributed():
        import torch.distributed as dist

        dist.barrier()


def _load(path: Path, model, opt, sched, dev: torch.device) -> dict:
    if not path.is_file():
        raise LatprofError(f"no checkpoint at {path} to resume from; run without --resume to start training")
    try:  # our own file (it holds RNG states, which need full unpickling)
        state = torch.load(path, map_location=dev, weights_only=False)
    except Exception as exc:
        raise LatprofError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise LatprofError(f"{path} is not a latprof training checkpoint ({CHECKPOINT_FORMAT})")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise LatprofError(f"checkpoint {path} was written for a different model: {exc}") from exc
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    rng = state["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    return state
