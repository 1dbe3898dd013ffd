"""Analytic wave model: where the latency staircase of a Triton conv should have its steps.

A kernel launch is a grid of programs (thread blocks); each SM holds up to
`resident_blocks` of them at once, so the GPU runs the grid in
  waves = ceil(tiles / (sm_count * resident_blocks))
rounds, and each program runs its K loop `k_iterations` times. To first order the
latency is proportional to waves * k_iterations: one more output channel costs nothing
until it needs a new column of tiles that does not fit in the last wave (the "tail
effect"), and one more input channel costs nothing until K needs another block_k chunk.
The model ignores memory bandwidth, L2 hits and clock changes; it predicts *where* steps
fall, and the measured tables say how high they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from latprof.errors import LatprofError
from latprof.kernels.conv2d import k_iterations, launch_grid
from latprof.kernels.tiles import TileConfig, as_tile
from latprof.spec import ConvSpec

AXES = ("c_out", "c_in")
_ELEM_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
_MAX_REGS_PER_THREAD = 255  # architectural limit; beyond it the compiler spills
_REG_ALLOC_UNIT = 256  # registers are allocated per warp in chunks of 256 (sm_70..sm_90)


@dataclass(frozen=True)
class DevicePreset:
    """Per-GPU occupancy limits (NVIDIA CUDA C Programming Guide, compute capability table).

    smem_per_sm_bytes: the largest shared-memory carve-out of one SM; smem_per_block_bytes:
    the most one block may use (opt-in maximum). The 1 KiB per block that sm_80+ reserve
    for the system is ignored, as are per-sub-partition register limits.
    """

    name: str
    sm_count: int
    max_blocks_per_sm: int
    max_threads_per_sm: int
    regs_per_sm: int
    smem_per_sm_bytes: int
    smem_per_block_bytes: int
    compute_capability: str = ""


KIB = 1024
PRESETS: dict[str, DevicePreset] = {p.name: p for p in (
    # Turing TU102: 64 KiB shared memory per SM, only 1024 threads and 16 blocks per SM.
    DevicePreset("titan_rtx", 72, 16, 1024, 65536, 64 * KIB, 64 * KIB, "7.5"),
    # Volta GV100 (SXM2/PCIe both 80 SMs): 96 KiB of the 128 KiB L1 can be shared memory.
    DevicePreset("v100", 80, 32, 2048, 65536, 96 * KIB, 96 * KIB, "7.0"),
    # Ampere GA100: 164 KiB per SM, 163 KiB per block.
    DevicePreset("a100", 108, 32, 2048, 65536, 164 * KIB, 163 * KIB, "8.0"),
    # Hopper GH100 SXM5 (the PCIe card has 114 SMs): 228 KiB per SM, 227 KiB per block.
    DevicePreset("h100", 132, 32, 2048, 65536, 228 * KIB, 227 * KIB, "9.0"),
)}


#: Occupancy limits per compute capability (CUDA C Programming Guide, technical specifications):
#: (max resident blocks per SM, max threads per SM, 32-bit registers per SM, shared memory per SM,
#: shared memory per block with opt-in). Only the block limit is not among the properties the
#: CUDA runtime reports (and a table records); the others are used when a table lacks them.
ARCH_LIMITS: dict[str, tuple[int, int, int, int, int]] = {
    "7.0": (32, 2048, 65536, 96 * KIB, 96 * KIB),
    "7.5": (16, 1024, 65536, 64 * KIB, 64 * KIB),
    "8.0": (32, 2048, 65536, 164 * KIB, 163 * KIB),
    "8.6": (16, 1536, 65536, 100 * KIB, 99 * KIB),
    "8.9": (24, 1536, 65536, 100 * KIB, 99 * KIB),
    "9.0": (32, 2048, 65536, 228 * KIB, 227 * KIB),
}


def preset_from_identity(identity: dict) -> DevicePreset | None:
    """The wave model's device from what a table recorded of its GPU (`device` metadata): its SM
    count (an H100 PCIe has 114, an SXM5 132; a MIG instance its own share), compute capability
    and, when recorded, its shared memory, registers and threads per SM; the block limit comes
    from `ARCH_LIMITS`. None when the identity lacks the SM count or compute capability, or the
    compute capability is not in `ARCH_LIMITS` (then name a preset)."""
    sms, cc = identity.get("sm_count"), str(identity.get("compute_capability") or "")
    if not isinstance(sms, int) or sms < 1 or cc not in ARCH_LIMITS:
        return None
    blocks, threads, regs, smem_sm, smem_block = ARCH_LIMITS[cc]

    def recorded(key: str, default: int) -> int:
        value = identity.get(key)
        return value if isinstance(value, int) and value > 0 else default

    name = str(identity.get("gpu_name") or identity.get("name") or f"sm_{cc.replace('.', '')}")
    return DevicePreset(name, sms, blocks, recorded("max_threads_per_sm", threads), recorded("regs_per_sm", regs),
                        recorded("smem_per_sm_bytes", smem_sm), recorded("smem_per_block_bytes", smem_block), cc)


def get_preset(name: str) -> DevicePreset:
    """Look a preset up by name, with the list of known names in the error."""
    try:
        return PRESETS[name]
    except KeyError:
        raise LatprofError(f"unknown device preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def _major(compute_capability: str) -> int:
    """The compute capability's major version; 8 (sm_80: cp.async, tensor-core dot) when unknown."""
    head = str(compute_capability or "").split(".")[0]
    return int(head) if head.isdigit() else 8


