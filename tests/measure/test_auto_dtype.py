"""`latprof sweep --dtype auto`: the dtype this device's deployments run in, chosen and said."""

from latprof.measure import cpu, device
from latprof.measure import sweep as sweeps
from latprof.tables import io as tbl


def test_bfloat16_where_the_cpu_has_bfloat16_matrix_instructions():
    assert cpu.best_dtype(["avx2", "avx512f", "amx_bf16", "amx_tile"])[0] == "bfloat16"
    assert cpu.best_dtype(["avx512f", "avx512_bf16"]) == ("bfloat16", "the CPU has AVX512-BF16 (avx512_bf16)")
    assert cpu.best_dtype(["avx2", "fma"])[0] == "float32" and cpu.best_dtype(None)[0] == "float32"
    gpu = device.Device("cuda", "NVIDIA H100", "nvidia-h100", 0, {})
    assert sweeps.resolve_auto_dtype(gpu)[0] == "float16"


def test_sweep_dtype_auto_measures_in_the_chosen_dtype_and_says_so(cli, tmp_path):
    want, why = cpu.best_dtype(device.cpu_device().identity["simd_flags"])
    r = cli("sweep", "--cin", "4", "--cout", "4,8", "--hw", "8", "--dtype", "auto", "--quick", "--no-progress",
            "--device", "cpu", "--out", tmp_path / "t.parquet")
    assert r.exit_code == 0, r.output
    assert f"dtype    {want}: {why}" in r.output
    assert set(tbl.read(tmp_path / "t.parquet").df["dtype"]) == {want}
