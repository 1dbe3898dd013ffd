"""`--gpu` matching, a GPU's recorded identity and the CUDA settings a table records, on mocked
device lists (no GPU needed)."""

from __future__ import annotations

import types

import pytest
import torch

from latprof.errors import LatprofError
from latprof.measure import device as devices

LAB = ["NVIDIA A100-SXM4-80GB", "NVIDIA A10", "NVIDIA GeForce RTX 4090", "NVIDIA TITAN RTX"]


@pytest.mark.parametrize("query, index", [
    ("0", 0), ("3", 3),                                   # digits that are a valid index
    ("a10", 1), ("A10", 1), ("nvidia a10", 1),            # exact name or slug first, not the A100
    ("a100", 0), ("A100-SXM4", 0), ("a100_sxm4_80gb", 0),
    ("4090", 2),                                          # digits, not a valid index: a name
    ("rtx_4090", 2), ("geforce rtx 4090", 2),
    ("titan_rtx", 3), ("TITAN RTX", 3), ("titanrtx", 3),
])
def test_gpu_names_and_indices(query, index):
    assert devices.match_gpu(query, LAB) == index


def test_an_ambiguous_name_is_refused_with_the_candidates():
    with pytest.raises(LatprofError, match="matches 2 different GPUs") as err:
        devices.match_gpu("rtx", LAB)
    text = str(err.value)
    assert "2: NVIDIA GeForce RTX 4090" in text and "3: NVIDIA TITAN RTX" in text
    assert "A100" not in text and "--gpu 0" in text


def test_a_part_of_a_word_is_no_match():
    with pytest.raises(LatprofError, match="no visible CUDA device matches 'a10'") as err:
        devices.match_gpu("a10", ["NVIDIA A100-SXM4-80GB"])      # the A100 is not an A10
    assert "0: NVIDIA A100-SXM4-80GB" in str(err.value)


def test_digits_that_are_neither_an_index_nor_a_name():
    with pytest.raises(LatprofError, match="no CUDA device with index 7 and none named '7'") as err:
        devices.match_gpu("7", LAB)
    assert "visible devices: 0: NVIDIA A100-SXM4-80GB, 1: NVIDIA A10" in str(err.value)


def test_several_gpus_of_one_model_give_the_first():
    assert devices.match_gpu("h100", ["NVIDIA H100 80GB HBM3"] * 4) == 0
    assert devices.match_gpu("2", ["NVIDIA H100 80GB HBM3"] * 4) == 2


def test_an_empty_query_matches_nothing():
    with pytest.raises(LatprofError, match="no visible CUDA device matches"):
        devices.match_gpu("--", LAB)


def props(name="NVIDIA H200", major=9, minor=0, sms=132, **kw):
    base = dict(name=name, major=major, minor=minor, multi_processor_count=sms, total_memory=141 * 2**30,
                L2_cache_size=60 * 2**20, shared_memory_per_multiprocessor=233472,
                shared_memory_per_block_optin=232448, regs_per_multiprocessor=65536,
                max_threads_per_multi_processor=2048, uuid="2a1b-uuid", pci_domain_id=0, pci_bus_id=0x1b,
                pci_device_id=0)
    return types.SimpleNamespace(**{**base, **kw})


@pytest.fixture
def gpus(monkeypatch):
    """Pretend torch sees LAB (with H200-like properties for each)."""
    monkeypatch.setattr(devices, "visible_gpus", lambda: list(LAB))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props(name=LAB[i], pci_bus_id=0x10 + i))


def test_cuda_device_records_the_identity_the_wave_model_and_nvml_need(gpus):
    dev = devices.cuda_device("titan_rtx")
    assert (dev.kind, dev.name, dev.slug, dev.index) == ("cuda", "NVIDIA TITAN RTX", "titanrtx", 3)
    ident = dev.identity
    assert ident["sm_count"] == 132 and ident["compute_capability"] == "9.0"
    assert ident["smem_per_sm_bytes"] == 233472 and ident["smem_per_block_bytes"] == 232448
    assert ident["regs_per_sm"] == 65536 and ident["max_threads_per_sm"] == 2048
    assert ident["uuid"] == "2a1b-uuid" and ident["pci_bus_id"] == "00000000:13:00.0"
    assert ident["l2_bytes"] == 60 * 2**20


@pytest.mark.parametrize("kw, index", [(dict(gpu="4090"), 2), (dict(device="cuda:1"), 1), (dict(device="cuda"), 0),
                                       (dict(gpu="a10"), 1)])
def test_select_reads_gpu_and_device_through_the_same_matching(gpus, kw, index):
    assert devices.select(**kw).index == index


def test_select_refuses_an_ambiguous_gpu(gpus):
    with pytest.raises(LatprofError, match="different GPUs"):
        devices.select(gpu="rtx")


def test_an_older_torch_without_pci_fields_records_none(monkeypatch):
    monkeypatch.setattr(devices, "visible_gpus", lambda: ["NVIDIA V100"])
    bare = props(name="NVIDIA V100")
    del bare.pci_bus_id
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: bare)
    assert devices.cuda_device(0).identity["pci_bus_id"] is None


# --- the settings a CUDA table records ------------------------------------------------------

@pytest.fixture
def flags():
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32)
    yield
    cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved


def test_cuda_settings_fix_and_restore_the_flags(flags):
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = False, True
    with devices.cuda_settings(cudnn_benchmark=True, tf32=False):
        assert devices.cuda_flags() == {"cudnn_benchmark": True, "cudnn_allow_tf32": False,
                                        "matmul_allow_tf32": False}
        with devices.cuda_settings():                         # None: leave both as they are
            assert devices.cuda_flags()["cudnn_benchmark"] is True
    assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.allow_tf32 is True


def test_a_cuda_tables_versions_record_benchmark_and_tf32(flags, monkeypatch):
    monkeypatch.setattr(devices, "_nvml_driver", lambda: "560.35")
    dev = devices.Device("cuda", "NVIDIA H200", "h200", 0)
    with devices.cuda_settings(cudnn_benchmark=True, tf32=False):
        v = devices.software_versions(dev)
    assert v["driver"] == "560.35"
    assert (v["cudnn_benchmark"], v["cudnn_allow_tf32"], v["matmul_allow_tf32"]) == (True, False, False)


# --- the Triton interpreter is never timed --------------------------------------------------

def test_a_triton_sweep_refuses_the_interpreter(monkeypatch):
    import latprof.kernels as kernels
    from latprof.measure import backends

    gpu = devices.Device("cuda", "NVIDIA Fake", "fake", 0)
    monkeypatch.setattr(kernels, "interpreted", lambda: True)      # a leftover TRITON_INTERPRET=1
    with pytest.raises(LatprofError, match="TRITON_INTERPRET=1") as err:
        backends.check("triton", gpu)
    assert "TRITON_INTERPRET=0" in str(err.value)
    monkeypatch.setattr(kernels, "interpreted", lambda: False)     # compiled for the GPU
    assert backends.check("triton", gpu) is None
