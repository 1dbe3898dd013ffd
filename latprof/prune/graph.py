"""Which channels can be pruned together: torch-pruning's DependencyGraph, reduced to the
facts latprof needs (which layers produce and which consume each coupled channel group).

A *group* is a set of channels that must be pruned together: the output channels of one or
more convs (several when a residual add or a concatenation couples them), the BatchNorms
after them, and the input channels of every conv that reads them. Linear layers take part
like convs (a ConvNeXt block's hidden layer, VGG's classifier layers: their outputs are groups,
and they read groups). Depthwise convs inside a group move with it (their c_in = c_out =
groups). The classifier's outputs are never pruned. A grouped conv keeps its group count: the
channels it reads or writes move in multiples of it (`Group.step`). Channels that reach or leave
a channel shuffle are kept whole (`Graph.frozen`, see `latprof.prune.shuffle`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch_pruning as tp

from latprof.errors import LatprofError
from latprof.prune import shuffle as shuffles

#: The layers whose channels latprof prices and prunes (their outputs root groups).
LAYERS = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class Group:
    index: int
    root: str                   # the first conv or Linear (forward order) whose outputs are the group
    channels: int               # original channel count
    out_convs: tuple[str, ...]  # convs whose output channels are the group (incl. depthwise)
    in_convs: tuple[str, ...]   # convs whose input channels are the group (incl. depthwise)
    bns: tuple[str, ...]        # BatchNorms on the group's channels
    step: int = 1               # kept counts are multiples of this: the group count of a grouped
                                # conv reading or writing these channels (its groups stay; each
                                # group loses the same channels)
    gates: tuple[str, ...] = () # producers with a 1x1 output that scale the others (an SE block's
                                # excitation conv): coupled, but not a second path of features

    @property
    def residual(self) -> bool:
        """Coupled by an add or concat: several non-depthwise convs produce these channels (an SE
        gate multiplying them does not count: pruning it with its block is what SE papers do)."""
        producers = set(self.out_convs) - set(self.in_convs) - set(self.gates)
        return len(producers) > 1


@dataclass
class Graph:
    model: nn.Module
    input_size: tuple[int, int, int]
    dg: tp.DependencyGraph
    groups: list[Group]               # prunable groups, forward order of their roots
    kept: list[Group]                 # groups left whole (residual, when keep_residual)
    modules: dict[str, nn.Module]
    order: list[str]                  # conv and Linear names in forward order
    frozen: list[Group] = field(default_factory=list)   # groups that reach or leave a channel shuffle: whole

    def conv(self, name: str) -> nn.Conv2d | nn.Linear:
        return self.modules[name]

    def out_handler(self, name: str):
        """torch-pruning's function that prunes the outputs of the layer `name` (what a group rooted
        there is pruned with)."""
        linear = isinstance(self.modules[name], nn.Linear)
        return tp.prune_linear_out_channels if linear else tp.prune_conv_out_channels


def classifier(model: nn.Module) -> list[nn.Module]:
    """The layer whose outputs are the model's outputs, never pruned: the last Linear, or, in a
    model without one, the last conv (a conv classifier, as in SqueezeNet)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1:] or [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1:]


