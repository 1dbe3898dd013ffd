"""The wave model's device taken from a table's recorded GPU (SM count, compute capability, shared
memory) rather than from its name: `latprof.kernels.preset_from_identity`, `latprof steps
--predict` and `latprof wave --table`. No GPU needed."""

from __future__ import annotations

import dataclasses

import pytest

from latprof.cli.steps import _wave_device
from latprof.errors import LatprofError
from latprof.kernels import ARCH_LIMITS, PRESETS, TileConfig, predicted_edges, preset_from_identity, waves
from latprof.spec import ConvSpec
from synthetic import META, model_table

H100_PCIE = {"kind": "cuda", "name": "NVIDIA H100 PCIe", "slug": "h100pcie", "gpu_name": "NVIDIA H100 PCIe",
             "compute_capability": "9.0", "sm_count": 114}


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_is_rebuilt_from_its_sm_count_and_compute_capability(name):
    p = PRESETS[name]
    built = preset_from_identity({"sm_count": p.sm_count, "compute_capability": p.compute_capability})
    assert dataclasses.replace(built, name=p.name) == p


def test_an_h100_pcie_gets_its_own_114_sms_not_the_sxm5s_132():
    dev = preset_from_identity(H100_PCIE)
    assert (dev.name, dev.sm_count, dev.smem_per_sm_bytes) == ("NVIDIA H100 PCIe", 114, 228 * 1024)
    spec = ConvSpec(c_in=256, c_out=512, h=28, w=28, batch=8, dtype="float16", backend="triton")
    tile = TileConfig.parse("64x64x32,w4,s3")
    assert predicted_edges(spec, tile, dev) != predicted_edges(spec, tile, PRESETS["h100"])
    assert waves(spec, tile, dev) > waves(spec, tile, PRESETS["h100"])


def test_recorded_limits_win_over_the_architecture_table():
    """An H200 (sm_90, 132 SMs), and a MIG slice of an A100 (14 SMs) with the limits CUDA reported."""
    h200 = preset_from_identity({"gpu_name": "NVIDIA H200", "compute_capability": "9.0", "sm_count": 132,
                                 "smem_per_sm_bytes": 233472, "smem_per_block_bytes": 232448,
                                 "regs_per_sm": 65536, "max_threads_per_sm": 2048})
    assert (h200.sm_count, h200.smem_per_sm_bytes, h200.smem_per_block_bytes) == (132, 233472, 232448)
    assert h200.max_blocks_per_sm == ARCH_LIMITS["9.0"][0]
    mig = preset_from_identity({"gpu_name": "NVIDIA A100-SXM4-40GB MIG 1g.5gb", "compute_capability": "8.0",
                                "sm_count": 14})
    assert mig.sm_count == 14 and mig.max_blocks_per_sm == 32


def test_an_ada_card_uses_its_own_limits():
    dev = preset_from_identity({"compute_capability": "8.9", "sm_count": 128})
    assert (dev.name, dev.max_blocks_per_sm, dev.max_threads_per_sm) == ("sm_89", 24, 1536)


@pytest.mark.parametrize("identity", [
    {},                                                    # a CPU table or an old one
    {"compute_capability": "9.0"},                         # no SM count
    {"sm_count": 132},                                     # no compute capability
    {"sm_count": 80, "compute_capability": "6.1"},         # an architecture the table does not know
    {"sm_count": "132", "compute_capability": "9.0"},      # not a count
])
def test_no_preset_without_what_the_model_needs(identity):
    assert preset_from_identity(identity) is None


# --- the CLI's choice -----------------------------------------------------------------------

def test_preset_option_wins_then_the_recorded_device_then_the_name():
    assert _wave_device(H100_PCIE, "a100") == PRESETS["a100"]
    assert _wave_device(H100_PCIE, None).sm_count == 114
    assert _wave_device({"name": "NVIDIA TITAN RTX"}, None) == PRESETS["titan_rtx"]   # a table without sm_count


def test_a_device_known_neither_way_asks_for_a_preset():
    with pytest.raises(LatprofError, match="pick one with --preset"):
        _wave_device({"name": "NVIDIA H200", "sm_count": 132}, None)


@pytest.fixture(scope="module")
def pcie_table(tmp_path_factory):
    meta = {**META, "device": H100_PCIE}
    return model_table(tmp_path_factory.mktemp("wave") / "h100pcie.parquet", "small_cifar10", every=8, meta=meta)


def test_wave_takes_the_gpu_from_a_table(cli, pcie_table):
    r = cli("wave", "small_cifar10", "--table", pcie_table)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("NVIDIA H100 PCIe: 114 SMs")
    r = cli("wave", "small_cifar10")
    assert r.exit_code == 0 and r.output.startswith("titan_rtx: 72 SMs")
    r = cli("wave", "small_cifar10", "--table", pcie_table, "--preset", "h100")
    assert r.exit_code == 0 and r.output.startswith("h100: 132 SMs")