def dot_note(compute_capability: str) -> str | None:
    """Why the wave model is rough below sm_80, or None: Triton >= 3.2 lowers `tl.dot` to FMA
    instructions there (no tensor cores; compiled for sm_75 by triton 3.8, the fp16 64x64x32
    kernel has no mma instruction, uses 255 registers and spills), so the titan_rtx and v100
    presets describe a kernel that does not run as the tile-and-wave picture assumes."""
    if _major(compute_capability) >= 8:
        return None
    return (f"sm_{str(compute_capability).replace('.', '')}: Triton >= 3.2 runs tl.dot as FMA below sm_80 (no "
            "tensor cores, registers spill), so this GPU's Triton kernel is not the one the wave model describes; "
            "its predicted edges are rough")


#: Registers per thread of the shipped tiles (`TILE_CONFIGS`), by (compute capability major,
#: element bytes), as Triton 3.8.0 compiled the implicit-GEMM kernel for a 3x3 NCHW conv (ptxas
#: -v for sm_75, sm_80 and sm_90a; `bench/probes/triton_resources.py` reproduces them without a
#: GPU). The formula in `estimate_regs_per_thread` said 64-144 for these tiles: it leaves out the
#: gathered im2col addresses (a 64-bit pointer and a mask per loaded element). 255 means the
#: compiler also spilled. Below sm_80 the numbers are sm_75's (sm_70's agree but for two fp32
#: tiles); left out: 16-bit 128x128x32 below sm_80 (ptxas said 32-64 registers and spilled
#: 7-13 KB). On a GPU, `kernels.compiled_resources` reads the real count instead.
COMPILED_REGS: dict[tuple[int, int], dict[str, int]] = {
    (7, 4): {"64x64x32,w4,s3,g8": 168, "32x32x32,w2,s3,g8": 241, "64x32x32,w2,s4,g8": 255,
             "32x64x32,w2,s4,g8": 200, "128x64x32,w4,s4,g8": 255, "64x128x32,w4,s4,g8": 255,
             "128x128x32,w8,s3,g8": 255},
    (7, 2): {t: 255 for t in ("64x64x32,w4,s3,g8", "32x32x32,w2,s3,g8", "64x32x32,w2,s4,g8", "32x64x32,w2,s4,g8",
                              "128x64x32,w4,s4,g8", "64x128x32,w4,s4,g8")},
    (8, 4): {t: 255 for t in ("64x64x32,w4,s3,g8", "32x32x32,w2,s3,g8", "64x32x32,w2,s4,g8", "32x64x32,w2,s4,g8",
                              "128x64x32,w4,s4,g8", "64x128x32,w4,s4,g8", "128x128x32,w8,s3,g8")},
    (8, 2): {"64x64x32,w4,s3,g8": 168, "32x32x32,w2,s3,g8": 242, "64x32x32,w2,s4,g8": 255,
             "32x64x32,w2,s4,g8": 168, "128x64x32,w4,s4,g8": 255, "64x128x32,w4,s4,g8": 255,
             "128x128x32,w8,s3,g8": 255},
    (9, 4): {"64x64x32,w4,s3,g8": 205, "32x32x32,w2,s3,g8": 255, "64x32x32,w2,s4,g8": 255,
             "32x64x32,w2,s4,g8": 246, "128x64x32,w4,s4,g8": 255, "64x128x32,w4,s4,g8": 255,
             "128x128x32,w8,s3,g8": 255},
    (9, 2): {"64x64x32,w4,s3,g8": 168, "32x32x32,w2,s3,g8": 238, "64x32x32,w2,s4,g8": 255,
             "32x64x32,w2,s4,g8": 168, "128x64x32,w4,s4,g8": 255, "64x128x32,w4,s4,g8": 255,
             "128x128x32,w8,s3,g8": 255},
}


