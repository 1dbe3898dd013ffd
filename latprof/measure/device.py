"""Which device to profile, what it is, and what software runs it (a table's provenance)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import socket
import sys
import warnings
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


def gpu_identity(index: int) -> dict:
    """What the CUDA runtime says GPU `index` is: the fields a table records and the wave model
    reads its occupancy limits from (`latprof.kernels.preset_from_identity`); under MIG these are
    the instance's (its SM count and memory), not the whole GPU's."""
    props = torch.cuda.get_device_properties(index)
    pci = [getattr(props, f"pci_{part}_id", None) for part in ("domain", "bus", "device")]
    return {
        "gpu_name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "sm_count": props.multi_processor_count,
        "memory_bytes": props.total_memory,
        "l2_bytes": getattr(props, "L2_cache_size", None),
        "smem_per_sm_bytes": getattr(props, "shared_memory_per_multiprocessor", None),
        "smem_per_block_bytes": getattr(props, "shared_memory_per_block_optin", None),
        "regs_per_sm": getattr(props, "regs_per_multiprocessor", None),
        "max_threads_per_sm": getattr(props, "max_threads_per_multi_processor", None),
        "uuid": str(getattr(props, "uuid", "")),
        "pci_bus_id": "{:08x}:{:02x}:{:02x}.0".format(*pci) if None not in pci else None,
    }


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", text.lower()) if t]


def _token_match(query: str, name: str) -> bool:
    """`query` (normalised) spells a run of whole words of `name`: `titan_rtx` and `4090` match
    'NVIDIA GeForce RTX 4090' / 'NVIDIA TITAN RTX', `a10` does not match 'NVIDIA A100-SXM4-80GB'."""
    words = _tokens(name)
    return any("".join(words[i:j]) == query for i in range(len(words)) for j in range(i + 1, len(words) + 1))


def match_gpu(query: str | int, names: list[str]) -> int:
    """The index of the visible GPU `query` names, among `names` (index i: CUDA ordinal i).

    Digits are an index when they are a valid one; otherwise (and for any other text) a name: an
    exact match of the whole name or its slug first (`a100sxm480gb`, `NVIDIA A10`), then a run
    of whole words of the name (`titan_rtx`, `4090`, `a100`). Several GPUs of one name are one
    model: the first is taken (`--gpu N` picks another). Matches of different names are refused
    with the candidates listed, as is text that matches nothing."""
    listing = ", ".join(f"{i}: {n}" for i, n in enumerate(names))
    text = str(query).strip()
    if text.isdigit() and int(text) < len(names):
        return int(text)
    want = normalise(text)
    found = [i for i, n in enumerate(names) if want and want in (normalise(n), gpu_slug(n))]
    if not found:
        found = [i for i, n in enumerate(names) if want and _token_match(want, n)]
    if not found:
        what = f"no CUDA device with index {text} and none named {text!r}" if text.isdigit() else \
            f"no visible CUDA device matches {text!r}"
        raise LatprofError(f"{what}; visible devices: {listing}; pick one with --gpu INDEX or --gpu NAME")
    distinct = {names[i] for i in found}
    if len(distinct) > 1:
        candidates = ", ".join(f"{i}: {names[i]}" for i in found)
        raise LatprofError(f"--gpu {text!r} matches {len(distinct)} different GPUs ({candidates}); "
                           "give more of the name, or the index (--gpu 0)")
    return found[0]


def cuda_device(query: str | int) -> Device:
    """The visible CUDA device named by `query` (`match_gpu`: an index, or its name)."""
    names = visible_gpus()
    if not names:
        raise LatprofError(
            "CUDA was asked for but this machine has no CUDA device "
            f"(torch {torch.__version__}, torch.cuda.is_available() is False). "
            "Profile the CPU with `--device cpu`, or run the sweep on a GPU machine.")
    index = match_gpu(query, names)
    identity = gpu_identity(index)
    return Device("cuda", identity["gpu_name"], gpu_slug(identity["gpu_name"]), index, identity)


def select(device: str | None = None, gpu: str | None = None) -> Device:
    """`--gpu NAME` wins; `--device cpu|cuda|cuda:N`; default: the first GPU if any, else the CPU."""
    if gpu is not None:
        if device not in (None, "") and not device.startswith("cuda"):
            raise LatprofError(f"--gpu {gpu} and --device {device} name different devices; give one of them")
        return cuda_device(gpu)
    if device in (None, ""):
        return cuda_device(0) if torch.cuda.is_available() else cpu_device()
    if device == "cpu":
        return cpu_device()
    if device == "cuda" or device.startswith("cuda:"):
        return cuda_device(device.partition(":")[2] or 0)
    raise LatprofError(f"unknown device {device!r}; use `--device cpu`, `--device cuda[:N]` or `--gpu NAME`")


def software_versions(dev: Device | None = None) -> dict:
    """Versions of the software that can move latencies, in this process; on CUDA also the driver
    and the settings that choose kernels (`cuda_flags`) as they are now: a sweep reads them inside
    its clock, which fixes them (`timing.CudaClock`)."""
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
        versions.update(cuda_flags())
    return versions


def cuda_flags() -> dict:
    """The process-wide torch settings that change which CUDA kernels run: cuDNN autotuning
    (`cudnn.benchmark`: each new shape tries several algorithms and keeps the fastest) and TF32
    (float32 convs and matmuls computed with 10-bit mantissas on sm_80+: a "float32" table of an
    A100/H100 measured with TF32 on is a TF32 table)."""
    return {
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
    }


@contextlib.contextmanager
def cuda_settings(cudnn_benchmark: bool | None = None, tf32: bool | None = None):
    """Fix cuDNN autotuning and TF32 (cuDNN convs and matmuls) for the `with` block, restoring
    what the process had on exit; None leaves a setting as it is. The flags are torch's and
    process-wide; they are safe to set without a GPU."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32)
    try:
        if cudnn_benchmark is not None:
            cudnn.benchmark = bool(cudnn_benchmark)
        if tf32 is not None:
            cudnn.allow_tf32 = matmul.allow_tf32 = bool(tf32)
        yield
    finally:
        cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved


