"""Kernel tests run under the Triton interpreter on CPU tensors unless told otherwise.

Triton reads TRITON_INTERPRET when a kernel is *decorated*, i.e. when latprof.kernels is
first imported, so it is set here, before any test module imports the kernels. An explicit
TRITON_INTERPRET=0 in the environment wins: the correctness tests then run compiled
kernels on CUDA tensors (see the `device` fixture), and the GPU timing tests run too.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from latprof.kernels import interpreted  # noqa: E402


@pytest.fixture
def device() -> str:
    """Where the correctness tests put their tensors: the CPU under the interpreter, else CUDA."""
    if interpreted():
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    pytest.skip("latprof.kernels was imported with TRITON_INTERPRET unset or 0 and there is no CUDA "
                "device; run `TRITON_INTERPRET=1 pytest tests/kernels`")


@pytest.fixture(autouse=True)
def _ieee_fp32():
    """fp32 references are exact fp32: keep the kernel (and cuDNN) off TF32 during tests."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = saved
