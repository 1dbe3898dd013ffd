"""Implicit-GEMM conv2d forward in Triton, with an explicit tile configuration.

The convolution of one group is the matrix product Y[M, N] = A[M, K] @ B[K, N] with
  M = batch * H_out * W_out   (one row per output pixel),
  N = C_out / groups          (one column per output channel of the group),
  K = C_in / groups * KH * KW (one reduction index per input channel and filter tap).
A is never materialised: each program gathers its A tile from the input with the tensor's
strides (so NCHW and channels-last inputs both work, as do other strided views), zero
where the tap falls into the padding. The grid is (tiles over M x tiles over N, groups),
and the K loop runs ceil(K / block_k) times: these two numbers are what the analytic
wave model (`wave.py`) counts.

Accumulation is fp32 for every input dtype; the output has the input's dtype and memory
format. For fp32 inputs the dot uses TF32 when `torch.backends.cudnn.allow_tf32` is set
(torch's default for convolutions), so Triton and cuDNN timings compare like for like.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from latprof.errors import LatprofError
from latprof.kernels.depthwise import depthwise_grid, launch_depthwise
from latprof.kernels.tiles import DEFAULT_TILE, TileConfig, as_tile
from latprof.spec import ConvSpec

_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
_INT32_MAX = 2**31 - 1  # the kernels index with int32 offsets


# One function: a Triton kernel cannot call helpers that take pointers and tile shapes without
# inlining them anyway, and the index arithmetic reads best in one place.
@triton.jit
def _conv2d_igemm_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    C_IN_G, H, W, C_OUT_G, H_OUT, W_OUT, M,
    sxn, sxc, sxh, sxw,
    swo, swi, swh, sww,
    syn, syc, syh, syw,
    STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    PAD_H: tl.constexpr, PAD_W: tl.constexpr,
    DIL_H: tl.constexpr, DIL_W: tl.constexpr,
    KH: tl.constexpr, KW: tl.constexpr,
    HAS_BIAS: tl.constexpr, CI_INNER: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # Program -> (pid_m, pid_n), GROUP_M row-tiles at a time, so programs running together
    # share the same weight tiles in L2 (Triton matmul tutorial's "grouped ordering").
    pid = tl.program_id(0)
    grp = tl.program_id(1)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(C_OUT_G, BLOCK_N)
    per_band = GROUP_M * num_pid_n
    first_m = (pid // per_band) * GROUP_M
    band_rows = min(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_band) % band_rows
    pid_n = (pid % per_band) // band_rows

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < C_OUT_G
    hw_out = H_OUT * W_OUT
    img = offs_m // hw_out
    pix = offs_m % hw_out
    oh = pix // W_OUT
    ow = pix % W_OUT
    ih0 = oh * STRIDE_H - PAD_H
    iw0 = ow * STRIDE_W - PAD_W
    x_rows = x_ptr + img * sxn + (grp * C_IN_G) * sxc
    co = grp * C_OUT_G + offs_n
    w_cols = w_ptr + co * swo

    K = C_IN_G * KH * KW
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        # K order follows the input's memory order: channels innermost for channels-last,
        # taps innermost for NCHW, so consecutive k read neighbouring addresses.
        if CI_INNER:
            ci = offs_k % C_IN_G
            tap = offs_k // C_IN_G
            kh = tap // KW
            kw = tap % KW
        else:
            kw = offs_k % KW
            tap = offs_k // KW
            kh = tap % KH
            ci = tap // KH
        ih = ih0[:, None] + (kh * DIL_H)[None, :]
        iw = iw0[:, None] + (kw * DIL_W)[None, :]
        a_ok = m_ok[:, None] & k_ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        a = tl.load(x_rows[:, None] + (ci * sxc)[None, :] + ih * sxh + iw * sxw, mask=a_ok, other=0.0)
        b_ptrs = w_cols[None, :] + (ci * swi + kh * swh + kw * sww)[:, None]
        b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        if UPCAST_DOT:  # interpreter only, see _upcast_dot
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)

    if HAS_BIAS:
        acc += tl.load(b_ptr + co, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    y_ptrs = y_ptr + (img * syn + oh * syh + ow * syw)[:, None] + (co * syc)[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def launch_grid(spec: ConvSpec, tile: TileConfig | str) -> tuple[int, int]:
    """The grid `conv2d` launches for `spec` with `tile`; its product is the tile count.

    Implicit GEMM: (cdiv(M, block_m) * cdiv(C_out/groups, block_n), groups).
    Depthwise shapes (`spec.depthwise`) use the direct kernel: see `depthwise.depthwise_grid`.
    """
    tile = as_tile(tile)
    if spec.depthwise:
        return depthwise_grid(spec, tile)
    m = spec.batch * spec.h_out * spec.w_out
    n = spec.c_out // spec.groups
    return (triton.cdiv(m, tile.block_m) * triton.cdiv(n, tile.block_n), spec.groups)


def k_iterations(spec: ConvSpec, tile: TileConfig | str) -> int:
    """Trips of each program's main loop: ceil(K / block_k), or KH*KW taps for depthwise."""
    tile = as_tile(tile)
    if spec.depthwise:
        return spec.kernel_h * spec.kernel_w
    k = (spec.c_in // spec.groups) * spec.kernel_h * spec.kernel_w
    return triton.cdiv(k, tile.block_k)


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise LatprofError(f"{name} must be an int or a pair of ints, got {value!r}")


def _layout(x: torch.Tensor) -> str:
    """'nhwc' for channels-last memory (channels innermost), else 'nchw'."""
    if x.stride(1) == 1 and x.shape[1] > 1 and not x.is_contiguous():
        return "nhwc"
    return "nchw"


def interpreted() -> bool:
    """True when the kernels were decorated under TRITON_INTERPRET=1 (decided at import)."""
    return not isinstance(_conv2d_igemm_kernel, triton.runtime.JITFunction)


def _upcast_dot(dtype: torch.dtype) -> bool:
    """The CPU interpreter (triton 3.x) stores bf16 as raw uint16 and its tl.dot multiplies
    those bit patterns as integers, so under TRITON_INTERPRET=1 bf16 operands are widened
    to fp32 before the dot. The result is the same as on a GPU (bf16 products are exact in
    fp32 and accumulation is fp32 on both); compiled GPU kernels never take this branch."""
    return dtype == torch.bfloat16 and interpreted()


def _check(x, weight, bias, stride, padding, dilation, groups) -> ConvSpec:
    """Validate the launcher's arguments; return the spec of the convolution they describe."""
    for name, t in (("x", x), ("weight", weight)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise LatprofError(f"{name} must be a 4-D tensor, got "
                               f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    if x.dtype not in _DTYPES:
        raise LatprofError(f"x has dtype {x.dtype}; the Triton kernels support {', '.join(_DTYPES.values())}")
    others = [("weight", weight)] + ([("bias", bias)] if bias is not None else [])
    for name, t in others:
        if t.dtype != x.dtype:
            raise LatprofError(f"{name} dtype {t.dtype} differs from x dtype {x.dtype}; cast them to one dtype")
        if t.device != x.device:
            raise LatprofError(f"{name} is on {t.device} but x is on {x.device}; move them to one device")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation")
    if min(sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
        raise LatprofError(f"stride and dilation must be >= 1 and padding >= 0, got stride={stride}, "
                           f"dilation={dilation}, padding={padding}")
    if not isinstance(groups, int) or groups < 1:
        raise LatprofError(f"groups must be a positive int, got {groups!r}")
    n, c_in, h, w = x.shape
    c_out, c_in_g, kh, kw = weight.shape
    if min(n, c_in, h, w, c_out, kh, kw) == 0:
        raise LatprofError(f"empty input: x {tuple(x.shape)}, weight {tuple(weight.shape)}")
    if c_in % groups or c_out % groups:
        raise LatprofError(f"C_in={c_in} and C_out={c_out} must both be divisible by groups={groups}")
    if c_in_g != c_in // groups:
        raise LatprofError(f"weight {tuple(weight.shape)} expects {c_in_g * groups} input channels with "
                           f"groups={groups}, but x has C_in={c_in}")
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise LatprofError(f"bias must have shape ({c_out},), got {tuple(bias.shape)}")
    h_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if h_out < 1 or w_out < 1:
        raise LatprofError(f"the output would be empty ({h_out}x{w_out}): the {kh}x{kw} kernel with "
                           f"dilation {dh}x{dw} is larger than the {h}x{w} input plus padding {ph}x{pw}")
    if max(x.numel(), weight.numel(), n * c_out * h_out * w_out) > _INT32_MAX:
        raise LatprofError("tensor too large for the int32 indexing of the Triton kernels; split the batch")
    if x.device.type != "cuda" and not interpreted():
        raise LatprofError(f"Triton kernels need a CUDA device, got x on {x.device}; on a CPU set "
                           "TRITON_INTERPRET=1 before importing latprof.kernels (slow: correctness only)")
    return ConvSpec(c_in=c_in, c_out=c_out, h=h, w=w, kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw,
                    pad_h=ph, pad_w=pw, dilation_h=dh, dilation_w=dw, groups=groups, batch=n,
                    dtype=_DTYPES[x.dtype], layout=_layout(x), backend="triton")


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           stride=1, padding=0, dilation=1, groups: int = 1,
           tile: TileConfig | str = DEFAULT_TILE) -> torch.Tensor:
    """Conv2d forward like `torch.nn.functional.conv2d`, with an explicit Triton tile.

    x: (N, C_in, H, W), any strides (NCHW or channels-last); weight: (C_out, C_in/groups,
    KH, KW); bias: (C_out,) or None; all of one dtype (fp32, fp16 or bf16) and device.
    stride/padding/dilation: int or (h, w) pair; padding is zeros, symmetric.
    Returns (N, C_out, H_out, W_out) in x's dtype, channels-last when x is.
    Depthwise shapes (groups == C_in == C_out > 1) use the direct depthwise kernel.
    """
    return Conv2dLaunch(x, weight, bias, stride, padding, dilation, groups, tile)()


class Conv2dLaunch:
    """`conv2d` split in two: the arguments validated and the output allocated once, here; each
    call then only launches, into the same output. A profiler times the call (`backends`): the
    validation (~14 us of Python per call) stays out of small kernels' samples. `compiled` is
    the kernel Triton launched last (None before the first call): `kernel_resources` reads it.
    Triton's own launch cost (binding the arguments, a few us) remains in every call."""

    def __init__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 stride=1, padding=0, dilation=1, groups: int = 1, tile: TileConfig | str = DEFAULT_TILE):
        self.tile = tile = as_tile(tile)
        self.spec = spec = _check(x, weight, bias, stride, padding, dilation, groups)
        fmt = torch.channels_last if spec.layout == "nhwc" else torch.contiguous_format
        self.out = torch.empty((spec.batch, spec.c_out, spec.h_out, spec.w_out), dtype=x.dtype, device=x.device,
                               memory_format=fmt)
        self.x, self.weight, self.bias = x, weight, bias
        self.grid = launch_grid(spec, tile)
        self.compiled = None
        self.args = (x, weight, bias if bias is not None else x, self.out,
                     spec.c_in // groups, spec.h, spec.w, spec.c_out // groups, spec.h_out, spec.w_out,
                     spec.batch * spec.h_out * spec.w_out, *x.stride(), *weight.stride(), *self.out.stride())
        self.kwargs = dict(
            STRIDE_H=spec.stride_h, STRIDE_W=spec.stride_w, PAD_H=spec.pad_h, PAD_W=spec.pad_w,
            DIL_H=spec.dilation_h, DIL_W=spec.dilation_w, KH=spec.kernel_h, KW=spec.kernel_w,
            HAS_BIAS=bias is not None, CI_INNER=spec.layout == "nhwc", UPCAST_DOT=_upcast_dot(x.dtype),
            BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, BLOCK_K=tile.block_k, GROUP_M=tile.group_m,
            num_warps=tile.num_warps, num_stages=tile.num_stages)

    def __call__(self) -> torch.Tensor:
        if self.spec.depthwise:
            self.compiled = launch_depthwise(self.x, self.weight, self.bias, self.out, self.spec, self.tile, self.grid)
        else:
            # "tf32" is Triton's default on NVIDIA and only affects fp32 operands; fp16/bf16 keep it.
            # Read per call (a flag, ~0.1 us): a timing clock turns TF32 off while it is entered.
            ieee = self.x.dtype == torch.float32 and not torch.backends.cudnn.allow_tf32
            self.compiled = _conv2d_igemm_kernel[self.grid](*self.args, INPUT_PRECISION="ieee" if ieee else "tf32",
                                                            **self.kwargs)
        return self.out


def kernel_resources(compiled) -> tuple[int, int] | None:
    """(registers per thread, shared memory bytes per block) of a kernel Triton compiled and
    launched (`Conv2dLaunch.compiled`): what the wave model's occupancy should use on a GPU
    (`wave.resident_blocks(regs_per_thread=..., smem_bytes=...)`). Triton 3.x keeps the register
    count on the kernel (`n_regs`, set when the binary is loaded, i.e. at the first launch) and
    the shared memory in `metadata.shared`. None under the interpreter or before a launch."""
    if compiled is None:
        return None
    init = getattr(compiled, "_init_handles", None)
    if callable(init):
        init()
    regs = getattr(compiled, "n_regs", None)
    shared = getattr(getattr(compiled, "metadata", None), "shared", None)
    if shared is None:
        shared = getattr(compiled, "shared", None)
    if not isinstance(regs, int) or not isinstance(shared, int):
        return None
    return regs, shared


def compiled_resources(spec: ConvSpec, tile: TileConfig | str, device="cuda") -> tuple[int, int] | None:
    """Registers per thread and shared memory per block of the kernel `spec` with `tile` compiles
    to on this machine's GPU (one launch on tensors of `spec`'s shape, dtype and layout); None
    without a CUDA device or under the interpreter (then the wave model estimates them)."""
    if interpreted() or not torch.cuda.is_available():
        return None
    dtype = getattr(torch, spec.dtype)
    x = torch.zeros(spec.batch, spec.c_in, spec.h, spec.w, dtype=dtype, device=device)
    w = torch.zeros(spec.c_out, spec.c_in // spec.groups, spec.kernel_h, spec.kernel_w, dtype=dtype, device=device)
    if spec.layout == "nhwc":
        x, w = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    launch = Conv2dLaunch(x, w, None, (spec.stride_h, spec.stride_w), (spec.pad_h, spec.pad_w),
                          (spec.dilation_h, spec.dilation_w), spec.groups, tile)
    launch()
    return kernel_resources(launch.compiled)
