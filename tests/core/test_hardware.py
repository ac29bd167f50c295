"""Hardware detection: this machine for real, GPU drivers through fake driver answers only."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest

from core.hardware import clear_cache, detect_hardware
from core.hardware.cpu import detect_cpu, mac_features, parse_proc_cpuinfo, parse_sysctl
from core.hardware.gpus import amd_gpus, apple_working_set, nvidia_gpus
from core.hardware.info import LlamaBackends

GIB = 1 << 30


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    clear_cache()


def test_this_machine_reports_ram_cpu_and_llama_backends() -> None:
    hw = detect_hardware()
    assert hw.ram_total_bytes > 0 and 0 < hw.ram_available_bytes <= hw.ram_total_bytes
    assert hw.cpu.logical_cores and hw.cpu.logical_cores >= 1
    assert hw.cpu.model
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and " avx2 " in f" {cpuinfo.read_text()} ".replace("\n", " "):
        assert "AVX2" in hw.cpu.features
    assert hw.llama.available, hw.llama.error
    assert "CPU" in hw.llama.backends
    assert any(d.kind == "cpu" for d in hw.llama.devices)
    assert hw.llama.system_info.startswith("CPU")
    # The bundled llama.cpp is a CPU build (with the RPC backend for other machines, which llama.cpp's own
    # llama_supports_gpu_offload counts): no GPU of this machine can be used, whatever the drivers say.
    assert "RPC" in hw.llama.backends
    assert hw.llama.gpu_offload is False and hw.usable_gpus == []
    data = json.loads(json.dumps(hw.to_dict()))
    assert data["cpu"]["features"] == hw.cpu.features
    assert isinstance(data["llama"]["cpu_flags"], dict)


def test_detection_is_cached_briefly() -> None:
    first = detect_hardware()
    assert detect_hardware() is first
    clear_cache()
    assert detect_hardware() is not first


def test_gui_start_path_does_not_import_llama_cpp() -> None:
    import subprocess
    import sys

    code = "import sys, core.hardware, core.fit; print('llama_cpp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- NVIDIA: a fake pynvml module stands in for the driver ----------------------------------------
class FakeNVMLError(Exception):
    pass


def fake_pynvml(devices: list[tuple[str, int, int]], init_error: str | None = None) -> types.ModuleType:
    module = types.ModuleType("pynvml")
    calls: list[str] = []

    def nvmlInit() -> None:
        calls.append("init")
        if init_error:
            raise FakeNVMLError(init_error)

    def memory(index: int) -> Any:
        _, total, used = devices[index]
        return types.SimpleNamespace(total=total, used=used, free=total - used)

    module.NVMLError = FakeNVMLError  # type: ignore[attr-defined]
    module.nvmlInit = nvmlInit  # type: ignore[attr-defined]
    module.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    module.nvmlSystemGetDriverVersion = lambda: "550.54.14"  # type: ignore[attr-defined]
    module.nvmlDeviceGetCount = lambda: len(devices)  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    module.nvmlDeviceGetName = lambda h: devices[h][0].encode()  # type: ignore[attr-defined]
    module.nvmlDeviceGetMemoryInfo = memory  # type: ignore[attr-defined]
    module.calls = calls  # type: ignore[attr-defined]
    return module


def test_nvidia_gpus_from_nvml() -> None:
    nvml = fake_pynvml([("NVIDIA GeForce RTX 4090", 24 * GIB, 2 * GIB), ("NVIDIA RTX A2000", 6 * GIB, 0)])
    gpus, note = nvidia_gpus(nvml)
    assert note is None
    assert [g.name for g in gpus] == ["NVIDIA GeForce RTX 4090", "NVIDIA RTX A2000"]
    assert gpus[0].total_bytes == 24 * GIB and gpus[0].free_bytes == 22 * GIB
    assert gpus[0].vendor == "nvidia" and gpus[0].driver == "550.54.14" and not gpus[0].unified
    assert nvml.calls == ["init", "shutdown"]  # type: ignore[attr-defined]


def test_missing_nvidia_driver_is_a_note_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_pynvml([], init_error="Driver Not Loaded")
    monkeypatch.setitem(__import__("sys").modules, "pynvml", nvml)
    hw = detect_hardware(use_cache=False, system="Linux", drm_root=Path("/nonexistent"))
    assert hw.gpus == []
    assert any("no NVIDIA driver found" in n and "Driver Not Loaded" in n for n in hw.notes)
    assert any("no GPU found" in n for n in hw.notes)


def test_nvidia_gpu_with_a_cpu_only_llama_build_is_listed_but_not_usable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nvml = fake_pynvml([("NVIDIA L4", 24 * GIB, GIB)])
    monkeypatch.setitem(__import__("sys").modules, "pynvml", nvml)
    hw = detect_hardware(use_cache=False, system="Linux", drm_root=Path("/nonexistent"))
    assert [g.name for g in hw.gpus] == ["NVIDIA L4"]
    assert hw.usable_gpus == []
    # With the Vulkan backend in the build (Linux), the note says to install the GPU's Vulkan driver.
    expected = "Vulkan backend found no GPU" if "Vulkan" in hw.llama.backends else "built for the CPU only"
    assert any(expected in n and "will not be used" in n for n in hw.notes), hw.notes


# -- AMD: a fake sysfs tree ------------------------------------------------------------------------
def _card(root: Path, name: str, vendor: str, total: int | None, used: int = 0, product: str = "") -> None:
    device = root / name / "device"
    device.mkdir(parents=True)
    (device / "vendor").write_text(vendor + "\n")
    if total is not None:
        (device / "mem_info_vram_total").write_text(f"{total}\n")
        (device / "mem_info_vram_used").write_text(f"{used}\n")
    if product:
        (device / "product_name").write_text(product + "\n")


def test_amd_gpus_from_sysfs(tmp_path: Path) -> None:
    _card(tmp_path, "card0", "0x8086", None)  # an Intel iGPU without amdgpu files
    _card(tmp_path, "card1", "0x1002", 16 * GIB, 3 * GIB, "AMD Radeon RX 7800 XT")
    _card(tmp_path, "card2", "0x1002", 8 * GIB, 0)
    (tmp_path / "card1-DP-1").mkdir()  # a connector, not a card
    gpus = amd_gpus(tmp_path)
    assert [(g.name, g.total_bytes, g.free_bytes) for g in gpus] == [
        ("AMD Radeon RX 7800 XT", 16 * GIB, 13 * GIB),
        ("AMD GPU (card2)", 8 * GIB, 8 * GIB),
    ]
    assert all(g.vendor == "amd" and g.source == "sysfs" for g in gpus)
    assert amd_gpus(tmp_path / "missing") == []


def test_amd_gpu_appears_in_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        __import__("sys").modules, "pynvml", fake_pynvml([], init_error="NVML Shared Library Not Found")
    )
    _card(tmp_path, "card0", "0x1002", 24 * GIB, GIB, "AMD Radeon RX 7900 XTX")
    hw = detect_hardware(use_cache=False, system="Linux", drm_root=tmp_path, with_llama=False)
    assert [g.name for g in hw.gpus] == ["AMD Radeon RX 7900 XTX"]
    assert hw.gpus[0].free_bytes == 23 * GIB


# -- Apple Silicon: fake sysctl answers ------------------------------------------------------------
SYSCTL_M2 = """machdep.cpu.brand_string: Apple M2 Pro
hw.memsize: 34359738368
hw.physicalcpu: 12
hw.logicalcpu: 12
iogpu.wired_limit_mb: 0
hw.optional.arm64: 1
hw.optional.neon: 1
hw.optional.arm.FEAT_FP16: 1
hw.optional.neon_fp16: 1
hw.optional.arm.FEAT_DotProd: 1
hw.optional.arm.FEAT_I8MM: 0
hw.optional.arm.FEAT_BF16: 1
"""


def test_apple_silicon_from_sysctl() -> None:
    values = parse_sysctl(SYSCTL_M2 + "sysctl: unknown oid 'machdep.cpu.features'\n")
    assert values["hw.memsize"] == "34359738368" and "sysctl" not in values
    assert mac_features(values) == ["NEON", "FP16", "FP16_VA", "DOTPROD", "BF16"]
    hw = detect_hardware(use_cache=False, system="Darwin", sysctl_values=values, with_llama=False)
    (gpu,) = hw.gpus
    assert gpu.vendor == "apple" and gpu.unified and gpu.name == "Apple M2 Pro GPU"
    assert gpu.total_bytes == int(32 * GIB * 2 / 3)  # 2/3 of 32 GB
    assert hw.cpu.model == "Apple M2 Pro" and hw.cpu.physical_cores == 12
    assert "DOTPROD" in hw.cpu.features


def test_apple_working_set_rules() -> None:
    assert apple_working_set(16 * GIB) == int(16 * GIB * 2 / 3)
    assert apple_working_set(64 * GIB) == 48 * GIB  # 3/4 above 36 GB
    assert apple_working_set(64 * GIB, wired_limit_mb=57344) == 56 * GIB


def test_intel_mac_has_no_apple_gpu() -> None:
    values = parse_sysctl(
        "machdep.cpu.brand_string: Intel(R) Core(TM) i9-9880H CPU @ 2.30GHz\n"
        "machdep.cpu.features: FPU SSE3 SSSE3 FMA SSE4.1 SSE4.2 AVX1.0 F16C\n"
        "machdep.cpu.leaf7_features: BMI2 AVX2\nhw.memsize: 17179869184\n"
    )
    hw = detect_hardware(use_cache=False, system="Darwin", sysctl_values=values, with_llama=False)
    assert hw.gpus == []
    assert {"AVX", "AVX2", "FMA", "F16C", "SSE3"} <= set(hw.cpu.features)


# -- CPU parsing -------------------------------------------------------------------------------------
def test_arm_linux_cpuinfo(tmp_path: Path) -> None:
    text = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes asimdhp asimddp i8mm sve\n"
    _, features = parse_proc_cpuinfo(text)
    assert features == ["NEON", "FP16_VA", "DOTPROD", "MATMUL_INT8", "SVE"]
    path = tmp_path / "cpuinfo"
    path.write_text("model name\t: Neoverse-N1\n" + text)
    assert detect_cpu(system="Linux", cpuinfo_path=path).model == "Neoverse-N1"


def test_llama_system_info_flags() -> None:
    info = LlamaBackends(available=True, system_info="CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 0 | REPACK = 1 |")
    assert info.cpu_flags == {"SSE3": True, "AVX2": True, "AVX512": False, "REPACK": True}