def estimate_smem_bytes(tile: TileConfig, elem_bytes: int = 4, depthwise: bool = False,
                        compute_capability: str = "") -> int:
    """Shared memory per block of the implicit-GEMM kernel; the direct depthwise kernel stages
    nothing (0). With operands = (BM*BK + BK*BN) * elem_bytes (one A and one B tile):

    - below sm_80 (no cp.async), whatever num_stages: for 4-byte elements one operand buffer (the
      loads go through registers and are stored once for the FMA dot); for 2-byte elements the
      larger of the two tiles at 4 bytes (max(BM*BK, BK*BN) * 4: widened to fp32 for the FMA
      dot, A and B converted one after the other through one buffer);
    - sm_80+, 4-byte elements: (num_stages - 1) buffers (at least one): cp.async keeps that many
      gathered tiles in flight;
    - sm_80+, 2-byte elements: the larger of one operand buffer (Triton pipelines no gathered
      load narrower than 4 bytes) and BM*BN*elem_bytes (the tensor-core accumulator passes
      through shared memory on its way to the store layout).

    Checked against Triton 3.8.0 compiling the 7 shipped tiles for sm_70, sm_75, sm_80 and
    sm_90 in fp32, fp16 and bf16 (`metadata.shared`, tests/kernels/test_occupancy.py): exact in
    67 of 70 cases; sm_90's 64x128 16-bit tiles used 12288 B, not 16384 (wgmma), and sm_70's fp16
    128x128 tile 32768 B, not 16384. Unknown compute
    capability: sm_80's rule. Pass the compiled kernel's figure as `smem_bytes` when known."""
    if depthwise:
        return 0
    operands = (tile.block_m * tile.block_k + tile.block_k * tile.block_n) * elem_bytes
    if _major(compute_capability) < 8:
        return operands if elem_bytes >= 4 else max(tile.block_m, tile.block_n) * tile.block_k * 4
    if elem_bytes >= 4:
        return max(1, tile.num_stages - 1) * operands
    return max(operands, tile.block_m * tile.block_n * elem_bytes)


def estimate_regs_per_thread(tile: TileConfig, elem_bytes: int = 4, depthwise: bool = False,
                             compute_capability: str = "") -> int:
    """Registers per thread: the compiled count of a shipped tile (`COMPILED_REGS`) when known for
    this compute capability and element size; else a rough formula: the fp32 accumulator (BM*BN /
    threads), one stage of operands held in registers ((BM*BK + BK*BN) * elem_bytes / 4 /
    threads; for depthwise the fp32 input tile, BM*BN / threads) and 32 for addresses, indices
    and the loop, rounded up to 8, capped at 255 (it undercounts the implicit GEMM's gathered
    addresses). Pass the compiler's real count when known (`kernels.compiled_resources` on a
    GPU) to `resident_blocks(regs_per_thread=...)`."""
    if not depthwise:
        known = COMPILED_REGS.get((_major(compute_capability), 4 if elem_bytes >= 4 else 2), {}).get(str(tile))
        if known is not None:
            return known
    threads = tile.num_threads
    acc = math.ceil(tile.block_m * tile.block_n / threads)
    if depthwise:
        operands = acc
    else:
        operand_words = (tile.block_m * tile.block_k + tile.block_k * tile.block_n) * elem_bytes / 4
        operands = math.ceil(operand_words / threads)
    regs = acc + operands + 32
    return min(_MAX_REGS_PER_THREAD, 8 * math.ceil(regs / 8))


