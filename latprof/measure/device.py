"""Which device to profile, what it is, and what software runs it (a table's provenance)."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import socket
import sys
from dataclasses import dataclass, field

import torch

import latprof
from latprof.errors import LatprofError


@dataclass(frozen=True)
class Device:
    """A device to profile. `slug` names its table (`tables/<slug>.parquet`)."""

    kind: str                      # "cpu" or "cuda"
    name: str                      # "AMD EPYC", "NVIDIA TITAN RTX"
    slug: str                      # "cpu-amd-epyc", "titanrtx"
    index: int | None = None       # CUDA ordinal
    identity: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def torch_device(self) -> torch.device:
        return torch.device("cpu") if self.kind == "cpu" else torch.device("cuda", self.index)


def normalise(text: str) -> str:
    """Lower-case alphanumerics only: `titan_rtx`, `TITAN RTX` and `Titan-RTX` compare equal."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def gpu_slug(name: str) -> str:
    return normalise(re.sub(r"(?i)^nvidia\s+", "", name)) or "gpu"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return sorted(line.split(":", 1)[1].split())
    except OSError:
        pass
    return []


def cpu_device() -> Device:
    name = cpu_name()
    flags = cpu_flags()
    simd = [f for f in flags if re.match(r"(avx|sse4|fma|amx|neon|sve)", f)]
    identity = {
        "cpu_model": name,
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "simd_flags": simd,
        "flags_sha1": hashlib.sha1(" ".join(flags).encode()).hexdigest()[:12],
    }
    slug = "cpu-" + re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", name.lower())).strip("-")
    return Device("cpu", name, slug, None, identity)


def visible_gpus() -> list[str]:
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def cuda_device(query: str | int) -> Device:
    """The visible CUDA device named by `query`: an index, or part of its name (`titan_rtx`)."""
    names = visible_gpus()
    if not names:
        raise LatprofError(
            "CUDA was asked for but this machine has no CUDA device "
            f"(torch {torch.__version__}, torch.cuda.is_available() is False). "
            "Profile the CPU with `--device cpu`, or run the sweep on a GPU machine.")
    listing = ", ".join(f"{i}: {n}" for i, n in enumerate(names))
    text = str(query)
    if text.isdigit():
        index = int(text)
        if index >= len(names):
            raise LatprofError(f"no CUDA device with index {index}; visible devices: {listing}")
    else:
        matches = [i for i, n in enumerate(names) if normalise(text) and normalise(text) in normalise(n)]
        if not matches:
            raise LatprofError(f"no visible CUDA device matches {text!r}; visible devices: {listing}")
        index = matches[0]
    props = torch.cuda.get_device_properties(index)
    identity = {
        "gpu_name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "sm_count": props.multi_processor_count,
        "memory_bytes": props.total_memory,
        "l2_bytes": getattr(props, "L2_cache_size", None),
        "uuid": str(getattr(props, "uuid", "")),
    }
    return Device("cuda", props.name, gpu_slug(props.name), index, identity)


def select(device: str | None = None, gpu: str | None = None) -> Device:
    """`--gpu NAME` wins; `--device cpu|cuda|cuda:N`; default: the first GPU if any, else the CPU."""
    if gpu is not None:
        return cuda_device(gpu)
    if device in (None, ""):
        return cuda_device(0) if torch.cuda.is_available() else cpu_device()
    if device == "cpu":
        return cpu_device()
    if device == "cuda" or device.startswith("cuda:"):
        return cuda_device(device.partition(":")[2] or 0)
    raise LatprofError(f"unknown device {device!r}; use `--device cpu`, `--device cuda[:N]` or `--gpu NAME`")


def software_versions(dev: Device | None = None) -> dict:
    """Versions of the software that can move latencies, in this process (with the driver on CUDA)."""
    versions = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "latprof": latprof.__version__,
        "triton": _module_version("triton"),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "mkldnn": torch.backends.mkldnn.is_available(),
    }
    if dev is not None and dev.kind == "cuda":
        versions["driver"] = _nvml_driver()
        versions["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    return versions


def host_fingerprint() -> str:
    """A short stable id of the host (hostname hashed, so tables shared between labs carry no names)."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:12]


def nvml_handle(dev: Device):
    """An NVML handle for clocks and temperature, or None when nvidia-ml-py is absent."""
    if dev.kind != "cuda":
        return None
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(dev.index)
    except pynvml.NVMLError:
        return None


def _nvml_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else version
    except (ImportError, Exception):  # NVML absent or failing: the driver stays unknown, not fatal
        return None


def _module_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None
