"""Channel shuffles, made visible to torch-pruning's dependency graph.

A channel shuffle (ShuffleNet's `view(b, g, c/g, h, w)`, `transpose(1, 2)`, `view(b, c, h, w)`,
or `F.channel_shuffle`) permutes the channels; torch-pruning's graph reads the two views as a
flatten and fails (or would map the channels wrongly). While the graph is traced, `cut` routes
every shuffle through a 1x1 conv that holds its permutation: the same output, and a layer the
graph understands as the end of one channel group and the start of another. The channels that
reach a shuffle, and those that leave it, are then kept whole (`Graph.frozen`): pruning them
would change the shuffle's meaning. Everything else in the model (ShuffleNet's branch-internal
channels, about half its MACs) prunes as usual.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

_RESHAPES = {"view", "reshape", "flatten"}
_CARRY = {"transpose", "permute", "contiguous", "swapaxes"}


def permutation_conv(channels: int, groups: int, like: torch.Tensor) -> nn.Conv2d:
    """A bias-free 1x1 conv computing the shuffle of `channels` in `groups`: output channel j is
    input channel (j % groups) * (channels // groups) + j // groups."""
    conv = nn.Conv2d(channels, channels, 1, bias=False).to(dtype=like.dtype, device=like.device)
    with torch.no_grad():
        conv.weight.zero_()
        per = channels // groups
        for j in range(channels):
            conv.weight[j, (j % groups) * per + j // groups] = 1
    return conv


class _Shuffles(TorchFunctionMode):
    """Finds channel shuffles in a forward pass; with `convs`, replaces the k-th by convs[k]."""

    def __init__(self, convs: list[nn.Conv2d] | None = None):
        super().__init__()
        self.convs = convs
        self.found: list[tuple[int, int, torch.Tensor]] = []   # (channels, groups, an input) per shuffle
        # id(5-D view) -> (it, its 4-D source, groups, whether its two channel axes were swapped)
        self._split: dict[int, tuple[torch.Tensor, torch.Tensor, int, bool]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        src = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if src is None or not isinstance(out, torch.Tensor):
            return out
        if name == "channel_shuffle":
            groups = args[1] if len(args) > 1 else kwargs["groups"]
            return self._shuffle(src, int(groups), out)
        if name in _RESHAPES and src.dim() == 4 and out.dim() == 5 and out.shape[0] == src.shape[0] \
                and out.shape[1] * out.shape[2] == src.shape[1] and out.shape[3:] == src.shape[2:] \
                and 1 < out.shape[1] < src.shape[1]:
            self._split[id(out)] = (out, src, out.shape[1], False)   # the tensor is kept: its id stays its own
        elif name in _CARRY and id(src) in self._split and out.dim() == 5:
            _, origin, groups, swapped = self._split[id(src)]
            self._split[id(out)] = (out, origin, groups, swapped != (name != "contiguous"))
        elif name in _RESHAPES and id(src) in self._split and out.dim() == 4:
            _, origin, groups, swapped = self._split[id(src)]
            if out.shape == origin.shape and swapped:   # the channel axes swapped: channels interleaved
                return self._shuffle(origin, groups, out)
        return out

    def _shuffle(self, x: torch.Tensor, groups: int, out: torch.Tensor) -> torch.Tensor:
        k = len(self.found)
        self.found.append((x.shape[1], groups, x))
        if self.convs is None:
            return out
        return self.convs[k % len(self.convs)](x)   # the k-th of a forward pass (the tracer may run several)


class _Traced(nn.Module):
    """The model next to its permutation convs, for the tracer: the convs are modules of the
    traced whole (the tracer maps every call to a module it holds) without being attached to the
    user's model (a Sequential would run them)."""

    def __init__(self, model: nn.Module, convs: list[nn.Conv2d]):
        super().__init__()
        self.model, self.shuffles = model, nn.ModuleList(convs)

    def forward(self, x):
        return self.model(x)


@contextlib.contextmanager
def cut(model: nn.Module, example: torch.Tensor):
    """Within the block, each channel shuffle in `model`'s forward runs through its permutation
    conv: trace (torch-pruning's graph) the module it yields. Yields (module to trace, the convs):
    for a model without shuffles, the model itself and no convs."""
    with torch.no_grad(), _Shuffles() as finder:
        model(example)
    if not finder.found:
        yield model, []
        return
    convs = [permutation_conv(c, g, x) for c, g, x in finder.found]
    with _Shuffles(convs):
        yield _Traced(model, convs), convs


def count(model: nn.Module, size: tuple[int, int, int]) -> int:
    """How many channel shuffles one forward pass of `model` runs."""
    with torch.no_grad(), _Shuffles() as finder:
        model(torch.zeros(1, *size))
    return len(finder.found)
