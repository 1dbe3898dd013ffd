"""The Triton conv2d launcher against torch.nn.functional.conv2d (the oracle).

Shapes are tiny (the interpreter is slow) but straddle tile edges: with 16x16x16 tiles,
C_out 63/64/65 end one short of, on, and one past a 16-column edge, and 7x9 outputs give
M = 63 rows, one short of a 16-row edge.
"""

import importlib

import pytest
import torch
import torch.nn.functional as F

from latprof.errors import LatprofError
from latprof.kernels import DEFAULT_TILE, TileConfig, conv2d, launch_grid

# The package re-exports the function `conv2d`, which shadows the submodule attribute.
conv2d_module = importlib.import_module("latprof.kernels.conv2d")

pytestmark = pytest.mark.interpret

SMALL = TileConfig(16, 16, 16, num_warps=1, num_stages=1, group_m=2)

# id: (batch, c_in, c_out, h, w, kernel, stride, padding, dilation, groups, bias)
CASES = {
    "cout63": (1, 4, 63, 7, 9, 3, 1, 1, 1, 1, True),
    "cout64": (1, 4, 64, 7, 9, 3, 1, 1, 1, 1, False),
    "cout65": (1, 4, 65, 7, 9, 3, 1, 1, 1, 1, True),
    "stride2": (2, 5, 17, 7, 9, 3, 2, 1, 1, 1, False),
    "dilation2": (1, 6, 20, 9, 7, 3, 1, 2, 2, 1, True),
    "valid_rect": (1, 3, 18, 7, 9, (1, 3), (2, 1), 0, 1, 1, True),
    "pointwise_k24": (2, 24, 33, 5, 3, 1, 1, 0, 1, 1, True),
    "groups2": (2, 8, 12, 7, 9, 3, 1, 1, 1, 2, True),
    "groups4": (1, 8, 20, 5, 7, 3, (2, 1), (1, 0), 1, 4, False),
    "multiplier2": (1, 6, 12, 5, 7, 3, 1, 1, 1, 6, True),  # groups == C_in < C_out: GEMM, K = 9
    "depthwise": (2, 20, 20, 7, 9, 3, 1, 1, 1, 20, True),
    "depthwise_s2_d2": (1, 17, 17, 9, 7, 3, 2, 2, 2, 17, False),
}

# (dtype, atol, rtol) as one tuple. fp32: the kernel and the oracle differ only in summation
# order. fp16/bf16: inputs are rounded to the dtype, the oracle runs in fp32 on those same
# rounded values, and the kernel rounds its fp32 accumulator to the dtype once at the end
# (relative error <= 2**-11 for fp16, 2**-8 for bf16), plus margin for summation order.
FP32 = (torch.float32, 1e-4, 1e-4)
LOW_PRECISION = [(torch.float16, 1e-2, 5e-3), (torch.bfloat16, 5e-2, 2e-2)]
LAYOUTS = ["nchw", "channels_last"]


def _inputs(case, dtype, layout, device):
    batch, c_in, c_out, h, w, k, stride, padding, dilation, groups, bias = case
    kh, kw = k if isinstance(k, tuple) else (k, k)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, c_in, h, w, generator=gen).to(dtype)
    weight = torch.randn(c_out, c_in // groups, kh, kw, generator=gen).to(dtype)
    b = torch.randn(c_out, generator=gen).to(dtype) if bias else None
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    x, weight = x.to(device), weight.to(device)
    b = b.to(device) if b is not None else None
    return x, weight, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def _check_against_torch(case, dtype_tol, layout, device, tile=SMALL):
    dtype, atol, rtol = dtype_tol
    x, weight, bias, args = _inputs(case, dtype, layout, device)
    out = conv2d(x, weight, bias, tile=tile, **args)
    expected = F.conv2d(x.float(), weight.float(), None if bias is None else bias.float(), **args)
    assert out.dtype == dtype
    assert out.shape == expected.shape
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)
    else:
        assert out.is_contiguous()
    torch.testing.assert_close(out.float(), expected, atol=atol, rtol=rtol)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_fp32_matches_torch(case, layout, device):
    _check_against_torch(case, FP32, layout, device)


