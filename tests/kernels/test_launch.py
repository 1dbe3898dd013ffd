"""`Conv2dLaunch`: the launcher a profiler times validates once; each call only launches."""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F

from latprof.kernels import Conv2dLaunch, TileConfig
from latprof.measure import backends
from latprof.measure.device import cpu_device
from latprof.spec import ConvSpec

conv2d_module = importlib.import_module("latprof.kernels.conv2d")


def test_the_launcher_validates_once_and_reuses_its_output(device, monkeypatch):
    checks = []
    real = conv2d_module._check
    monkeypatch.setattr(conv2d_module, "_check", lambda *a: checks.append(1) or real(*a))
    x = torch.randn(1, 4, 5, 5, device=device)
    w = torch.randn(6, 4, 3, 3, device=device)
    launch = Conv2dLaunch(x, w, None, 1, 1, 1, 1, TileConfig(16, 16, 16, num_warps=1, num_stages=1))
    first, second = launch(), launch()
    assert len(checks) == 1 and first is second is launch.out
    torch.testing.assert_close(first, F.conv2d(x, w, padding=1), atol=1e-4, rtol=1e-4)
    assert launch.compiled is not None or device == "cpu"   # the interpreter returns no compiled kernel


def test_the_triton_backend_times_a_prevalidated_launch():
    spec = ConvSpec(c_in=4, c_out=6, h=5, w=5, backend="triton", tile="16x16x16,w1,s1")
    run = backends.make_runner(spec, cpu_device())
    assert isinstance(run, Conv2dLaunch) and run.tile == TileConfig.parse("16x16x16,w1,s1")
