"""Tile configurations for the Triton convolution kernels: data the profiler sweeps.

A tile is the work of one Triton program (one CUDA thread block). For the implicit-GEMM
kernel (`conv2d.py`) it covers `block_m` output pixels (rows of M = N*H_out*W_out) by
`block_n` output channels of one group, and walks the reduction K = C_in/groups*KH*KW in
chunks of `block_k`. For the depthwise kernel (`depthwise.py`) `block_m` pixels by
`block_n` channels, and `block_k` is unused (the KH*KW taps are unrolled).

The text form is what goes into `ConvSpec.tile` and the tables: "64x64x32,w4,s3,g8".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from latprof.errors import LatprofError

# tl.dot needs every dimension >= 16; above 256 a tile no longer fits registers/shared
# memory on any supported GPU, so such a config is a typo rather than an experiment.
MIN_BLOCK = 16
MAX_BLOCK = 256
MAX_WARPS = 32  # 1024 threads per block, the CUDA limit
MAX_STAGES = 8

_TEXT = re.compile(r"^(\d+)x(\d+)x(\d+)((?:,[wsg]\d+)*)$")
_FORMAT_HELP = ('expected "BMxBNxBK" optionally followed by ",wW" (num_warps), ",sS" (num_stages) '
                'and ",gG" (group_m), e.g. "64x64x32" or "64x64x32,w4,s3,g8"')


def _is_pow2(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


@dataclass(frozen=True)
class TileConfig:
    """One explicit kernel configuration (no autotuning: the profiler picks it).

    block_m, block_n, block_k: tile sizes in elements; powers of two in [16, 256].
    num_warps: warps per program (32 threads each); a power of two in [1, 32].
    num_stages: software-pipelining depth of the K loop on the GPU; in [1, 8].
    group_m: how many M-tiles are launched next to each other before moving to the next
        N-tile (L2 reuse of the weight tile, as in Triton's matmul tutorial); >= 1.
        It changes only the launch order, never the tile count.
    """

    block_m: int
    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 3
    group_m: int = 8

    def __post_init__(self) -> None:
        for name in ("block_m", "block_n", "block_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or not _is_pow2(value) or not MIN_BLOCK <= value <= MAX_BLOCK:
                raise LatprofError(
                    f"tile {name}={value!r} is invalid: block sizes must be powers of two from "
                    f"{MIN_BLOCK} (the smallest tl.dot shape) to {MAX_BLOCK}")
        if not isinstance(self.num_warps, int) or not _is_pow2(self.num_warps) \
                or self.num_warps > MAX_WARPS:
            raise LatprofError(f"tile num_warps={self.num_warps!r} is invalid: it must be a power of two "
                               f"from 1 to {MAX_WARPS} (at most 1024 threads per block)")
        if not isinstance(self.num_stages, int) or not 1 <= self.num_stages <= MAX_STAGES:
            raise LatprofError(f"tile num_stages={self.num_stages!r} is invalid: it must be from 1 to "
                               f"{MAX_STAGES}")
        if not isinstance(self.group_m, int) or self.group_m < 1:
            raise LatprofError(f"tile group_m={self.group_m!r} is invalid: it must be >= 1")

    @property
    def num_threads(self) -> int:
        """Threads per program (thread block)."""
        return self.num_warps * 32

    def __str__(self) -> str:
        return (f"{self.block_m}x{self.block_n}x{self.block_k},"
                f"w{self.num_warps},s{self.num_stages},g{self.group_m}")

    @classmethod
    def parse(cls, text: str) -> "TileConfig":
        """Parse "64x64x32" or "64x64x32,w4,s3" (",g8" optional); omitted options take defaults."""
        if not isinstance(text, str):
            raise LatprofError(f"tile must be text, got {type(text).__name__}; {_FORMAT_HELP}")
        compact = text.replace(" ", "").lower()
        match = _TEXT.match(compact)
        if match is None:
            raise LatprofError(f"cannot parse tile {text!r}: {_FORMAT_HELP}")
        block_m, block_n, block_k = (int(match.group(i)) for i in (1, 2, 3))
        options: dict[str, int] = {}
        names = {"w": "num_warps", "s": "num_stages", "g": "group_m"}
        for item in filter(None, match.group(4).split(",")):
            name = names[item[0]]
            if name in options:
                raise LatprofError(f"cannot parse tile {text!r}: {item[0]!r} is given twice")
            options[name] = int(item[1:])
        return cls(block_m, block_n, block_k, **options)


def as_tile(tile: "TileConfig | str") -> TileConfig:
    """Accept a TileConfig or its text form (what `ConvSpec.tile` holds)."""
    if isinstance(tile, TileConfig):
        return tile
    return TileConfig.parse(tile)


DEFAULT_TILE = TileConfig(64, 64, 32, num_warps=4, num_stages=3, group_m=8)

# A small sweep set: square and skinny tiles, so both the M (pixels) and the N (output
# channel) granularity of the staircase can be observed. 32-wide tiles suit small late
# layers (few pixels), 128-wide tiles suit large early layers.
TILE_CONFIGS: list[TileConfig] = [
    DEFAULT_TILE,
    TileConfig(32, 32, 32, num_warps=2, num_stages=3),
    TileConfig(64, 32, 32, num_warps=2, num_stages=4),
    TileConfig(32, 64, 32, num_warps=2, num_stages=4),
    TileConfig(128, 64, 32, num_warps=4, num_stages=4),
    TileConfig(64, 128, 32, num_warps=4, num_stages=4),
    TileConfig(128, 128, 32, num_warps=8, num_stages=3),
]