def resident_blocks(tile: TileConfig | str, preset: DevicePreset, regs_per_thread: int | None = None,
                    smem_bytes: int | None = None, *, elem_bytes: int = 4, depthwise: bool = False) -> int:
    """Blocks of this tile that one SM holds at once: the minimum of the hardware block
    limit, threads (num_warps*32 per block), registers (allocated per warp in units of 256)
    and shared memory. 0 means the tile cannot launch on this device (too much shared
    memory for one block). `regs_per_thread` / `smem_bytes` default to the estimates
    above for `elem_bytes`-wide inputs (4: fp32, 2: fp16/bf16) on the preset's compute
    capability; on a GPU pass the compiled kernel's (`kernels.compiled_resources`)."""
    tile = as_tile(tile)
    cc = preset.compute_capability
    if regs_per_thread is None:
        regs_per_thread = estimate_regs_per_thread(tile, elem_bytes, depthwise, cc)
    if smem_bytes is None:
        smem_bytes = estimate_smem_bytes(tile, elem_bytes, depthwise, cc)
    if smem_bytes > preset.smem_per_block_bytes or tile.num_threads > preset.max_threads_per_sm:
        return 0
    by_threads = preset.max_threads_per_sm // tile.num_threads
    regs_per_warp = _REG_ALLOC_UNIT * math.ceil(regs_per_thread * 32 / _REG_ALLOC_UNIT)
    by_regs = (preset.regs_per_sm // max(regs_per_warp, 1)) // tile.num_warps
    by_smem = preset.smem_per_sm_bytes // smem_bytes if smem_bytes > 0 else preset.max_blocks_per_sm
    return min(preset.max_blocks_per_sm, by_threads, by_regs, by_smem)


def tile_count(spec: ConvSpec, tile: TileConfig | str) -> int:
    """Programs launched for `spec`: the product of `conv2d.launch_grid`."""
    return math.prod(launch_grid(spec, as_tile(tile)))


def waves(spec: ConvSpec, tile: TileConfig | str, preset: DevicePreset, *,
          regs_per_thread: int | None = None, smem_bytes: int | None = None) -> int:
    """ceil(tiles / (sm_count * resident_blocks)) for `spec` on `preset`."""
    tile = as_tile(tile)
    elem_bytes = _ELEM_BYTES[spec.dtype]
    if smem_bytes is None:
        smem_bytes = estimate_smem_bytes(tile, elem_bytes, spec.depthwise, preset.compute_capability)
    resident = resident_blocks(tile, preset, regs_per_thread, smem_bytes,
                               elem_bytes=elem_bytes, depthwise=spec.depthwise)
    if resident < 1:
        raise LatprofError(
            f"tile {tile} does not fit one SM of {preset.name} for {spec.dtype}: it needs {smem_bytes} B "
            f"of shared memory (limit {preset.smem_per_block_bytes} B per block) and "
            f"{tile.num_threads} threads (limit {preset.max_threads_per_sm} per SM); "
            "choose a smaller tile or fewer num_stages")
    return math.ceil(tile_count(spec, tile) / (preset.sm_count * resident))


def _vary(spec: ConvSpec, axis: str, channels: int) -> ConvSpec | None:
    """`spec` with `channels` on `axis`; depthwise specs keep c_in == c_out == groups.
    None when the count is not a valid conv (not divisible by groups), or when a depthwise
    spec would stop being depthwise (1 channel runs the implicit-GEMM kernel instead)."""
    if spec.depthwise:
        if channels < 2:
            return None
        changes = {"c_in": channels, "c_out": channels, "groups": channels}
    else:
        changes = {axis: channels}
    try:
        return spec.replace(**changes)
    except LatprofError:
        return None


def predicted_latency_curve(spec: ConvSpec, tile: TileConfig | str, preset: DevicePreset, axis: str,
                            channels, *, regs_per_thread: int | None = None,
                            smem_bytes: int | None = None) -> list[float]:
    """Relative cost waves * k_iterations for each count in `channels` on `axis`.

    Unitless (one unit = one wave of one K-chunk, or of one filter tap for depthwise); NaN
    where the count is not a valid conv for `spec` (see `predicted_edges`), so the list
    plots with gaps.
    """
    tile = as_tile(tile)
    if axis not in AXES:
        raise LatprofError(f"unknown axis {axis!r}; choose one of {', '.join(AXES)}")
    costs = []
    for c in channels:
        varied = _vary(spec, axis, int(c))
        if varied is None:
            costs.append(float("nan"))
            continue
        w = waves(varied, tile, preset, regs_per_thread=regs_per_thread, smem_bytes=smem_bytes)
        costs.append(float(w * k_iterations(varied, tile)))
    return costs


def predicted_edges(spec: ConvSpec, tile: TileConfig | str, preset: DevicePreset, axis: str = "c_out",
                    max_channels: int | None = None, *, regs_per_thread: int | None = None,
                    smem_bytes: int | None = None) -> list[int]:
    """Channel counts where the predicted staircase steps up, ascending.

    Counts c = 1..max_channels (inclusive; default: the spec's own count on `axis`) are
    evaluated; counts that are not valid convs (not divisible by groups; 1 for depthwise)
    are skipped. An
    edge is a count c whose cost is higher than that of the previous valid count, i.e.
    the *first* count of a new step: counts edge_i .. edge_{i+1}-1 (both inclusive) cost
    the same. The first valid count is never an edge. Along c_out the cost changes only
    through the wave count, along c_in only through the K-loop trips ceil(K / block_k)
    (for depthwise specs both axes move c_in, c_out and groups together, and only waves
    change).
    """
    if max_channels is None:
        max_channels = spec.c_out if axis == "c_out" else spec.c_in
    if max_channels < 1:
        raise LatprofError(f"max_channels must be >= 1, got {max_channels}")
    counts = range(1, max_channels + 1)
    costs = predicted_latency_curve(spec, tile, preset, axis, counts,
                                    regs_per_thread=regs_per_thread, smem_bytes=smem_bytes)
    edges, previous = [], None
    for c, cost in zip(counts, costs):
        if math.isnan(cost):
            continue
        if previous is not None and cost > previous:
            edges.append(c)
        previous = cost
    return edges
