"""NVML without a GPU: a fake `pynvml` module checks that handles are found by the CUDA device's
UUID or PCI bus id (never by index), that NVML errors warn and never end a sweep, and which
throttle reasons flag a row."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from latprof.measure import device as devices
from latprof.measure.timing import CudaClock

UUID0 = "6f2c1a9e-0000-4000-8000-00000000aaaa"
UUID1 = "6f2c1a9e-0000-4000-8000-00000000bbbb"
MIG = "1d3e5f70-0000-4000-8000-00000000cccc"


class FakeNVML(types.ModuleType):
    """Two GPUs in PCI order (NVML index 0 at bus 0x17, 1 at bus 0x65) and one MIG instance on
    GPU 1. `fail`: function name -> the NVMLError subclass it raises."""

    NVML_CLOCK_SM, NVML_TEMPERATURE_GPU = 1, 0

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):  # noqa: N801 (pynvml's names)
        pass

    class NVMLError_NotFound(NVMLError):  # noqa: N801
        pass

    class NVMLError_GpuIsLost(NVMLError):  # noqa: N801
        pass

    def __init__(self, reasons: int = 0, fail: dict | None = None, event_api: bool = True):
        super().__init__("pynvml")
        self.gpus = {f"GPU-{UUID0}": "gpu0", f"GPU-{UUID1}": "gpu1"}
        self.buses = {"00000000:17:00.0": "gpu0", "00000000:65:00.0": "gpu1"}
        self.migs = {f"MIG-{MIG}": "mig1"}
        self.reasons, self.fail, self.calls = reasons, dict(fail or {}), []
        # nvidia-ml-py >= 12.535 spells it "event reasons"; older releases only "throttle reasons"
        spelling = "EventReasons" if event_api else "ThrottleReasons"
        setattr(self, f"nvmlDeviceGetCurrentClocks{spelling}", self._reasons)

    def _call(self, name):
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]("fake NVML error")

    def nvmlInit(self):  # noqa: N802
        self._call("nvmlInit")

    def nvmlDeviceGetHandleByIndex(self, index):  # noqa: N802
        self._call("nvmlDeviceGetHandleByIndex")
        return f"gpu{index}"

    def nvmlDeviceGetHandleByUUID(self, uuid):  # noqa: N802
        self._call("nvmlDeviceGetHandleByUUID")
        handle = self.gpus.get(uuid) or self.migs.get(uuid)
        if handle is None:
            raise self.NVMLError_NotFound(uuid)
        return handle

    def nvmlDeviceGetHandleByPciBusId_v2(self, bus):  # noqa: N802
        self._call("nvmlDeviceGetHandleByPciBusId_v2")
        if bus not in self.buses:
            raise self.NVMLError_NotFound(bus)
        return self.buses[bus]

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle):  # noqa: N802
        self._call("nvmlDeviceGetDeviceHandleFromMigDeviceHandle")
        return {"mig1": "gpu1"}[handle]

    def nvmlDeviceGetUUID(self, handle):  # noqa: N802
        return {v: k for k, v in self.gpus.items()}[handle].encode()

    def nvmlDeviceGetClockInfo(self, handle, which):  # noqa: N802
        self._call("nvmlDeviceGetClockInfo")
        return 1500

    def nvmlDeviceGetTemperature(self, handle, which):  # noqa: N802
        self._call("nvmlDeviceGetTemperature")
        return 70

    def _reasons(self, handle):
        self._call("reasons")
        return self.reasons


@pytest.fixture
def nvml(monkeypatch):
    """Install a fake pynvml; returns a function(**kw) making (and installing) another one."""
    def install(**kw):
        fake = FakeNVML(**kw)
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        return fake
    return install


def gpu(index: int, uuid: str = "", bus: str | None = None) -> devices.Device:
    """A CUDA device as `cuda_device` describes it (CUDA ordinal `index`)."""
    return devices.Device("cuda", "NVIDIA Fake", "fake", index, {"uuid": uuid, "pci_bus_id": bus})


# --- handles ------------------------------------------------------------------------------

def test_handle_is_found_by_uuid_not_by_the_cuda_index(nvml):
    """CUDA_VISIBLE_DEVICES=1: CUDA's device 0 is NVML's GPU 1."""
    fake = nvml()
    assert devices.nvml_handle(gpu(0, UUID1)) == "gpu1"
    assert "nvmlDeviceGetHandleByIndex" not in fake.calls


def test_a_uuid_with_its_prefix_is_used_as_it_is(nvml):
    nvml()
    assert devices.nvml_handle(gpu(0, f"GPU-{UUID0}")) == "gpu0"


def test_a_mig_instance_reads_its_parent_gpu(nvml):
    fake = nvml()
    assert devices.nvml_handle(gpu(0, MIG)) == "gpu1"
    assert "nvmlDeviceGetDeviceHandleFromMigDeviceHandle" in fake.calls


def test_handle_falls_back_to_the_pci_bus_id(nvml):
    nvml()
    assert devices.nvml_handle(gpu(0, "", "00000000:65:00.0")) == "gpu1"
    assert devices.nvml_handle(gpu(0, "00000000-dead-beef-0000-000000000000", "00000000:17:00.0")) == "gpu0"


def test_an_unknown_device_warns_and_gives_none(nvml):
    fake = nvml()
    with pytest.warns(RuntimeWarning, match=r"NVML knows no GPU with UUID .* \(cuda:3\)"):
        assert devices.nvml_handle(gpu(3, "00000000-dead-beef-0000-000000000000", "00000000:99:00.0")) is None
    assert "nvmlDeviceGetHandleByIndex" not in fake.calls


def test_nvml_that_does_not_start_warns_and_gives_none(nvml):
    nvml(fail={"nvmlInit": FakeNVML.NVMLError})
    with pytest.warns(RuntimeWarning, match="NVML did not start"):
        assert devices.nvml_handle(gpu(0, UUID0)) is None


def test_no_pynvml_gives_none_silently(monkeypatch, recwarn):
    monkeypatch.setitem(sys.modules, "pynvml", None)        # import pynvml raises ImportError
    assert devices.nvml_handle(gpu(0, UUID0)) is None
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_nvml_uuid_reads_the_handles_uuid(nvml):
    nvml()
    assert devices.nvml_uuid("gpu1") == f"GPU-{UUID1}"


# --- readings during a sweep --------------------------------------------------------------

class Idle:
    """Just enough of torch.cuda for a clock whose samples are not under test here."""

    def current_device(self):
        return 0

    def set_device(self, device):
        pass


def reading() -> dict:
    """What a clock holding the handle of GPU 0 reads from the installed pynvml."""
    clock = CudaClock(torch.device("cuda", 0), l2_flush=False, nvml_handle="gpu0", runtime=Idle())
    return clock._read_nvml()


@pytest.mark.parametrize("reasons, throttled", [
    (0x0, False),
    (0x1, False),                       # GPU idle
    (0x2, False),                       # applications clocks setting
    (0x4, False),                       # SW power cap: set on most boards under load
    (0x10, False),                      # sync boost
    (0x100, False),                     # display clock setting
    (0x1 | 0x2 | 0x4 | 0x10 | 0x100, False),
    (0x8, True),                        # HW slowdown
    (0x20, True),                       # SW thermal slowdown
    (0x40, True),                       # HW thermal slowdown
    (0x80, True),                       # HW power brake
    (0x4 | 0x40, True),
])
def test_only_reasons_that_lower_clocks_flag_a_row(nvml, reasons, throttled):
    nvml(reasons=reasons)
    assert reading() == {"gpu_clock_mhz": 1500.0, "gpu_temp_c": 70.0, "throttled": throttled}


def test_older_pynvml_spelling_of_the_reasons(nvml):
    nvml(reasons=0x40, event_api=False)
    assert reading()["throttled"] is True


def test_a_reading_nvml_refuses_warns_once_and_the_others_go_on(nvml):
    fake = nvml(reasons=0x40, fail={"reasons": FakeNVML.NVMLError_NotSupported})
    clock = CudaClock(torch.device("cuda", 0), l2_flush=False, nvml_handle="gpu0", runtime=Idle())
    with pytest.warns(RuntimeWarning, match="NVML cannot read throttled"):
        first = clock._read_nvml()
    assert first == {"gpu_clock_mhz": 1500.0, "gpu_temp_c": 70.0}
    fake.calls.clear()
    assert clock._read_nvml() == first                      # not asked again, no second warning
    assert "reasons" not in fake.calls


def test_a_lost_gpu_leaves_rows_without_readings(nvml):
    lost = FakeNVML.NVMLError_GpuIsLost
    fake = nvml(fail={"nvmlDeviceGetClockInfo": lost, "nvmlDeviceGetTemperature": lost, "reasons": lost})
    clock = CudaClock(torch.device("cuda", 0), l2_flush=False, nvml_handle="gpu0", runtime=Idle())
    with pytest.warns(RuntimeWarning):
        assert clock._read_nvml() == {}
    assert clock._read_nvml() == {} and fake.calls.count("reasons") == 1


def test_no_handle_no_readings():
    clock = CudaClock(torch.device("cuda", 0), l2_flush=False, runtime=Idle())
    assert clock._read_nvml() == {} and clock.gpu_state() == {}
