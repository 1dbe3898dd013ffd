"""Smaller refusals of the GPU path, without a GPU: bfloat16 below sm_80, the Triton version bound."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from latprof.errors import LatprofError
from latprof.measure import backends
from latprof.measure import device as devices


def gpu(cc: str) -> devices.Device:
    return devices.Device("cuda", "NVIDIA Fake", "fake", 0, {"compute_capability": cc})


@pytest.mark.parametrize("cc", ["7.0", "7.5"])
def test_bfloat16_below_sm_80_is_refused_with_the_fix(cc):
    with pytest.raises(LatprofError, match=r"no bfloat16 convolutions.*--dtype float16") as err:
        backends.check("cudnn", gpu(cc), {"bfloat16"})
    assert f"sm_{cc.replace('.', '')}" in str(err.value) and "\n" not in str(err.value)


def test_bfloat16_runs_from_sm_80_and_float16_everywhere():
    assert backends.check("cudnn", gpu("8.0"), {"bfloat16"}) is None
    assert backends.check("cudnn", gpu("7.5"), {"float16", "float32"}) is None
    assert backends.check("cudnn", devices.Device("cuda", "NVIDIA Fake", "fake", 0), {"bfloat16"}) is None  # unknown cc
    assert backends.check("cpu", devices.cpu_device(), {"bfloat16"}) is None


def test_a_bfloat16_sweep_on_a_turing_gpu_stops_before_measuring(monkeypatch, tmp_path):
    from latprof.measure import sweep as sweeps

    monkeypatch.setattr(devices, "select", lambda device=None, gpu_=None: gpu("7.5"))
    cfg = sweeps.SweepConfig(grid=dict(cin=[4], cout=[4], hw=[8], kernel=[3], stride=[1], groups=[1]),
                             dtype="bfloat16", out=tmp_path / "t.parquet", progress=False)
    with pytest.raises(LatprofError, match="bfloat16"):
        sweeps.run(cfg)
    assert not (tmp_path / "t.parquet").exists()


def test_the_triton_extra_requires_3_0():
    """The kernels use triton 3 APIs (input_precision, the interpreter's bf16 handling)."""
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    (bound,) = re.findall(r'"triton>=([0-9.]+)"', text)
    assert int(bound.split(".")[0]) >= 3
