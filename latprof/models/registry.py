"""Models latprof knows by name, a user's own model from `file.py:factory`, and their conv layers.

All models are built with random weights (`weights=None`): latency does not depend on
weight values, and nothing is downloaded at run time. Every classification model torchvision
lists (`torchvision.models.list_models`) is known by its torchvision name; the list is read
when first asked for (importing torchvision costs about 1.5 s), and no model is built until
`load` asks for it.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import math
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from latprof.errors import LatprofError
from latprof.spec import ConvSpec


@dataclass(frozen=True)
class ModelEntry:
    factory: Callable[[], nn.Module]
    input_size: tuple[int, int, int]   # (C, H, W) of one image
    note: str


def _tv(name: str, **kw) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision.models as tvm

        return getattr(tvm, name)(weights=None, **kw)
    return build


def _cifar(name: str, classes: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from latprof.models import cifar as cifar

        return getattr(cifar, name)(num_classes=classes)
    return build


#: torchvision builders that need more than `weights=None`: Inception-v3 and GoogLeNet carry
#: auxiliary classifiers (unused in eval, and a second output in training) and warn unless
#: init_weights is given; Inception-v3 needs at least 75x75 inputs and is sized for 299x299.
TV_KWARGS = {"inception_v3": dict(aux_logits=False, init_weights=False),
             "googlenet": dict(aux_logits=False, init_weights=False)}
TV_SIZES = {"inception_v3": (3, 299, 299)}

_FIXED: dict[str, ModelEntry] = {
    "vgg16": ModelEntry(_tv("vgg16"), (3, 224, 224), "torchvision VGG-16, ImageNet"),
    "vgg16_bn": ModelEntry(_tv("vgg16_bn"), (3, 224, 224), "torchvision VGG-16 with BatchNorm"),
    "resnet18": ModelEntry(_tv("resnet18"), (3, 224, 224), "torchvision ResNet-18"),
    "resnet34": ModelEntry(_tv("resnet34"), (3, 224, 224), "torchvision ResNet-34"),
    "resnet50": ModelEntry(_tv("resnet50"), (3, 224, 224), "torchvision ResNet-50"),
    "mobilenet_v2": ModelEntry(_tv("mobilenet_v2"), (3, 224, 224), "torchvision MobileNetV2"),
    "vgg16_cifar10": ModelEntry(_cifar("vgg16", 10), (3, 32, 32), "CIFAR VGG-16 (BN), 10 classes"),
    "vgg16_cifar100": ModelEntry(_cifar("vgg16", 100), (3, 32, 32), "CIFAR VGG-16 (BN), 100 classes"),
    "resnet56_cifar10": ModelEntry(_cifar("resnet56", 10), (3, 32, 32), "CIFAR ResNet-56, 10 classes"),
    "resnet56_cifar100": ModelEntry(_cifar("resnet56", 100), (3, 32, 32), "CIFAR ResNet-56, 100 classes"),
    "resnet20_cifar10": ModelEntry(_cifar("resnet20", 10), (3, 32, 32), "CIFAR ResNet-20 (small; demos)"),
    "small_cifar10": ModelEntry(_cifar("small_cifar", 10), (3, 32, 32), "4-conv VGG-like net, BN (tests, digits)"),
}
ALIASES = {"vgg16_cifar": "vgg16_cifar10", "resnet56_cifar": "resnet56_cifar10", "resnet56": "resnet56_cifar10"}


def torchvision_names() -> list[str]:
    """Every classification model torchvision lists, by its torchvision name."""
    import torchvision.models as tvm

    return tvm.list_models(module=tvm)


class _Registry(Mapping):
    """name -> ModelEntry: latprof's own entries, then every torchvision classifier. A lookup of
    one of latprof's own names does not import torchvision; listing all names does."""

    def __init__(self, fixed: dict[str, ModelEntry]):
        self._fixed = fixed
        self._all: dict[str, ModelEntry] | None = None

    def _entries(self) -> dict[str, ModelEntry]:
        if self._all is None:
            tv = {n: ModelEntry(_tv(n, **TV_KWARGS.get(n, {})), TV_SIZES.get(n, (3, 224, 224)),
                                f"torchvision {n}") for n in torchvision_names() if n not in self._fixed}
            self._all = {**self._fixed, **tv}
        return self._all

    def __getitem__(self, name: str) -> ModelEntry:
        if name in self._fixed:
            return self._fixed[name]
        return self._entries()[name]

    def __contains__(self, name) -> bool:
        return name in self._fixed or name in self._entries()

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries())

    def __len__(self) -> int:
        return len(self._entries())


MODELS: Mapping[str, ModelEntry] = _Registry(_FIXED)


