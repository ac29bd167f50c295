"""GPUs as llama.cpp runs them: the drivers' GPUs joined to ggml's devices (CUDA, Vulkan, Metal), counted once,
used by the fit and the defaults; the GPU switch; the Fine-tune page's line on a Vulkan-only machine.

ggml's device lists here are what its backends answer on machines this project does not have (a Radeon under
Vulkan, an NVIDIA card under CUDA and Vulkan): the drivers' answers, written out. lavapipe, a real Vulkan device,
is in test_vulkan.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from core.engine.params import GPU_LAYERS_AUTO
from core.hardware import _merge_llama_devices
from core.hardware.gpus import pci_address
from core.hardware.info import GPU, CPUInfo, Hardware, LlamaBackends, LlamaDevice
from core.settings import ChatParameters, Settings, apply_gpu, load_settings, save_settings

GIB = 1 << 30


def llama(*devices: LlamaDevice) -> LlamaBackends:
    backends = sorted({d.backend for d in devices} | {"CPU"})
    return LlamaBackends(available=True, gpu_offload=any(d.kind in ("gpu", "igpu") for d in devices),
                         backends=backends, devices=[LlamaDevice("CPU", "AMD Ryzen", "cpu", 30 * GIB, 32 * GIB, "CPU"),
                                                     *devices])


def machine(gpus: list[GPU], backends: LlamaBackends) -> Hardware:
    return Hardware(ram_total_bytes=32 * GIB, ram_available_bytes=24 * GIB,
                    cpu=CPUInfo("AMD Ryzen 7 7840U", "x86_64", 8, 16, ["AVX2"]), gpus=gpus, llama=backends, os="Linux")


def test_pci_addresses_are_written_as_ggml_writes_them() -> None:
    assert pci_address("00000000:01:00.0") == "0000:01:00.0"  # NVML's busId
    assert pci_address("0000:C1:00.0") == "0000:c1:00.0"
    assert pci_address("0000:03:00.1") == "0000:03:00.1"
    assert pci_address("card0") == "" and pci_address("") == ""


def test_an_nvidia_card_under_cuda_and_vulkan_is_one_gpu_run_by_cuda() -> None:
    nvml = GPU(0, "NVIDIA GeForce RTX 4070", "nvidia", 12 * GIB, 11 * GIB, source="nvml", pci="0000:01:00.0")
    backends = llama(
        LlamaDevice("CUDA0", "NVIDIA GeForce RTX 4070", "gpu", 10 * GIB, 12 * GIB, "CUDA", "0000:01:00.0"),
        LlamaDevice("Vulkan0", "NVIDIA GeForce RTX 4070", "gpu", 11 * GIB, 12 * GIB, "Vulkan", "0000:01:00.0",
                    duplicate_of="CUDA0"),
    )
    (gpu,) = _merge_llama_devices([nvml], backends)
    assert (gpu.backend, gpu.device, gpu.also) == ("CUDA", "CUDA0", ["Vulkan0"])
    assert gpu.free_bytes == 10 * GIB and gpu.total_bytes == 12 * GIB  # as ggml's CUDA backend reports it
    hw = machine([gpu], backends)
    assert hw.usable_gpus == [gpu] and hw.runs_on.startswith("CUDA0: NVIDIA GeForce RTX 4070")


def test_a_radeon_seen_by_amdgpu_runs_under_vulkan_with_the_memory_ggml_reports() -> None:
    sysfs = GPU(0, "AMD Radeon RX 7600", "amd", 8 * GIB, 7 * GIB, source="sysfs", pci="0000:03:00.0")
    backends = llama(LlamaDevice("Vulkan0", "AMD Radeon RX 7600 (RADV NAVI33)", "gpu", int(7.5 * GIB), 8 * GIB,
                                 "Vulkan", "0000:03:00.0"))
    (gpu,) = _merge_llama_devices([sysfs], backends)
    assert (gpu.name, gpu.vendor, gpu.backend, gpu.device) == ("AMD Radeon RX 7600", "amd", "Vulkan", "Vulkan0")
    assert gpu.free_bytes == int(7.5 * GIB) and gpu.source == "sysfs+llama.cpp"
    assert gpu.where == "Vulkan0: AMD Radeon RX 7600"


def test_an_intel_igpu_only_vulkan_sees_is_added() -> None:
    backends = llama(LlamaDevice("Vulkan0", "Intel(R) Arc(tm) Graphics (MTL)", "igpu", 14 * GIB, 16 * GIB, "Vulkan",
                                 "0000:00:02.0"))
    (gpu,) = _merge_llama_devices([], backends)
    assert (gpu.vendor, gpu.unified, gpu.backend, gpu.source) == ("intel", True, "Vulkan", "llama.cpp")


def test_a_gpu_no_backend_runs_is_listed_but_not_used() -> None:
    nvml = GPU(0, "NVIDIA T400", "nvidia", 4 * GIB, 4 * GIB, source="nvml", pci="0000:02:00.0")
    radeon = GPU(1, "AMD Radeon 780M", "amd", 4 * GIB, 3 * GIB, source="sysfs", pci="0000:c1:00.0")
    backends = llama(LlamaDevice("Vulkan0", "AMD Radeon 780M (RADV GFX1103_R1)", "igpu", 3 * GIB, 4 * GIB, "Vulkan",
                                 "0000:c1:00.0"))
    merged = _merge_llama_devices([nvml, radeon], backends)
    hw = machine(merged, backends)
    assert [g.name for g in hw.usable_gpus] == ["AMD Radeon 780M"]
    assert merged[0].backend == "" and merged[1].backend == "Vulkan"


def test_a_model_that_fits_a_radeons_memory_is_recommended_fully_offloaded() -> None:
    from core.fit import assess, recommend
    from tests.core.test_fit_recommend import LLAMA_8B

    gpu = GPU(0, "AMD Radeon RX 7600", "amd", 8 * GIB, int(7.6 * GIB), source="sysfs+llama.cpp", backend="Vulkan",
              device="Vulkan0")
    hw = machine([gpu], llama(LlamaDevice("Vulkan0", "AMD Radeon RX 7600", "gpu", int(7.6 * GIB), 8 * GIB, "Vulkan")))
    verdict = assess(LLAMA_8B, hw, n_ctx=4096)  # 8B Q4_K_M: 4.9 GB of weights
    assert verdict.kind == "full_gpu" and verdict.gpu_layers == LLAMA_8B.n_layer + 1, verdict.reason
    assert "AMD Radeon RX 7600" in verdict.reason
    pick = recommend([("Q4_K_M", 4_921_000_000), ("Q8_0", 8_540_000_000)], LLAMA_8B, 4096, hw)
    assert pick.quant == "Q4_K_M" and pick.verdicts["Q4_K_M"].kind == "full_gpu", pick.reason


def test_gpu_layers_default_to_auto_and_old_settings_files_move_to_it(hearth_home: Path) -> None:
    assert ChatParameters().n_gpu_layers == GPU_LAYERS_AUTO
    assert ChatParameters().load_options().n_gpu_layers == GPU_LAYERS_AUTO
    settings_file = hearth_home / "config" / "settings.json"
    settings_file.parent.mkdir(parents=True, exist_ok=True)
    # Version 1 saved 0 as the default (the GPU was never used unless set): read as Auto; a -1 the user chose stays.
    settings_file.write_text(json.dumps({"version": 1, "defaults": {"n_gpu_layers": 0},
                                         "presets": {"big": {"n_gpu_layers": -1}, "small": {"n_gpu_layers": 0}}}))
    from core.paths import get_paths

    assert get_paths().settings_file == settings_file
    old = load_settings()
    assert old.defaults.n_gpu_layers == GPU_LAYERS_AUTO
    assert old.presets["big"].n_gpu_layers == -1 and old.presets["small"].n_gpu_layers == GPU_LAYERS_AUTO
    old.defaults.n_gpu_layers = 0  # the user now asks for the CPU: version 2 keeps it
    save_settings(old)
    assert json.loads(settings_file.read_text())["version"] == 2
    assert load_settings().defaults.n_gpu_layers == 0


def test_the_gpu_switch_reaches_the_engines_processes(monkeypatch: pytest.MonkeyPatch, hearth_home: Path) -> None:
    from core.engine.backends import gpu_disabled

    monkeypatch.delenv("HEARTH_GPU", raising=False)
    monkeypatch.delenv("HEARTH_GPU_FROM_SETTINGS", raising=False)
    settings = Settings(gpu="off")
    save_settings(settings)
    assert os.environ["HEARTH_GPU"] == "off" and gpu_disabled()
    assert load_settings().gpu == "off"
    settings.gpu = "auto"
    save_settings(settings)
    assert "HEARTH_GPU" not in os.environ and not gpu_disabled()
    # A HEARTH_GPU=off from the user's shell outlives settings that say auto.
    monkeypatch.setenv("HEARTH_GPU", "off")
    apply_gpu(Settings(gpu="auto"))
    assert os.environ["HEARTH_GPU"] == "off"
    assert Settings.from_dict({"gpu": "sometimes"}).gpu == "auto"


def test_training_on_a_vulkan_only_machine_says_why_it_uses_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import core.hardware
    from core.finetune.cost import vulkan_remark

    radeon = GPU(0, "AMD Radeon 780M", "amd", 4 * GIB, 3 * GIB, backend="Vulkan", device="Vulkan0")
    hw = machine([radeon], llama(LlamaDevice("Vulkan0", "AMD Radeon 780M", "igpu", 3 * GIB, 4 * GIB, "Vulkan")))
    monkeypatch.setattr(core.hardware, "detect_hardware", lambda **_kw: hw)
    remark = vulkan_remark()
    assert remark.startswith("Training runs on the CPU: PyTorch has no Vulkan backend, so the AMD Radeon 780M")
    cuda = GPU(0, "NVIDIA RTX 4070", "nvidia", 12 * GIB, 11 * GIB, backend="CUDA", device="CUDA0")
    monkeypatch.setattr(core.hardware, "detect_hardware",
                        lambda **_kw: machine([cuda], llama(LlamaDevice("CUDA0", "RTX", "gpu", 11 * GIB, 12 * GIB, "CUDA"))))
    assert vulkan_remark() == ""
