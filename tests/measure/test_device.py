"""Device selection and provenance (`latprof.measure.device`), on the CPU."""

import re
import socket

import pytest
import torch

import latprof
from latprof.errors import LatprofError
from latprof.measure import device as device

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error a CUDA-less machine gives")


@pytest.mark.parametrize("text", ["titan_rtx", "TITAN RTX", "Titan-RTX", " titan.rtx "])
def test_normalise_spellings_compare_equal(text):
    assert device.normalise(text) == "titanrtx"


def test_normalise_keeps_digits_and_drops_everything_else():
    assert device.normalise("A100-SXM4 (80GB)") == "a100sxm480gb"
    assert device.normalise("--") == ""


@pytest.mark.parametrize("name, slug", [
    ("NVIDIA TITAN RTX", "titanrtx"),
    ("NVIDIA GeForce RTX 3090", "geforcertx3090"),
    ("nvidia  A100-SXM4-80GB", "a100sxm480gb"),
    ("Tesla V100-PCIE-16GB", "teslav100pcie16gb"),   # only a leading "NVIDIA " is dropped
    ("NVIDIA ", "gpu"),                               # nothing left: a generic slug, never empty
])
def test_gpu_slug(name, slug):
    assert device.gpu_slug(name) == slug


def test_cpu_device_fields():
    dev = device.cpu_device()
    assert dev.kind == "cpu" and dev.index is None
    assert dev.name == device.cpu_name() and dev.name
    assert re.fullmatch(r"cpu-[a-z0-9]+(-[a-z0-9]+)*", dev.slug), dev.slug
    assert dev.torch_device == torch.device("cpu")
    ident = dev.identity
    assert set(ident) == {"cpu_model", "machine", "logical_cpus", "simd_flags", "flags_sha1"}
    assert ident["cpu_model"] == dev.name
    assert re.fullmatch(r"[0-9a-f]{12}", ident["flags_sha1"])
    assert all(re.match(r"(avx|sse4|fma|amx|neon|sve)", f) for f in ident["simd_flags"])
    assert ident["logical_cpus"] >= 1


def test_cpu_slug_is_derived_from_the_name(monkeypatch):
    monkeypatch.setattr(device, "cpu_name", lambda: "AMD EPYC 7B13 64-Core Processor")
    dev = device.cpu_device()
    assert dev.name == "AMD EPYC 7B13 64-Core Processor"
    assert dev.slug == "cpu-amd-epyc-7b13-64-core-processor"


def test_identity_does_not_take_part_in_equality():
    a = device.Device("cpu", "X", "cpu-x", None, {"flags_sha1": "a"})
    b = device.Device("cpu", "X", "cpu-x", None, {"flags_sha1": "b"})
    assert a == b and hash(a) == hash(b)


def test_select_cpu():
    assert device.select("cpu") == device.cpu_device()


@no_cuda
def test_select_default_without_cuda_is_the_cpu():
    assert device.select().kind == "cpu"
    assert device.select("").kind == "cpu"


@pytest.mark.parametrize("bad", ["bogus", "tpu", "CPU"])
def test_select_unknown_device_names_the_option(bad):
    with pytest.raises(LatprofError, match="--device") as err:
        device.select(bad)
    assert repr(bad) in str(err.value)


@no_cuda
@pytest.mark.parametrize("kw", [dict(device="cuda"), dict(device="cuda:1"), dict(gpu="titan_rtx")])
def test_select_cuda_without_cuda_says_to_use_the_cpu(kw):
    with pytest.raises(LatprofError, match="no CUDA device") as err:
        device.select(**kw)
    assert "--device cpu" in str(err.value)


def test_gpu_and_device_cpu_together_are_refused():
    with pytest.raises(LatprofError, match="--gpu 0 and --device cpu name different devices"):
        device.select(device="cpu", gpu="0")


def test_software_versions_without_a_device():
    v = device.software_versions()
    assert v["torch"] == torch.__version__
    assert v["latprof"] == latprof.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", v["python"])
    assert {"triton", "cuda", "cudnn", "mkldnn"} <= set(v)
    assert "driver" not in v and "cudnn_benchmark" not in v


def test_software_versions_of_the_cpu_have_no_driver():
    v = device.software_versions(device.cpu_device())
    assert "driver" not in v and "cudnn_benchmark" not in v


def test_host_fingerprint_is_short_stable_and_hides_the_name(monkeypatch):
    fp = device.host_fingerprint()
    assert re.fullmatch(r"[0-9a-f]{12}", fp)
    assert device.host_fingerprint() == fp
    assert socket.gethostname() not in fp
    monkeypatch.setattr(socket, "gethostname", lambda: "lab-a")
    a = device.host_fingerprint()
    monkeypatch.setattr(socket, "gethostname", lambda: "lab-b")
    b = device.host_fingerprint()
    assert a != b and re.fullmatch(r"[0-9a-f]{12}", a)
    monkeypatch.setattr(socket, "gethostname", lambda: "lab-a")
    assert device.host_fingerprint() == a


def test_nvml_handle_of_the_cpu_is_none():
    assert device.nvml_handle(device.cpu_device()) is None
