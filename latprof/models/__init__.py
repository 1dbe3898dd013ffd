"""Models latprof knows: the registry (`registry`), the CIFAR networks (`cifar`), and the
sweep lines a model's conv layers need (`lines`)."""

from latprof.models.registry import ALIASES, MODELS, ConvLayer, ModelEntry, conv_layers, load

__all__ = ["ALIASES", "MODELS", "ConvLayer", "ModelEntry", "conv_layers", "load"]
