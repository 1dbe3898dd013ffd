"""Accuracy in the loop: score a channel configuration by the validation accuracy of the trained
model pruned to it and trained briefly (ABCPruner's fitness; LACP's search stage).

One call costs a graph analysis, the surgery, `fitness_steps` SGD steps (or `fitness_epochs`
epochs) and one pass over the validation split. The searchers (search/common.Scorer) cache
calls, so each configuration is scored once; `calls` records what each cost.

Candidates are scored on the validation split carved from the training set, never on the test
split, which stays for the final report (ABCPruner's released code scores candidates on the
test set, selecting on the very numbers it then reports).

Short training uses a lower learning rate than training from scratch (0.01, no decay): the
pruned copy starts from trained weights and only has to recover from the surgery.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from latprof.prune import graph as graphs
from latprof.prune import surgery as surgery
from latprof.errors import LatprofError
from latprof.train.loop import eval_loader, evaluate, setup, train


@dataclass(frozen=True)
class Evaluation:
    choice: tuple[int, ...]     # option index per group
    channels: tuple[int, ...]   # channels kept per group
    accuracy: float             # on the validation split
    seconds: float              # surgery + training + evaluation


class AccuracyFitness:
    """fitness(choice) -> validation accuracy in [0, 1]; see `accuracy_fitness`."""

    def __init__(self, model: nn.Module, graph_factory: Callable[[nn.Module], graphs.Graph] | None,
                 options: Sequence[Sequence[int]], splits, *, fitness_epochs: int | None = None,
                 fitness_steps: int | None = 100, seed: int = 0, importance: str = "l1", prev: dict | None = None,
                 lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 1e-4, batch_size: int = 128,
                 device: str | torch.device | None = None):
        if fitness_epochs is None and fitness_steps is None:
            raise LatprofError("accuracy fitness needs fitness_steps or fitness_epochs")
        for name, v in (("fitness_epochs", fitness_epochs), ("fitness_steps", fitness_steps)):
            if v is not None and v < 1:
                raise LatprofError(f"{name} must be at least 1, got {v}")
        if len(splits.val) == 0:
            raise LatprofError("accuracy fitness scores on the validation split, which is empty; "
                               "use a val_fraction above 0")
        # a private CPU snapshot: the caller's model is never touched, and later changes to it do not move scores
        self.original = copy.deepcopy(model).cpu().eval()
        self.graph_factory = graph_factory or (lambda m: graphs.analyse(m, splits.input_size))
        self.options = tuple(tuple(int(c) for c in opts) for opts in options)
        self.splits = splits
        self.importance, self.prev, self.seed = importance, prev, seed
        self.train_kw = dict(epochs=fitness_epochs, max_steps=None if fitness_epochs else fitness_steps,
                             lr=lr, momentum=momentum, weight_decay=weight_decay, batch_size=batch_size,
                             lr_step=10**9, progress=False, validate=False, seed=seed)
        self.device = setup(device)
        self.val = eval_loader(splits.val, max(256, batch_size))
        self.calls: list[Evaluation] = []

    def channels(self, choice: Sequence[int]) -> tuple[int, ...]:
        if len(choice) != len(self.options):
            raise LatprofError(f"a choice needs one option index per group ({len(self.options)}), got {len(choice)}")
        return tuple(self.options[g][int(i)] for g, i in enumerate(choice))

    def pruned(self, choice: Sequence[int]) -> nn.Module:
        """A pruned copy of the model (untrained since the surgery) for `choice`."""
        counts = self.channels(choice)
        net = copy.deepcopy(self.original)
        g = self.graph_factory(net)
        if len(g.groups) != len(counts):
            raise LatprofError(f"the graph has {len(g.groups)} prunable groups but the options give "
                               f"{len(counts)}; build both with the same graph settings (keep_residual)")
        return surgery.prune(g, surgery.choose(g, list(counts), self.importance, self.prev))

    def __call__(self, choice: Sequence[int]) -> float:
        t0 = time.perf_counter()
        with _own_rng(self.device):  # data loaders draw seeds from the global RNG, even when evaluating
            net = self.pruned(choice)
            train(net, self.splits, device=self.device, **self.train_kw)
            acc = evaluate(net, self.val, self.device)
        self.calls.append(Evaluation(tuple(int(i) for i in choice), self.channels(choice), acc,
                                     time.perf_counter() - t0))
        return acc


def accuracy_fitness(model: nn.Module, graph_factory: Callable[[nn.Module], graphs.Graph] | None,
                     options: Sequence[Sequence[int]], splits, *, fitness_epochs: int | None = None,
                     fitness_steps: int | None = 100, seed: int = 0, importance: str = "l1",
                     **kw) -> AccuracyFitness:
    """A fitness for the evo/abc searchers: for a choice (one option index per group, as in
    `latprof.search.Problem`), prune a copy of the trained `model` to `options[g][choice[g]]`
    channels per group (`importance` picks which channels stay), train it for `fitness_steps`
    SGD steps (or `fitness_epochs` epochs, which win when both are given), and return its
    accuracy on `splits.val`.

    `graph_factory(model) -> Graph` must give the groups in the order `options` lists them, e.g.
    ``lambda m: latprof.prune.graph.analyse(m, size, keep_residual=...)`` (None: analyse at the data's
    input size). Deterministic for a seed on the CPU; the global RNGs are left as they were.
    Further keywords (lr, batch_size, device, prev, ...) go to `AccuracyFitness`.
    """
    return AccuracyFitness(model, graph_factory, options, splits, fitness_epochs=fitness_epochs,
                           fitness_steps=fitness_steps, seed=seed, importance=importance, **kw)


@contextmanager
def _own_rng(device: torch.device):
    """Training seeds the global RNGs and loaders draw from them; give them back to the caller afterwards."""
    py, npy = random.getstate(), np.random.get_state()
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
