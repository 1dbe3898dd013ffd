"""Wave model and tile configs against hand-computed numbers (no kernel runs here)."""

import math

import pytest

from latprof.errors import LatprofError
from latprof.kernels import (
    DEFAULT_TILE,
    PRESETS,
    TILE_CONFIGS,
    DevicePreset,
    TileConfig,
    get_preset,
    k_iterations,
    launch_grid,
    predicted_edges,
    predicted_latency_curve,
    resident_blocks,
    tile_count,
    waves,
)
from latprof.spec import ConvSpec

SPECS = [
    ConvSpec(c_in=64, c_out=65, h=56, w=56),
    ConvSpec(c_in=3, c_out=64, h=224, w=224, kernel_h=7, kernel_w=7, stride_h=2, stride_w=2, pad_h=3,
             pad_w=3, batch=8),
    ConvSpec(c_in=32, c_out=48, h=14, w=15, groups=4, dtype="float16", layout="nhwc"),
    ConvSpec(c_in=96, c_out=96, h=28, w=28, groups=96, batch=2),  # depthwise: direct kernel
    ConvSpec(c_in=256, c_out=1000, h=1, w=1, kernel_h=1, kernel_w=1, pad_h=0, pad_w=0),
]

# A toy GPU whose numbers are easy to follow: 4 SMs, at most 2 blocks each -> 8 slots.
TOY = DevicePreset("toy", sm_count=4, max_blocks_per_sm=2, max_threads_per_sm=2048, regs_per_sm=65536,
                   smem_per_sm_bytes=1 << 20, smem_per_block_bytes=1 << 20)
SMALL = TileConfig(16, 16, 16, num_warps=1, num_stages=1)


@pytest.mark.parametrize("tile", TILE_CONFIGS + [SMALL], ids=str)
@pytest.mark.parametrize("spec", SPECS, ids=ConvSpec.label)
def test_tile_count_is_the_launch_grid_product(spec, tile):
    grid = launch_grid(spec, tile)
    assert tile_count(spec, tile) == math.prod(grid) >= 1
    assert tile_count(spec, str(tile)) == tile_count(spec, tile)


def test_launch_grid_by_hand():
    # 64->65 3x3 @56x56: M = 56*56 = 3136 -> cdiv(3136, 64) = 49 row tiles; N = 65 -> 2 column tiles.
    assert launch_grid(SPECS[0], DEFAULT_TILE) == (98, 1)
    # groups=4 (32->48 @14x15): M = 210 -> 4 row tiles of 64; N = 48/4 = 12 -> 1 column tile; 4 groups.
    assert launch_grid(SPECS[2], DEFAULT_TILE) == (4, 4)
    # depthwise 96 @28x28, batch 2: M = 1568 -> 25 pixel tiles; 96 channels -> 2 channel tiles.
    assert launch_grid(SPECS[3], DEFAULT_TILE) == (25, 2)
    # K = 64*9 = 576 -> 18 chunks of 32; depthwise: 9 unrolled taps.
    assert k_iterations(SPECS[0], DEFAULT_TILE) == 18
    assert k_iterations(SPECS[3], DEFAULT_TILE) == 9


def test_resident_blocks_by_hand():
    a100 = PRESETS["a100"]
    # 64x64x32,w4,s3 in fp32 on an A100 (sm_80):
    #   threads: 2048 // 128 = 16
    #   smem: (3 - 1) cp.async buffers * (64*32 + 32*64) * 4 B = 32768 B -> 167936 // 32768 = 5
    #   regs: 255 (the compiled count, COMPILED_REGS) -> 8160, rounded to 8192 per warp
    #         -> 65536 // 8192 = 8 warps -> 2 blocks of 4 warps
    #   -> min(32, 16, 5, 2) = 2
    assert resident_blocks(DEFAULT_TILE, a100) == 2
    # given: 255 regs, no smem -> still the register limit, 2 blocks.
    assert resident_blocks(DEFAULT_TILE, a100, regs_per_thread=255, smem_bytes=0) == 2
    # fp16: smem max(one buffer 8192, accumulator 64*64*2 = 8192) -> 20 blocks; regs 168 -> 5376
    # per warp (21 units of 256) -> 65536 // 5376 = 12 warps -> 3 blocks.
    assert resident_blocks(DEFAULT_TILE, a100, elem_bytes=2) == 3
    # Titan RTX: 1024 threads per SM, so 8-warp blocks -> at most 4 (smem 0 and few regs given).
    wide = TileConfig(64, 64, 32, num_warps=8)
    assert resident_blocks(wide, PRESETS["titan_rtx"], regs_per_thread=32, smem_bytes=0) == 4


