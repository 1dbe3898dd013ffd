"""Triton convolution kernels with explicit tiles, and the analytic wave model.

Installs as `latprof.kernels`. On a machine without a GPU the kernels run (slowly) under
`TRITON_INTERPRET=1`, which Triton reads when the kernels are decorated, i.e. at the first
import of this package: set it before importing.
"""

from latprof.kernels.conv2d import (Conv2dLaunch, compiled_resources, conv2d, interpreted, k_iterations,
                                    kernel_resources, launch_grid)
from latprof.kernels.tiles import DEFAULT_TILE, TILE_CONFIGS, TileConfig, as_tile
from latprof.kernels.wave import (
    ARCH_LIMITS,
    COMPILED_REGS,
    PRESETS,
    DevicePreset,
    dot_note,
    estimate_regs_per_thread,
    estimate_smem_bytes,
    get_preset,
    predicted_edges,
    predicted_latency_curve,
    preset_from_identity,
    resident_blocks,
    tile_count,
    waves,
)

__all__ = [
    "ARCH_LIMITS", "COMPILED_REGS", "Conv2dLaunch", "DEFAULT_TILE", "PRESETS", "TILE_CONFIGS", "DevicePreset",
    "TileConfig", "as_tile", "compiled_resources", "conv2d", "dot_note", "estimate_regs_per_thread",
    "estimate_smem_bytes", "get_preset", "interpreted", "k_iterations", "kernel_resources", "launch_grid",
    "predicted_edges", "predicted_latency_curve", "preset_from_identity", "resident_blocks", "tile_count", "waves",
]
