"""Shared memory and registers of the shipped Triton tiles, compiled without a GPU.

Triton compiles for a named target (`GPUTarget("cuda", 80, 32)`) on any machine, and ships
ptxas, whose `-v` prints the registers a kernel uses. This prints one JSON line per (compute
capability, dtype, tile) for the implicit-GEMM kernel on a 3x3 stride-1 NCHW conv: what
`kernels/wave.py` (`estimate_smem_bytes`, `COMPILED_REGS`) and tests/kernels/test_occupancy.py
were checked against. About 3 s per line on one core.

    python bench/probes/triton_resources.py [--cc 75,80,90] [--dtype float32,float16]

Uses Triton internals (`triton.compile`, `ASTSource`; written for triton 3.8).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import tempfile

os.environ["TRITON_INTERPRET"] = "0"   # decorate the kernels as compiled kernels

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from latprof.kernels import TILE_CONFIGS  # noqa: E402

conv2d = importlib.import_module("latprof.kernels.conv2d")
POINTERS = ("x_ptr", "w_ptr", "b_ptr", "y_ptr")
INTS = ("C_IN_G", "H", "W", "C_OUT_G", "H_OUT", "W_OUT", "M", "sxn", "sxc", "sxh", "sxw", "swo", "swi", "swh", "sww",
        "syn", "syc", "syh", "syw")
SHORT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def compile_tile(cc: int, dtype: str, tile):
    fn = conv2d._conv2d_igemm_kernel
    signature = {name: "constexpr" for name in fn.arg_names}
    signature.update({p: "*" + SHORT[dtype] for p in POINTERS})
    signature.update({i: "i32" for i in INTS})
    constants = dict(STRIDE_H=1, STRIDE_W=1, PAD_H=1, PAD_W=1, DIL_H=1, DIL_W=1, KH=3, KW=3, HAS_BIAS=False,
                     CI_INNER=False, INPUT_PRECISION="ieee" if dtype == "float32" else "tf32", UPCAST_DOT=False,
                     BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, BLOCK_K=tile.block_k, GROUP_M=tile.group_m)
    return triton.compile(ASTSource(fn, signature, constants), target=GPUTarget("cuda", cc, 32),
                          options={"num_warps": tile.num_warps, "num_stages": tile.num_stages})


def ptxas_registers(ptx: str, cc: int) -> tuple[int | None, int | None]:
    """(registers, spill store bytes) that ptxas reports for the PTX (sm_90a for Hopper's wgmma)."""
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    arch = f"sm_{cc}a" if cc >= 90 else f"sm_{cc}"
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(ptx)
        f.flush()
        log = subprocess.run([ptxas, "-v", f"--gpu-name={arch}", f.name, "-o", os.devnull],
                             capture_output=True, text=True).stderr
    regs, spill = re.search(r"Used (\d+) registers", log), re.search(r"(\d+) bytes spill stores", log)
    return (int(regs.group(1)) if regs else None), (int(spill.group(1)) if spill else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cc", default="70,75,80,90")
    ap.add_argument("--dtype", default="float32,float16,bfloat16")
    args = ap.parse_args()
    for cc in map(int, args.cc.split(",")):
        for dtype in args.dtype.split(","):
            if dtype == "bfloat16" and cc < 80:
                continue
            for tile in TILE_CONFIGS:
                kernel = compile_tile(cc, dtype, tile)
                ptx = kernel.asm["ptx"]
                regs, spill = ptxas_registers(ptx, cc)
                print(json.dumps({"cc": cc, "dtype": dtype, "tile": str(tile), "shared": kernel.metadata.shared,
                                  "regs": regs, "spill_bytes": spill, "mma": bool(re.search(r"\bw?gmma\.|\bmma\.", ptx)),
                                  "cp_async": "cp.async" in ptx, "triton": triton.__version__}), flush=True)


if __name__ == "__main__":
    main()
