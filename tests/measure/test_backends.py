"""Backends (`latprof.measure.backends`): which backend runs where, the runner's output against
`torch.nn.functional.conv2d`, and the memory a runner holds, on the CPU."""

import pytest
import torch
import torch.nn.functional as F

from latprof.errors import LatprofError
from latprof.measure import backends as backends
from latprof.measure.device import Device, cpu_device
from latprof.spec import ConvSpec

CPU = cpu_device()
FAKE_GPU = Device("cuda", "NVIDIA Fake", "fake", 0)   # never used to allocate; only its kind is read


def test_default_backend():
    assert backends.default_backend(CPU) == "cpu"
    assert backends.default_backend(FAKE_GPU) == "cudnn"


@pytest.mark.parametrize("backend", ["cudnn", "triton"])
def test_check_refuses_gpu_backends_on_the_cpu(backend):
    with pytest.raises(LatprofError, match=f"--backend {backend} needs a CUDA device") as err:
        backends.check(backend, CPU)
    assert "--backend cpu" in str(err.value)


def test_check_refuses_the_cpu_backend_on_a_gpu():
    with pytest.raises(LatprofError, match="--device cpu"):
        backends.check("cpu", FAKE_GPU)


def test_check_accepts_the_cpu_backend_on_the_cpu():
    assert backends.check("cpu", CPU) is None


@pytest.mark.parametrize("spec, want", [
    # input 2*3*10*12 = 720, output 2*8*5*6 = 480 (h_out = (10+2-3)//2+1 = 5, w_out = (12+2-3)//2+1 = 6),
    # weight 8*3*3*3 = 216: 1416 floats of 4 bytes
    (ConvSpec(c_in=3, c_out=8, h=10, w=12, stride_h=2, stride_w=2, batch=2), 1416 * 4),
    # the same in half precision: 2 bytes each
    (ConvSpec(c_in=3, c_out=8, h=10, w=12, stride_h=2, stride_w=2, batch=2, dtype="float16"), 1416 * 2),
    (ConvSpec(c_in=3, c_out=8, h=10, w=12, stride_h=2, stride_w=2, batch=2, dtype="bfloat16"), 1416 * 2),
    # grouped 1x1, no padding: input 4*5*5 = 100, output 8*5*5 = 200, weight 8*(4/2)*1*1 = 16
    (ConvSpec(c_in=4, c_out=8, h=5, w=5, kernel_h=1, kernel_w=1, pad_h=0, pad_w=0, groups=2), 316 * 4),
    # depthwise 3x3: input 6*7*7 = 294, output 294, weight 6*1*3*3 = 54
    (ConvSpec(c_in=6, c_out=6, h=7, w=7, groups=6), 642 * 4),
])
def test_nbytes_by_hand(spec, want):
    assert backends.nbytes(spec) == want


def test_nbytes_matches_the_tensors_a_runner_holds():
    spec = ConvSpec(c_in=5, c_out=7, h=9, w=11, stride_h=2, stride_w=1, batch=3)
    x, w = backends.tensors(spec, CPU)
    out = backends.make_runner(spec, CPU)()
    held = sum(t.numel() * t.element_size() for t in (x, w, out))
    assert backends.nbytes(spec) == held


SPECS = [
    ConvSpec(c_in=3, c_out=5, h=9, w=7),                                             # odd sizes, 3x3
    ConvSpec(c_in=4, c_out=6, h=8, w=8, stride_h=2, stride_w=2, batch=2),            # strided
    ConvSpec(c_in=4, c_out=8, h=6, w=6, kernel_h=1, kernel_w=1, pad_h=0, pad_w=0, groups=2),
    ConvSpec(c_in=6, c_out=6, h=7, w=5, groups=6),                                   # depthwise
    ConvSpec(c_in=3, c_out=4, h=9, w=9, kernel_h=3, kernel_w=5, pad_h=1, pad_w=2, dilation_h=2),
    ConvSpec(c_in=4, c_out=4, h=6, w=6, layout="nhwc"),                              # channels_last
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.label())
def test_cpu_runner_matches_torch_conv2d(spec):
    run = backends.make_runner(spec, CPU)
    assert callable(run)
    out = run()
    x, w = backends.tensors(spec, CPU)        # the same seed: the runner's own input and weight
    want = F.conv2d(x, w, None, (spec.stride_h, spec.stride_w), (spec.pad_h, spec.pad_w),
                    (spec.dilation_h, spec.dilation_w), spec.groups)
    assert out.shape == (spec.batch, spec.c_out, spec.h_out, spec.w_out)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    assert out.is_inference()                 # the runner runs under inference_mode
    torch.testing.assert_close(run(), out)    # inputs are allocated once: calls repeat exactly


def test_tensors_follow_dtype_and_layout():
    spec = ConvSpec(c_in=4, c_out=8, h=5, w=5, groups=2, batch=2, dtype="bfloat16", layout="nhwc")
    x, w = backends.tensors(spec, CPU)
    assert x.shape == (2, 4, 5, 5) and w.shape == (8, 2, 3, 3)
    assert x.dtype == w.dtype == torch.bfloat16
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert w.is_contiguous(memory_format=torch.channels_last)
    a, _ = backends.tensors(spec, CPU, seed=0)
    b, _ = backends.tensors(spec, CPU, seed=1)
    assert torch.equal(a, x) and not torch.equal(a, b)


def test_reference_runner_on_the_cpu_is_float32_whatever_is_asked():
    label, run = backends.reference_runner(CPU, "float16")
    spec = backends.REFERENCE_SPEC["cpu"]
    assert label == spec.label() and "float32" in label
    out = run()
    assert out.shape == (spec.batch, spec.c_out, spec.h_out, spec.w_out) and out.dtype == torch.float32
