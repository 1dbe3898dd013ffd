"""Compiled kernels on a CUDA device: correctness at realistic sizes and a finite latency.

Run with `TRITON_INTERPRET=0 pytest -m gpu tests/kernels` on a GPU machine: the conftest
turns the interpreter on by default, and interpreted kernels say nothing about GPU speed.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from latprof.kernels import DEFAULT_TILE, TILE_CONFIGS, conv2d, interpreted

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: torch.cuda.is_available() is False"),
    pytest.mark.skipif(interpreted(), reason="latprof.kernels runs under TRITON_INTERPRET=1; "
                                             "rerun with TRITON_INTERPRET=0 to compile for the GPU"),
]

# (dtype, atol, rtol): fp32 runs as IEEE fp32 (the conftest turns TF32 off); K here is up
# to 64*9 = 576 products, so half precisions get room for the one rounding of the output.
DTYPES = [(torch.float32, 1e-3, 1e-3), (torch.float16, 2e-2, 1e-2), (torch.bfloat16, 1e-1, 2e-2)]

# (batch, c_in, c_out, h, w, groups, layout)
SHAPES = [
    (8, 64, 65, 28, 28, 1, "nchw"),
    (8, 64, 127, 14, 15, 1, "channels_last"),
    (4, 64, 96, 28, 28, 4, "channels_last"),
    (8, 96, 96, 28, 28, 96, "nchw"),  # depthwise kernel
]


def _inputs(shape, dtype):
    batch, c_in, c_out, h, w, groups, layout = shape
    x = torch.randn(batch, c_in, h, w, device="cuda", dtype=dtype)
    weight = torch.randn(c_out, c_in // groups, 3, 3, device="cuda", dtype=dtype)
    bias = torch.randn(c_out, device="cuda", dtype=dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    return x, weight, bias, groups


@pytest.mark.parametrize("dtype_tol", DTYPES, ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[1]}to{s[2]}_g{s[5]}_{s[6]}")
def test_cuda_matches_torch(shape, dtype_tol):
    dtype, atol, rtol = dtype_tol
    x, weight, bias, groups = _inputs(shape, dtype)
    out = conv2d(x, weight, bias, padding=1, groups=groups, tile=DEFAULT_TILE)
    expected = F.conv2d(x.float(), weight.float(), bias.float(), padding=1, groups=groups)
    torch.testing.assert_close(out.float(), expected, atol=atol, rtol=rtol)


@pytest.mark.parametrize("tile", TILE_CONFIGS, ids=str)
def test_every_sweep_tile_compiles_runs_and_has_finite_latency(tile):
    from triton.testing import do_bench

    x, weight, bias, groups = _inputs(SHAPES[0], torch.float16)
    expected = F.conv2d(x.float(), weight.float(), bias.float(), padding=1)
    out = conv2d(x, weight, bias, padding=1, tile=tile)
    torch.testing.assert_close(out.float(), expected, atol=2e-2, rtol=1e-2)
    latency_ms = do_bench(lambda: conv2d(x, weight, bias, padding=1, tile=tile), warmup=5, rep=20)
    assert math.isfinite(latency_ms) and latency_ms > 0