def test_tile_that_does_not_fit_is_an_error():
    # 128x128x64,s4 fp32: one buffer (8192 + 8192) * 4 B = 64 KiB on sm_75 (stages do not multiply
    # it without cp.async): it fits a TITAN RTX's 64 KiB; on an A100 3 buffers, 192 KiB, do not.
    big = TileConfig(128, 128, 64, num_warps=8, num_stages=4)
    assert resident_blocks(big, PRESETS["titan_rtx"]) == 1
    assert resident_blocks(big, PRESETS["a100"]) == 0
    with pytest.raises(LatprofError, match="does not fit one SM of a100"):
        waves(SPECS[0], big, PRESETS["a100"])
    huge = TileConfig(128, 128, 128, num_warps=8, num_stages=1)  # one buffer of 128 KiB
    assert resident_blocks(huge, PRESETS["titan_rtx"]) == 0


def test_presets():
    assert {"titan_rtx", "v100", "a100", "h100"} <= set(PRESETS)
    assert [PRESETS[n].sm_count for n in ("titan_rtx", "v100", "a100", "h100")] == [72, 80, 108, 132]
    assert get_preset("h100").smem_per_sm_bytes == 228 * 1024
    with pytest.raises(LatprofError, match="unknown device preset 'k80'; choose one of"):
        get_preset("k80")


def test_c_out_edges_a100():
    # 64->c 3x3 @56x56, batch 1, fp32, 64x64x32 on an A100: 49 row tiles, resident 2 (above),
    # so 108*2 = 216 slots. tiles = 49 * ceil(c/64); waves = ceil(tiles / 216):
    #   ceil(c/64) = 1..4  (c <= 256): tiles <= 196 -> 1 wave
    #   ceil(c/64) = 5     (c = 257):  245 -> 2 waves      <- edge 257
    #   ceil(c/64) = 9     (c = 513):  441 -> 3 waves      <- edge 513
    #   ceil(c/64) = 14    (c = 833):  686 -> 4 waves      <- edge 833
    spec = ConvSpec(c_in=64, c_out=64, h=56, w=56)
    assert predicted_edges(spec, DEFAULT_TILE, PRESETS["a100"], "c_out", max_channels=1024) == [257, 513, 833]
    assert predicted_edges(spec, DEFAULT_TILE, PRESETS["a100"], "c_out") == []  # up to the spec's 64


def test_c_in_edges_are_k_chunks():
    # K = 9c (3x3), block_k = 32: iterations ceil(9c/32) for c = 1..16:
    #   c:   1  2  3 | 4  5  6  7 | 8  9 10 | 11 12 13 14 | 15 16
    #   9c:  9 18 27 | 36 45 54 63| 72 81 90| 99 108 117 126 | 135 144
    #   it:  1  1  1 | 2  2  2  2 | 3  3  3 | 4  4  4  4 | 5  5
    # The grid does not depend on c_in, so the edges are where the iterations rise.
    spec = ConvSpec(c_in=16, c_out=64, h=56, w=56)
    assert predicted_edges(spec, DEFAULT_TILE, PRESETS["a100"], "c_in") == [4, 8, 11, 15]
    curve = predicted_latency_curve(spec, DEFAULT_TILE, PRESETS["a100"], "c_in", range(1, 17))
    assert curve == [1.0] * 3 + [2.0] * 4 + [3.0] * 3 + [4.0] * 4 + [5.0] * 2