# Under the interpreter bf16 goes through the launcher's documented fp32 widening before
# tl.dot (the interpreter's dot cannot multiply bf16; see conv2d._upcast_dot); loads,
# stores and the final rounding still run in bf16. fp16 runs natively in the interpreter.
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype_tol", LOW_PRECISION, ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", ["cout65", "groups2", "depthwise"])
def test_low_precision_matches_torch(name, dtype_tol, layout, device):
    _check_against_torch(CASES[name], dtype_tol, layout, device)


def test_default_tile_and_tile_text(device):
    """The default 64x64x32 tile (K = 16*9 = 144 -> 5 K-chunks, one ragged) and a text tile."""
    case = (1, 16, 65, 5, 6, 3, 1, 1, 1, 1, True)
    _check_against_torch(case, FP32, "nchw", device, tile=DEFAULT_TILE)
    _check_against_torch(case, FP32, "nchw", device, tile="32x16x64,w2,s2,g1")


def test_launcher_uses_launch_grid(monkeypatch, device):
    seen = []
    real = conv2d_module.launch_grid

    def spy(spec, tile):
        seen.append((spec, tile))
        return real(spec, tile)

    monkeypatch.setattr(conv2d_module, "launch_grid", spy)
    x, weight, bias, args = _inputs(CASES["groups2"], torch.float32, "nchw", device)
    conv2d(x, weight, bias, tile=SMALL, **args)
    (spec, tile), = seen
    assert (spec.batch, spec.c_in, spec.c_out, spec.h, spec.w, spec.groups) == (2, 8, 12, 7, 9, 2)
    assert spec.backend == "triton" and tile == SMALL
    # M = 2*7*9 = 126 -> cdiv(126, 16) = 8 row tiles; C_out/groups = 6 -> 1 column tile; 2 groups.
    assert launch_grid(spec, tile) == (8 * 1, 2)


def _bad(**overrides):
    x = torch.randn(1, 4, 5, 5)
    weight = torch.randn(8, 4, 3, 3)
    args = dict(x=x, weight=weight, bias=None, stride=1, padding=1, dilation=1, groups=1, tile=SMALL)
    args.update(overrides)
    return args


@pytest.mark.parametrize("overrides, message", [
    (dict(x=torch.randn(4, 5, 5)), "x must be a 4-D tensor"),
    (dict(weight=torch.randn(8, 4, 3)), "weight must be a 4-D tensor"),
    (dict(x=torch.randn(1, 4, 5, 5, dtype=torch.float64), weight=torch.randn(8, 4, 3, 3, dtype=torch.float64)),
     "the Triton kernels support float32, float16, bfloat16"),
    (dict(weight=torch.randn(8, 4, 3, 3, dtype=torch.float16)), "weight dtype torch.float16 differs"),
    (dict(bias=torch.randn(8, dtype=torch.bfloat16)), "bias dtype torch.bfloat16 differs"),
    (dict(weight=torch.randn(8, 4, 3, 3, device="meta")), "weight is on meta but x is on cpu"),
    (dict(groups=3, weight=torch.randn(9, 1, 3, 3)), "C_in=4 and C_out=9 must both be divisible by groups=3"),
    (dict(weight=torch.randn(8, 2, 3, 3)), "expects 2 input channels"),
    (dict(bias=torch.randn(7)), r"bias must have shape \(8,\)"),
    (dict(padding=0, weight=torch.randn(8, 4, 7, 7)), "output would be empty"),
    (dict(stride=0), "stride and dilation must be >= 1"),
    (dict(padding=(1, -1)), "padding >= 0"),
    (dict(stride=(1, 2, 3)), "stride must be an int or a pair"),
    (dict(groups=0), "groups must be a positive int"),
    (dict(x=torch.randn(0, 4, 5, 5)), "empty input"),
    (dict(tile="64x64"), "cannot parse tile"),
], ids=["x_3d", "weight_3d", "float64", "weight_dtype", "bias_dtype", "device", "groups", "weight_cin",
        "bias_shape", "empty_output", "stride0", "negative_padding", "stride_triple", "groups0",
        "empty_batch", "tile_text"])
def test_launcher_rejects_bad_input(overrides, message):
    args = _bad(**overrides)
    with pytest.raises(LatprofError, match=message):
        conv2d(args.pop("x"), args.pop("weight"), **args)


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.setattr(conv2d_module, "interpreted", lambda: False)
    args = _bad()
    with pytest.raises(LatprofError, match="TRITON_INTERPRET=1"):
        conv2d(args.pop("x"), args.pop("weight"), **args)
