"""Backends turn a `ConvSpec` into a zero-argument callable that runs the convolution once.

`cpu` and `cudnn` call `torch.nn.functional.conv2d` (oneDNN / cuDNN choose the algorithm);
`triton` calls our own kernel in `latprof.kernels` with the tile config in `spec.tile`.
Inputs are allocated once per shape; calls run under `torch.inference_mode()`.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from latprof.measure.device import Device
from latprof.errors import LatprofError
from latprof.spec import ConvSpec

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def check(backend: str, device: Device, dtypes=()) -> None:
    """Refuse combinations that cannot run, before any work is done. `dtypes`: those the sweep
    measures (bfloat16 needs sm_80 on CUDA)."""
    cc = str(device.identity.get("compute_capability") or "")
    if device.kind == "cuda" and "bfloat16" in dtypes and cc.split(".")[0].isdigit() and int(cc.split(".")[0]) < 8:
        raise LatprofError(f"{device.name} (sm_{cc.replace('.', '')}) has no bfloat16 convolutions (cuDNN and "
                           "Triton need sm_80 or newer); measure float16 or float32 (--dtype float16)")
    if backend == "cpu" and device.kind != "cpu":
        raise LatprofError("--backend cpu profiles the CPU; use --device cpu (or --backend cudnn on a GPU)")
    if backend in ("cudnn", "triton") and device.kind != "cuda":
        raise LatprofError(f"--backend {backend} needs a CUDA device and this sweep targets the CPU. "
                           "Use --backend cpu, or run on a machine with an NVIDIA GPU (--gpu NAME).")
    if backend == "triton":
        try:
            import triton  # noqa: F401
        except ImportError:
            raise LatprofError("--backend triton needs the `triton` package: pip install 'latprof[triton]'") from None
        from latprof.kernels import interpreted

        if interpreted():  # a leftover TRITON_INTERPRET=1 would time Triton's CPU interpreter
            raise LatprofError("the Triton kernels were loaded under TRITON_INTERPRET=1, so they would run in "
                               "Triton's interpreter, not on the GPU; unset it (or set TRITON_INTERPRET=0) "
                               "and run the sweep again")


def default_backend(device: Device) -> str:
    return "cpu" if device.kind == "cpu" else "cudnn"


def tensors(spec: ConvSpec, device: Device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random input and weight of the spec's shape, dtype and memory layout."""
    gen = torch.Generator().manual_seed(seed)
    dtype = DTYPES[spec.dtype]
    x = torch.randn(spec.batch, spec.c_in, spec.h, spec.w, generator=gen).to(device.torch_device, dtype)
    w = torch.randn(spec.c_out, spec.c_in // spec.groups, spec.kernel_h, spec.kernel_w, generator=gen)
    w = w.to(device.torch_device, dtype)
    if spec.layout == "nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
        w = w.contiguous(memory_format=torch.channels_last)
    return x, w


def _linear_runner(spec: ConvSpec, device: Device) -> Callable[[], torch.Tensor]:
    """A Linear layer's GEMM: (batch, h, w, c_in) tokens times a (c_out, c_in) weight, as
    `nn.Linear` runs it (ConvNeXt's pointwise layers see channels-last tokens; a classifier 1 x 1).
    Every backend runs it with torch (cuBLAS on CUDA: the Triton kernels are convolutions only)."""
    gen = torch.Generator().manual_seed(0)
    dtype = DTYPES[spec.dtype]
    x = torch.randn(spec.batch, spec.h, spec.w, spec.c_in, generator=gen).to(device.torch_device, dtype)
    w = torch.randn(spec.c_out, spec.c_in, generator=gen).to(device.torch_device, dtype)

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return F.linear(x, w)
    return run


def make_runner(spec: ConvSpec, device: Device) -> Callable[[], torch.Tensor]:
    if spec.op == "linear":
        return _linear_runner(spec, device)
    x, w = tensors(spec, device)
    stride, padding = (spec.stride_h, spec.stride_w), (spec.pad_h, spec.pad_w)
    dilation = (spec.dilation_h, spec.dilation_w)
    if spec.backend in ("cpu", "cudnn"):
        def run() -> torch.Tensor:
            with torch.inference_mode():
                return F.conv2d(x, w, None, stride, padding, dilation, spec.groups)
        return run
    if spec.backend == "triton":
        from latprof.kernels import DEFAULT_TILE, Conv2dLaunch, TileConfig

        # validated and allocated once: a call only launches (the checks stay out of the samples)
        tile = TileConfig.parse(spec.tile) if spec.tile else DEFAULT_TILE
        return Conv2dLaunch(x, w, None, stride, padding, dilation, spec.groups, tile)
    raise LatprofError(f"unknown backend {spec.backend!r}")


def nbytes(spec: ConvSpec) -> int:
    """Memory a runner holds: input, weight and one output, in bytes."""
    elem = 2 if spec.dtype in ("float16", "bfloat16") else 4
    n = spec.batch * (spec.c_in * spec.h * spec.w + spec.c_out * spec.h_out * spec.w_out)
    return elem * (n + spec.c_out * (spec.c_in // spec.groups) * spec.kernel_h * spec.kernel_w)


#: The fixed reference workload timed between samples (per device kind): a mid-sized conv
#: that takes about a millisecond on a 2-core CPU and is never one of the swept shapes' neighbours.
REFERENCE_SPEC = {
    "cpu": ConvSpec(c_in=64, c_out=64, h=28, w=28, batch=1, backend="cpu"),
    "cuda": ConvSpec(c_in=256, c_out=256, h=28, w=28, batch=16, backend="cudnn"),
}


def reference_runner(device: Device, dtype: str) -> tuple[str, Callable[[], torch.Tensor]]:
    spec = REFERENCE_SPEC[device.kind].replace(dtype=dtype if device.kind == "cuda" else "float32")
    return spec.label(), make_runner(spec, device)
