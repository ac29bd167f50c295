"""GPUs and their memory, from each vendor's own source; a missing driver is a note, never a crash.

- NVIDIA: NVML through ``nvidia-ml-py`` (module ``pynvml``): total and free memory per device.
- AMD on Linux: the amdgpu driver's sysfs files ``/sys/class/drm/card*/device/mem_info_vram_total``
  and ``mem_info_vram_used`` (bytes; Linux kernel Documentation/gpu/amdgpu/driver-misc.rst).
- Apple Silicon: unified memory; Metal lets one process keep about ``recommendedMaxWorkingSetSize``
  resident on the GPU, which macOS sets to roughly 2/3 of RAM (3/4 above 36 GB) unless
  ``iogpu.wired_limit_mb`` raises it. llama.cpp's Metal device reports the exact figure; this module
  estimates it from ``sysctl`` so no Metal binding is needed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import ModuleType
from typing import Any

from core.hardware.info import GPU

AMD_VENDOR_ID = "0x1002"
_CARD_RE = re.compile(r"^card\d+$")
GIB = 1 << 30


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def pci_address(text: str) -> str:
    """A PCI address as ggml's ``device_id`` writes it ("0000:01:00.0"), from NVML's ("00000000:01:00.0"),
    sysfs's or ggml's own spelling; "" when ``text`` is not one."""
    m = re.fullmatch(r"([0-9a-fA-F]{1,8}):([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])", text.strip())
    if not m:
        return ""
    domain, bus, dev, fn = m.groups()
    return f"{int(domain, 16):04x}:{int(bus, 16):02x}:{int(dev, 16):02x}.{fn}"


def nvidia_gpus(pynvml: ModuleType | None = None) -> tuple[list[GPU], str | None]:
    """NVIDIA GPUs through NVML, and a note when there are none (no library, no driver, no device)."""
    if pynvml is None:
        try:
            import pynvml as loaded
        except ImportError:
            return [], "nvidia-ml-py is not installed, so NVIDIA GPUs cannot be detected"
        pynvml = loaded
    error_type: type[BaseException] = getattr(pynvml, "NVMLError", Exception)
    try:
        pynvml.nvmlInit()
    except error_type as exc:
        return [], f"no NVIDIA driver found ({_text(exc) or type(exc).__name__})"
    except OSError as exc:
        return [], f"no NVIDIA driver found ({exc})"
    gpus: list[GPU] = []
    note: str | None = None
    try:
        try:
            driver: str | None = _text(pynvml.nvmlSystemGetDriverVersion())
        except error_type:
            driver = None
        for index in range(int(pynvml.nvmlDeviceGetCount())):
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                name = _text(pynvml.nvmlDeviceGetName(handle))
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            except error_type as exc:
                note = f"NVIDIA GPU {index} could not be read ({_text(exc)})"
                continue
            try:
                pci = pci_address(_text(pynvml.nvmlDeviceGetPciInfo(handle).busId))
            except (error_type, AttributeError):
                pci = ""
            gpus.append(
                GPU(
                    index=index,
                    name=name,
                    vendor="nvidia",
                    total_bytes=int(memory.total),
                    free_bytes=int(memory.free),
                    driver=driver,
                    source="nvml",
                    pci=pci,
                )
            )
        if not gpus and note is None:
            note = "the NVIDIA driver is loaded but lists no GPU"
    finally:
        try:
            pynvml.nvmlShutdown()
        except error_type:
            pass
    return gpus, note


def amd_gpus(drm_root: Path = Path("/sys/class/drm"), first_index: int = 0) -> list[GPU]:
    """AMD GPUs that the amdgpu driver describes in sysfs (Linux only; empty elsewhere)."""
    gpus: list[GPU] = []
    if not drm_root.is_dir():
        return gpus
    for card in sorted(drm_root.iterdir(), key=lambda p: int(p.name[4:]) if _CARD_RE.match(p.name) else -1):
        if not _CARD_RE.match(card.name):
            continue
        device = card / "device"
        try:
            vendor = (device / "vendor").read_text().strip().lower()
            total = int((device / "mem_info_vram_total").read_text().strip())
            used = int((device / "mem_info_vram_used").read_text().strip())
        except (OSError, ValueError):
            continue
        if vendor and vendor != AMD_VENDOR_ID:
            continue
        try:
            name = (device / "product_name").read_text().strip()
        except OSError:
            name = ""
        gpus.append(
            GPU(
                index=first_index + len(gpus),
                name=name or f"AMD GPU ({card.name})",
                vendor="amd",
                total_bytes=total,
                free_bytes=max(0, total - used),
                source="sysfs",
                pci=pci_address(os.path.basename(os.path.realpath(device))),
            )
        )
    return gpus


def apple_working_set(ram_bytes: int, wired_limit_mb: int = 0) -> int:
    """Metal's ``recommendedMaxWorkingSetSize`` as macOS sets it: about 2/3 of RAM, 3/4 above 36 GB.

    A non-zero ``iogpu.wired_limit_mb`` (set by the user with ``sudo sysctl``) replaces the default.
    """
    if wired_limit_mb > 0:
        return min(ram_bytes, wired_limit_mb * (1 << 20))
    share = 0.75 if ram_bytes > 36 * GIB else 2 / 3
    return int(ram_bytes * share)


def apple_gpu(sysctl_values: dict[str, str], ram_bytes: int, ram_available: int) -> GPU | None:
    """The Apple Silicon GPU (unified memory) from sysctl answers; None on Intel Macs."""
    brand = sysctl_values.get("machdep.cpu.brand_string", "")
    if not brand.startswith("Apple") and sysctl_values.get("hw.optional.arm64", "") != "1":
        return None
    memsize = sysctl_values.get("hw.memsize", "")
    total_ram = int(memsize) if memsize.isdigit() else ram_bytes
    limit = sysctl_values.get("iogpu.wired_limit_mb", "0")
    budget = apple_working_set(total_ram, int(limit) if limit.isdigit() else 0)
    return GPU(
        index=0,
        name=f"{brand or 'Apple Silicon'} GPU",
        vendor="apple",
        total_bytes=budget,
        free_bytes=min(budget, ram_available),
        unified=True,
        source="sysctl",
    )
