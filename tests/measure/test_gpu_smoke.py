"""`bench/gpu_smoke.py` (`make gpu-smoke`) without a GPU: it skips and exits 0; its verdicts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_smoke.py"


@pytest.fixture(scope="module")
def smoke():
    spec = importlib.util.spec_from_file_location("gpu_smoke", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_says_it_skipped_and_exits_0(smoke, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert smoke.main(["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gpu-smoke: skipped: no CUDA GPU")
    assert not list(tmp_path.iterdir())                     # nothing written when nothing ran


def test_an_unknown_check_is_refused(smoke):
    with pytest.raises(SystemExit) as exc:
        smoke.main(["--only", "timing,bogus"])
    assert exc.value.code == 2


@pytest.mark.parametrize("ours, bench, verdict", [(100.0, 100.0, "PASS"), (104.9, 100.0, "PASS"),
                                                  (95.1, 100.0, "PASS"), (105.1, 100.0, "FAIL"),
                                                  (94.0, 100.0, "FAIL")])
def test_timing_verdict_is_plus_minus_5_percent(smoke, ours, bench, verdict):
    got, rel = smoke.timing_verdict(ours, bench)
    assert got == verdict and rel == pytest.approx(ours / bench - 1)


def test_edge_agreement(smoke):
    assert smoke.edge_agreement([129], [132], 4) == (1.0, 1.0)
    assert smoke.edge_agreement([129], [68, 132, 196], 4) == (1.0, pytest.approx(1 / 3))
    assert smoke.edge_agreement([65, 129, 193], [132], 4) == (pytest.approx(1 / 3), 1.0)
    assert smoke.edge_agreement([129], [140], 4) == (0.0, 0.0)
    assert smoke.edge_agreement([], [64], 4) == (1.0, 0.0)