def host_fingerprint() -> str:
    """A short stable id of the host (hostname hashed, so tables shared between labs carry no names)."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:12]


def nvml_handle(dev: Device):
    """The NVML handle of `dev` for clocks, temperature and throttling, or None.

    Found by the CUDA device's UUID (`GPU-...`, or `MIG-...` for a MIG instance, whose parent
    GPU's handle is returned: clocks are the whole GPU's), else by its PCI bus id. Never by
    index: NVML numbers GPUs in PCI order, CUDA fastest-first unless CUDA_DEVICE_ORDER=PCI_BUS_ID,
    and CUDA_VISIBLE_DEVICES and MIG renumber them. None, silently, without nvidia-ml-py (an
    optional extra); None with a warning when NVML fails or cannot find the device."""
    if dev.kind != "cuda":
        return None
    try:
        import pynvml
    except ImportError:
        return None
    what = f"{dev.name}'s clocks, temperature and throttling go unrecorded"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        warnings.warn(f"NVML did not start ({exc}): {what}", RuntimeWarning, stacklevel=2)
        return None
    uuid = str(dev.identity.get("uuid") or "")
    lookups = [(pynvml.nvmlDeviceGetHandleByUUID, u)
               for u in ([uuid] if uuid.startswith(("GPU-", "MIG-")) else [f"GPU-{uuid}", f"MIG-{uuid}"])
               if uuid]
    bus = dev.identity.get("pci_bus_id")
    if bus:
        by_bus = getattr(pynvml, "nvmlDeviceGetHandleByPciBusId_v2", None) or pynvml.nvmlDeviceGetHandleByPciBusId
        lookups.append((by_bus, bus))
    for lookup, key in lookups:
        try:
            handle = lookup(key)
        except pynvml.NVMLError:
            continue
        if key.startswith("MIG-") and hasattr(pynvml, "nvmlDeviceGetDeviceHandleFromMigDeviceHandle"):
            with contextlib.suppress(pynvml.NVMLError):
                handle = pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
        return handle
    warnings.warn(f"NVML knows no GPU with UUID {uuid or '?'} or PCI bus id {bus or '?'} "
                  f"(cuda:{dev.index}): {what}", RuntimeWarning, stacklevel=2)
    return None


def nvml_uuid(handle) -> str | None:
    """The UUID NVML reports for `handle` (`GPU-...`), to check it against the CUDA device's."""
    import pynvml

    try:
        value = pynvml.nvmlDeviceGetUUID(handle)
    except pynvml.NVMLError:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


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