def analyse(model: nn.Module, input_size: tuple[int, int, int], *, keep_residual: bool | None = None) -> Graph:
    """Prunable groups of `model`. keep_residual=None keeps residual groups whole when any exist
    (the seed papers' choice for ResNets); False prunes them too (every coupled conv together)."""
    model.eval()
    names = {m: n for n, m in model.named_modules()}
    order: list[str] = []
    spatial: dict[str, tuple[int, ...]] = {}
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    layers = [m for m in model.modules() if isinstance(m, LAYERS)]
    hooks = [m.register_forward_pre_hook(lambda mod, args: order.append(names[mod]) and None) for m in layers]
    hooks += [m.register_forward_hook(lambda mod, args, out: spatial.setdefault(names[mod], tuple(out.shape[-2:]))
                                      and None) for m in convs]
    example = torch.zeros(1, *input_size)
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    with shuffles.cut(model, example) as (traced, perms):
        dg = _dependency_graph(traced, example)
    raw, frozen = [], set()
    for g in dg.get_all_groups(ignored_layers=classifier(model), root_module_types=list(LAYERS)):
        outs, ins, bns = [], [], []
        shuffled = False
        for dep, idxs in g:
            mod = dep.target.module
            handler = getattr(dep.handler, "__name__", "")
            if any(mod is p for p in perms):
                shuffled = True
            elif isinstance(mod, LAYERS):
                depthwise = isinstance(mod, nn.Conv2d) and mod.groups == mod.in_channels == mod.out_channels > 1
                if "out_channels" in handler or depthwise:
                    outs.append(names[mod])
                if "in_channels" in handler or depthwise:
                    ins.append(names[mod])
            elif isinstance(mod, nn.BatchNorm2d):
                bns.append(names[mod])
        outs = sorted(set(outs), key=order.index)
        if not outs:
            continue
        if shuffled:
            frozen.add(outs[0])
        root = outs[0]
        convs = [dep.target.module for dep, _ in g if isinstance(dep.target.module, nn.Conv2d)]
        grouped = [c.groups for c in convs if 1 < c.groups and not c.groups == c.in_channels == c.out_channels]
        gates = tuple(c for c in outs if spatial.get(c) == (1, 1) and any(spatial.get(o) != (1, 1) for o in outs))
        raw.append((root, len(g[0][1]), tuple(outs), tuple(sorted(set(ins), key=order.index)),
                    tuple(dict.fromkeys(bns)), math.lcm(1, *grouped), gates))
    raw.sort(key=lambda r: order.index(r[0]))
    all_groups = [Group(i, *r) for i, r in enumerate(raw)]
    shuffled = [g for g in all_groups if g.root in frozen]
    all_groups = [g for g in all_groups if g.root not in frozen]
    has_residual = any(g.residual for g in all_groups)
    keep = has_residual if keep_residual is None else keep_residual
    prunable = [g for g in all_groups if not (keep and g.residual)]
    kept = [g for g in all_groups if keep and g.residual]
    prunable = [Group(i, g.root, g.channels, g.out_convs, g.in_convs, g.bns, g.step, g.gates)
                for i, g in enumerate(prunable)]
    return Graph(model, tuple(input_size), dg, prunable, kept, dict(model.named_modules()), order, shuffled)


@contextlib.contextmanager
def pruner_view(model: nn.Module, size: tuple[int, int, int]):
    """For torch-pruning's own pruners (the baselines): inside the block a pruner can trace the
    module it yields (`model`, or with channel shuffles `model` next to its permutation convs,
    `shuffle.cut`; pruning it prunes `model`). Yields (that module, the layers the pruner must
    leave alone): the classifier, and for a model with shuffles the producers of the channels kept
    whole (`Graph.frozen`) and the permutation convs."""
    ignore = classifier(model)
    frozen = analyse(model, size, keep_residual=False).frozen if shuffles.count(model, size) else []
    names = dict(model.named_modules())
    ignore += [names[c] for g in frozen for c in g.out_convs]
    with shuffles.cut(model, torch.zeros(1, *size)) as (traced, perms):
        yield traced, ignore + perms


def _dependency_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    """torch-pruning's graph of what is coupled: it follows SE blocks, concatenations, splits,
    grouped and depthwise convs and elementwise layers of any kind, so latprof keeps no list of
    layers it allows. What the graph cannot follow is refused, with the reason."""
    try:
        return tp.DependencyGraph().build_dependency(model, example_inputs=example)
    except ZeroDivisionError as exc:
        raise LatprofError(f"{type(model).__name__} reshapes its channel dimension in a way torch-pruning's "
                           "dependency graph cannot follow (a view of the channels that is neither a flatten "
                           "nor a channel shuffle); latprof cannot prune it") from exc
    except (RuntimeError, ValueError, KeyError, IndexError) as exc:
        raise LatprofError(f"torch-pruning cannot trace which channels of {type(model).__name__} are coupled "
                           f"({type(exc).__name__}: {exc}); latprof cannot prune it") from exc
