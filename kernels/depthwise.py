"""Direct depthwise convolution (groups == C_in == C_out, channel multiplier 1).

Implicit GEMM is a poor fit here: each group has a single output channel and a K of only
KH*KW, so a GEMM tile would waste almost all of its N and K extent. This kernel instead
gives each program a tile of `block_m` output pixels (rows of M = N*H_out*W_out) by
`block_n` channels and accumulates the KH*KW taps with elementwise multiply-adds in fp32.
`block_k`, `group_m` and `num_stages` are unused (there is no K loop to pipeline); the
grid is (cdiv(M, block_m), cdiv(C, block_n)).

`conv2d.conv2d` routes depthwise shapes here automatically; `conv2d.launch_grid` returns
`depthwise_grid` for them, so the wave model sees the grid that really runs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from latprof.kernels.tiles import TileConfig
from latprof.spec import ConvSpec


@triton.jit
def _depthwise_conv2d_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    C, H, W, H_OUT, W_OUT, M,
    sxn, sxc, sxh, sxw,
    swc, swh, sww,
    syn, syc, syh, syw,
    STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    PAD_H: tl.constexpr, PAD_W: tl.constexpr,
    DIL_H: tl.constexpr, DIL_W: tl.constexpr,
    KH: tl.constexpr, KW: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = pid_c * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    c_ok = offs_c < C

    hw_out = H_OUT * W_OUT
    img = offs_m // hw_out
    pix = offs_m % hw_out
    oh = pix // W_OUT
    ow = pix % W_OUT
    ih0 = oh * STRIDE_H - PAD_H
    iw0 = ow * STRIDE_W - PAD_W
    x_img = img * sxn
    x_chan = offs_c * sxc

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kh in tl.static_range(KH):
        ih = ih0 + kh * DIL_H
        h_ok = m_ok & (ih >= 0) & (ih < H)
        for kw in tl.static_range(KW):
            iw = iw0 + kw * DIL_W
            ok = h_ok & (iw >= 0) & (iw < W)
            x_ptrs = x_ptr + (x_img + ih * sxh + iw * sxw)[:, None] + x_chan[None, :]
            xv = tl.load(x_ptrs, mask=ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
            wv = tl.load(w_ptr + offs_c * swc + kh * swh + kw * sww, mask=c_ok, other=0.0)
            acc += xv * wv.to(tl.float32)[None, :]

    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    y_ptrs = y_ptr + (img * syn + oh * syh + ow * syw)[:, None] + (offs_c * syc)[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & c_ok[None, :])


def depthwise_grid(spec: ConvSpec, tile: TileConfig) -> tuple[int, int]:
    """(pixel tiles, channel tiles) for a depthwise spec: (cdiv(M, block_m), cdiv(C, block_n))."""
    m = spec.batch * spec.h_out * spec.w_out
    return (triton.cdiv(m, tile.block_m), triton.cdiv(spec.c_out, tile.block_n))


def launch_depthwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     out: torch.Tensor, spec: ConvSpec, tile: TileConfig, grid: tuple[int, int]):
    """Launch on tensors already validated by `conv2d.conv2d` (weight is (C, 1, KH, KW));
    `grid` is `conv2d.launch_grid(spec, tile)`, i.e. `depthwise_grid`. Returns what Triton's
    launch returns: the compiled kernel (`conv2d.kernel_resources` reads it)."""
    return _depthwise_conv2d_kernel[grid](
        x, weight, bias if bias is not None else x, out,
        spec.c_in, spec.h, spec.w, spec.h_out, spec.w_out, spec.batch * spec.h_out * spec.w_out,
        *x.stride(),
        weight.stride(0), weight.stride(2), weight.stride(3),
        *out.stride(),
        STRIDE_H=spec.stride_h, STRIDE_W=spec.stride_w,
        PAD_H=spec.pad_h, PAD_W=spec.pad_w,
        DIL_H=spec.dilation_h, DIL_W=spec.dilation_w,
        KH=spec.kernel_h, KW=spec.kernel_w,
        HAS_BIAS=bias is not None,
        BLOCK_M=tile.block_m, BLOCK_N=tile.block_n,
        num_warps=tile.num_warps, num_stages=1,
    )
