"""Physically remove channels: keep each group's most important channels, prune the rest with
torch-pruning (which updates every coupled conv, BatchNorm and linear layer)."""

from __future__ import annotations

import torch
import torch.nn as nn

from latprof.errors import LatprofError
from latprof.prune.graph import Graph, Group


def group_scores(graph: Graph, group: Group, criterion: str, prev: dict | None = None) -> torch.Tensor:
    """Importance of each channel of a group: the criterion summed over the convs producing it
    (BN scale: over its BatchNorms). `prev` maps module names to a previous checkpoint's weights (ACS)."""
    from latprof.prune.importance import IMPORTANCE

    if criterion not in IMPORTANCE:
        raise LatprofError(f"unknown importance criterion {criterion!r}; choose one of {', '.join(IMPORTANCE)}")
    fn = IMPORTANCE[criterion]
    total = torch.zeros(group.channels)
    if criterion == "bn_scale":
        if not group.bns:
            raise LatprofError(f"--importance bn_scale: group of {group.root} has no BatchNorm; use l1")
        for name in group.bns:
            bn = graph.modules[name]
            total += fn(torch.zeros(group.channels, 1, 1, 1), bn=bn).detach().float()
        return total
    for name in group.out_convs:
        conv = graph.modules[name]
        kwargs = {}
        if criterion == "acs":
            if prev is None or name + ".weight" not in prev:
                raise LatprofError("--importance acs needs the earlier checkpoint: --weights-prev FILE")
            kwargs["weight_prev"] = prev[name + ".weight"]
        total += fn(conv.weight.detach(), **kwargs).float()
    return total


def keep_indices(scores: torch.Tensor, keep: int) -> list[int]:
    """The `keep` highest-scoring channels, in ascending channel order."""
    return sorted(torch.topk(scores, keep).indices.tolist())


def choose(graph: Graph, counts: list[int], criterion: str, prev: dict | None = None) -> dict[int, list[int]]:
    """Channels to remove per group index."""
    out = {}
    for g, k in zip(graph.groups, counts):
        if k < g.channels:
            if g.step > 1:
                keep = set(_grouped_keep(group_scores(graph, g, criterion, prev), g.step, k))
            elif criterion == "acs" and len(g.out_convs) == 1:   # LAP: ACS selection with regrowth
                keep = set(_acs_regrowth(graph, g, k, prev))
            else:
                keep = set(keep_indices(group_scores(graph, g, criterion, prev), k))
            out[g.index] = [i for i in range(g.channels) if i not in keep]
    return out


def _grouped_keep(scores: torch.Tensor, groups: int, keep: int) -> list[int]:
    """Channels to keep when a grouped conv (`groups` groups of equal width) reads or writes them:
    the same positions in every group (the group count stays; torch-pruning prunes a grouped
    conv's input that way), chosen by the score summed over the groups."""
    if keep % groups:
        raise LatprofError(f"internal: {keep} channels cannot be kept in {groups} equal groups")
    width = scores.numel() // groups
    positions = keep_indices(scores.view(groups, width).sum(0), keep // groups)
    return [g * width + j for g in range(groups) for j in positions]


def _acs_regrowth(graph: Graph, group: Group, keep: int, prev: dict | None) -> list[int]:
    from latprof.prune.importance import acs_regrowth

    name = group.out_convs[0]
    if prev is None or name + ".weight" not in prev:
        raise LatprofError("--importance acs needs the earlier checkpoint: --weights-prev FILE")
    return acs_regrowth(graph.modules[name].weight.detach(), prev[name + ".weight"], keep)


def prune(graph: Graph, removal: dict[int, list[int]]) -> nn.Module:
    """Remove the channels in place (the graph's model becomes the pruned model) and return it."""
    for g in graph.groups:
        idxs = removal.get(g.index)
        if not idxs:
            continue
        root = graph.modules[g.root]
        group = graph.dg.get_pruning_group(root, graph.out_handler(g.root), idxs=idxs)
        if not graph.dg.check_pruning_group(group):
            raise LatprofError(f"pruning {len(idxs)} channels of {g.root} would leave a layer empty")
        group.prune()
    return graph.model


def mask(graph: Graph, removal: dict[int, list[int]]) -> nn.Module:
    """The same removal done by zeroing (no shape change): producers' weights and biases, and the
    group's BatchNorm affine and running mean, so removed channels carry exact zeros."""
    with torch.no_grad():
        for g in graph.groups:
            idxs = removal.get(g.index)
            if not idxs:
                continue
            for name in g.out_convs:
                conv = graph.modules[name]
                conv.weight[idxs] = 0
                if conv.bias is not None:
                    conv.bias[idxs] = 0
            for name in g.bns:
                bn = graph.modules[name]
                bn.weight[idxs] = 0
                bn.bias[idxs] = 0
                bn.running_mean[idxs] = 0
    return graph.model


def channel_counts(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(inputs, outputs) of every conv (channels) and Linear (features) by name."""
    return {n: (m.in_features, m.out_features) if isinstance(m, nn.Linear) else (m.in_channels, m.out_channels)
            for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
