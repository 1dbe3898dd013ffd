"""The CUDA options of the command line, checked on the CPU: `latprof sweep --cudnn-benchmark`
holds the flag (and TF32 stays as the CUDA clock sets it) for the whole sweep and restores it."""

from __future__ import annotations

import pytest
import torch

from latprof.measure import device as devices
from latprof.measure import sweep as sweeps


@pytest.fixture
def seen(monkeypatch):
    """The CUDA flags while `sweeps.run` runs (the real sweep: a 1-shape CPU grid)."""
    flags = []
    real = sweeps.run

    def run(cfg):
        flags.append(devices.cuda_flags())
        return real(cfg)
    monkeypatch.setattr(sweeps, "run", run)
    saved = torch.backends.cudnn.benchmark
    yield flags
    torch.backends.cudnn.benchmark = saved


@pytest.mark.parametrize("option, on", [("--cudnn-benchmark", True), ("--no-cudnn-benchmark", False), (None, False)])
def test_sweep_holds_cudnn_benchmark_as_asked_and_restores_it(cli, seen, option, on):
    torch.backends.cudnn.benchmark = not on                  # the process had the other setting
    args = ["sweep", "--device", "cpu", "--cin", "4", "--cout", "4", "--hw", "8", "--quick", "--no-progress",
            "--out", "t.parquet"] + ([option] if option else [])
    r = cli(*args)
    assert r.exit_code == 0, r.output
    assert [f["cudnn_benchmark"] for f in seen] == [on]
    assert torch.backends.cudnn.benchmark is (not on)


def test_sweep_help_says_float32_runs_without_tf32(cli):
    r = cli("sweep", "--help")
    text = " ".join(r.output.split())
    assert "--cudnn-benchmark / --no-cudnn-benchmark" in text and "TF32 off" in text