def load(name: str, input_size: tuple[int, int, int] | None = None) -> tuple[nn.Module, tuple[int, int, int]]:
    """A model in eval mode and its per-image input size, by registry name or `file.py:factory`."""
    if ":" in name and name.split(":", 1)[0].endswith(".py"):
        model = _from_file(name)
        size = input_size or getattr(model, "latprof_input_size", None) or (3, 224, 224)
        return model.eval(), tuple(size)
    key = ALIASES.get(name, name)
    if key not in MODELS:
        close = difflib.get_close_matches(name, list(MODELS) + list(ALIASES), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise LatprofError(f"unknown model {name!r}{hint}; `latprof models` lists the {len(MODELS)} known "
                           "models (every torchvision classifier among them); or give your own as "
                           "path/to/file.py:factory")
    entry = MODELS[key]
    return entry.factory().eval(), tuple(input_size or entry.input_size)


def _from_file(ref: str) -> nn.Module:
    path_text, factory_name = ref.rsplit(":", 1)
    path = Path(path_text)
    if not path.is_file():
        raise LatprofError(f"model file {path} does not exist (from {ref!r})")
    spec = importlib.util.spec_from_file_location(f"latprof_user_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    # registered, so that its models pickle (prune saves them) and unpickle in a process that
    # loads the same file first (prune's fresh timing processes do)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code failed: report it as such, with its message
        raise LatprofError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise LatprofError(f"{path} has no callable {factory_name!r}")
    try:
        model = factory()
    except Exception as exc:  # the user's factory failed: one line naming it and its error, as for imports
        raise LatprofError(f"{ref}: calling {factory_name}() failed: {type(exc).__name__}: "
                           f"{' '.join(str(exc).split())[:300]}; "
                           f"fix the factory in {path}") from exc
    if not isinstance(model, nn.Module):
        raise LatprofError(f"{ref} returned {type(model).__name__}, not a torch.nn.Module")
    return model


@dataclass(frozen=True)
class ConvLayer:
    """A conv (or Linear) layer of a model and its shape at batch 1 (`spec.batch` is 1; set it
    per sweep). `unit`: input features per input channel of a Linear that reads a flattened
    feature map (VGG's first classifier layer reads 512 channels x 7 x 7 positions: 49), else 1.
    `output`: the model's classifier (the last Linear, or without one the last conv), whose
    outputs are never pruned."""

    name: str
    spec: ConvSpec
    unit: int = 1
    output: bool = False


def conv_layers(model: nn.Module, input_size: tuple[int, int, int]) -> list[ConvLayer]:
    """Every `nn.Conv2d` and `nn.Linear` in forward order, with the input it sees (one forward
    at batch 1). A Linear is priced as a GEMM (`op` "linear") over its tokens: the dimensions of
    its input between the batch and the features (none for a classifier: 1 x 1)."""
    seen: dict[str, tuple[int, ...]] = {}
    names = {m: n for n, m in model.named_modules()}
    maps: list[tuple[int, ...]] = []   # per-image shapes of >= 3-D module outputs, in forward order
    units: dict[str, int] = {}

    def record(module, args) -> None:  # a pre-hook must return None, or it replaces the input
        name = names[module]
        shape = tuple(args[0].shape)
        seen.setdefault(name, shape[-2:] if isinstance(module, nn.Conv2d) else shape[1:-1])
        if isinstance(module, nn.Linear) and len(shape) == 2 and maps:
            units.setdefault(name, _flattened_unit(maps[-1], shape[1]))

    def output(module, args, out) -> None:
        if isinstance(out, torch.Tensor) and out.dim() >= 4:
            maps.append(tuple(out.shape[1:]))

    layers_ = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    hooks = [m.register_forward_pre_hook(record) for m in layers_]
    hooks += [m.register_forward_hook(output) for m in model.modules() if not list(m.children())]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, *input_size))
    except Exception as exc:  # a shape the model cannot take: say which
        raise LatprofError(f"the model failed on an input of size {input_size}: {exc}; "
                           "pass the right size with --input-size C,H,W") from exc
    finally:
        for h in hooks:
            h.remove()
    layers = []
    for name, m in model.named_modules():
        if name not in seen:
            continue
        if isinstance(m, nn.Linear):
            tokens = (1, 1) + seen[name]   # (), (n,), (h, w), ...: the last two, the rest folded into h
            h, w = math.prod(tokens[:-1]), tokens[-1]
            spec = ConvSpec(c_in=m.in_features, c_out=m.out_features, h=h, w=w, kernel_h=1, kernel_w=1,
                            pad_h=0, pad_w=0, op="linear")
            layers.append(ConvLayer(name, spec, units.get(name, 1)))
            continue
        if not isinstance(m, nn.Conv2d):
            continue
        if isinstance(m.padding, str):
            raise LatprofError(f"layer {name} uses padding={m.padding!r}; only explicit padding is supported")
        h, w = seen[name]
        spec = ConvSpec(c_in=m.in_channels, c_out=m.out_channels, h=h, w=w,
                        kernel_h=m.kernel_size[0], kernel_w=m.kernel_size[1],
                        stride_h=m.stride[0], stride_w=m.stride[1], pad_h=m.padding[0], pad_w=m.padding[1],
                        dilation_h=m.dilation[0], dilation_w=m.dilation[1], groups=m.groups)
        layers.append(ConvLayer(name, spec))
    layers.sort(key=lambda layer: list(seen).index(layer.name))
    if not any(layer.spec.op == "conv2d" for layer in layers):
        raise LatprofError("the model has no Conv2d layers to profile")
    last = max((i for i, layer in enumerate(layers) if layer.spec.op == "linear"), default=len(layers) - 1)
    layers[last] = dataclasses.replace(layers[last], output=True)
    return layers


def _flattened_unit(feature_map: tuple[int, ...], features: int) -> int:
    """Features per channel when a Linear's `features` are the last feature map (C, H, W, ...)
    flattened: H x W x ...; 1 when they are not (pooled away, or another tensor)."""
    return math.prod(feature_map[1:]) if math.prod(feature_map) == features else 1