def test_grouped_c_out_edges_skip_invalid_counts():
    # groups=2, 1x1 conv @4x4: M = 16 -> 1 row tile of 16; c_out must be even.
    # tiles = ceil((c/2)/16) * 2 groups; 8 slots on TOY (resident 2: the block limit).
    #   c =   2..32:  2 tiles -> 1 wave ... c = 98..128: 8 tiles -> 1 wave
    #   c = 130..256: 10..16 tiles -> 2 waves   <- edge 130 (129 is odd, not a valid count)
    #   c = 258:      18 tiles -> 3 waves       <- edge 258
    spec = ConvSpec(c_in=8, c_out=8, h=4, w=4, kernel_h=1, kernel_w=1, pad_h=0, pad_w=0, groups=2)
    assert resident_blocks(SMALL, TOY) == 2
    assert predicted_edges(spec, SMALL, TOY, "c_out", max_channels=300) == [130, 258]
    curve = predicted_latency_curve(spec, SMALL, TOY, "c_out", [128, 129, 130])
    assert curve[0] == 1.0 and math.isnan(curve[1]) and curve[2] == 2.0


def test_depthwise_edges_move_all_channels():
    # Depthwise 3x3 @4x4 (pad 1): M = 16 -> 1 pixel tile; ceil(c/16) channel tiles; 8 slots:
    #   c = 2..128 -> at most 8 tiles -> 1 wave; c = 129 -> 9 tiles -> 2 waves; c = 257 -> 3 waves.
    # c = 1 is skipped: a 1-channel conv is not depthwise and would run the GEMM kernel.
    spec = ConvSpec(c_in=32, c_out=32, h=4, w=4, groups=32)
    for axis in ("c_out", "c_in"):
        assert predicted_edges(spec, SMALL, TOY, axis, max_channels=300) == [129, 257]
    curve = predicted_latency_curve(spec, SMALL, TOY, "c_out", [1, 2, 129])
    assert math.isnan(curve[0]) and curve[1:] == [9.0, 18.0]  # waves * 9 taps


def test_bad_axis():
    with pytest.raises(LatprofError, match="unknown axis 'h'"):
        predicted_edges(SPECS[0], DEFAULT_TILE, TOY, "h", max_channels=4)


# ---- TileConfig text form ----

@pytest.mark.parametrize("tile", TILE_CONFIGS, ids=str)
def test_tile_text_round_trip(tile):
    assert TileConfig.parse(str(tile)) == tile


def test_tile_parse_defaults_and_order():
    assert TileConfig.parse("64x64x32") == TileConfig(64, 64, 32, 4, 3, 8)
    assert TileConfig.parse("128x32x16,w8,s2") == TileConfig(128, 32, 16, 8, 2, 8)
    assert TileConfig.parse(" 32x64x32, g4, w2 ") == TileConfig(32, 64, 32, 2, 3, 4)
    assert str(TileConfig(32, 64, 16)) == "32x64x16,w4,s3,g8"


@pytest.mark.parametrize("text, message", [
    ("64x64", "cannot parse tile"),
    ("", "cannot parse tile"),
    ("64x64x32,x4", "cannot parse tile"),
    ("64x64x32,w4,w8", "'w' is given twice"),
    ("64x64x24", "block_k=24 is invalid: block sizes must be powers of two from 16"),
    ("8x64x32", "block_m=8 is invalid"),
    ("64x512x32", "block_n=512 is invalid"),
    ("64x64x32,w3", "num_warps=3 is invalid: it must be a power of two"),
    ("64x64x32,w64", "num_warps=64 is invalid"),
    ("64x64x32,s0", "num_stages=0 is invalid"),
    ("64x64x32,g0", "group_m=0 is invalid"),
    (64, "tile must be text"),
])
def test_tile_parse_rejects(text, message):
    with pytest.raises(LatprofError, match=message):
        TileConfig.parse(text)
