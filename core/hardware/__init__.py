"""The machine Hearth runs on: RAM, CPU features, GPUs with their memory, llama.cpp's backends.

``detect_hardware()`` never raises for a missing driver or library: what could not be detected is
said in ``Hardware.notes``. Results are cached for a few seconds (free memory changes); llama.cpp's
backends are asked once per process, in a child process, so importing this module (and the GUI's
start) never loads llama_cpp.
"""

from __future__ import annotations

import json
import platform
import subprocess
import threading
import time
from pathlib import Path
from types import ModuleType

from core.hardware.cpu import detect_cpu, run_sysctl
from core.hardware.gpus import amd_gpus, apple_gpu, nvidia_gpus
from core.hardware.info import GPU, CPUInfo, Hardware, LlamaBackends, LlamaDevice
from core.runtime import module_command

__all__ = [
    "GPU",
    "CPUInfo",
    "Hardware",
    "LlamaBackends",
    "LlamaDevice",
    "clear_cache",
    "detect_hardware",
    "probe_llama",
]

CACHE_SECONDS = 5.0
_lock = threading.Lock()
_cached: dict[bool, tuple[float, Hardware]] = {}
_llama_cached: LlamaBackends | None = None


def clear_cache() -> None:
    """Forget cached answers (the next ``detect_hardware()`` asks again)."""
    global _cached, _llama_cached
    with _lock:
        _cached.clear()
        _llama_cached = None


def _parse_probe(data: dict[str, object]) -> LlamaBackends:
    devices = []
    for raw in data.get("devices") or []:  # type: ignore[attr-defined]
        devices.append(
            LlamaDevice(
                name=str(raw.get("name", "")),
                description=str(raw.get("description", "")),
                kind=str(raw.get("kind", "other")),
                free_bytes=int(raw.get("free_bytes", 0)),
                total_bytes=int(raw.get("total_bytes", 0)),
            )
        )
    error = data.get("error")
    return LlamaBackends(
        available=bool(data.get("available")),
        gpu_offload=bool(data.get("gpu_offload")),
        backends=[str(b) for b in data.get("backends") or []],  # type: ignore[attr-defined]
        devices=devices,
        system_info=str(data.get("system_info") or ""),
        error=str(error) if error else None,
        cpu_variant=str(data.get("cpu_variant") or ""),
        cpu_variants=[str(v) for v in data.get("cpu_variants") or []],  # type: ignore[attr-defined]
    )


def probe_llama(timeout: float = 120.0) -> LlamaBackends:
    """Ask the installed llama.cpp (in a child process) which backends and devices it has."""
    try:
        done = subprocess.run(
            module_command("core.hardware.llama_probe"), capture_output=True, text=True, timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return LlamaBackends(available=False, error=f"llama.cpp could not be asked: {exc}")
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return LlamaBackends(
            available=False, error=f"llama.cpp's probe failed (exit {done.returncode}): {tail}"
        )
    return _parse_probe(data)


def _ram() -> tuple[int, int]:
    import psutil

    memory = psutil.virtual_memory()
    return int(memory.total), int(memory.available)


def detect_hardware(
    *,
    use_cache: bool = True,
    with_llama: bool = True,
    pynvml: ModuleType | None = None,
    drm_root: Path = Path("/sys/class/drm"),
    system: str | None = None,
    sysctl_values: dict[str, str] | None = None,
) -> Hardware:
    """Detect this machine's hardware (cached for a few seconds).

    ``with_llama=False`` skips asking llama.cpp (no child process); the keyword arguments after it
    replace driver answers and exist for tests.
    """
    global _llama_cached
    overridden = (
        pynvml is not None
        or system is not None
        or sysctl_values is not None
        or drm_root != Path("/sys/class/drm")
    )
    with _lock:
        hit = _cached.get(with_llama)
        if use_cache and not overridden and hit and time.monotonic() - hit[0] < CACHE_SECONDS:
            return hit[1]
    system = system or platform.system()
    notes: list[str] = []
    ram_total, ram_available = _ram()
    mac_values = (run_sysctl() if sysctl_values is None else sysctl_values) if system == "Darwin" else {}
    cpu = detect_cpu(system=system, sysctl_values=mac_values if system == "Darwin" else None)

    gpus: list[GPU] = []
    if system == "Darwin":
        apple = apple_gpu(mac_values, ram_total, ram_available)
        if apple:
            gpus.append(apple)
    else:
        nvidia, note = nvidia_gpus(pynvml)
        gpus.extend(nvidia)
        if note:
            notes.append(note)
        if system == "Linux":
            gpus.extend(amd_gpus(drm_root, first_index=len(gpus)))

    llama = LlamaBackends(available=False, error="not asked")
    if with_llama:
        with _lock:
            llama = _llama_cached if (_llama_cached and use_cache) else probe_llama()
            if llama.available:
                _llama_cached = llama
        if not llama.available:
            notes.append(llama.error or "llama.cpp is not available")
        else:
            gpus = _merge_llama_devices(gpus, llama)
            if gpus and not llama.gpu_offload:
                notes.append(
                    "the installed llama.cpp is built for the CPU only, so the GPU will not be used: "
                    "install a CUDA, Metal or Vulkan build of llama-cpp-python to use it"
                )
    if not gpus:
        notes.append("no GPU found: models run on the CPU")

    hardware = Hardware(
        ram_total_bytes=ram_total,
        ram_available_bytes=ram_available,
        cpu=cpu,
        gpus=gpus,
        llama=llama,
        os=f"{system} {platform.release()}".strip(),
        notes=notes,
    )
    if not overridden:
        with _lock:
            _cached[with_llama] = (time.monotonic(), hardware)
    return hardware


def _merge_llama_devices(gpus: list[GPU], llama: LlamaBackends) -> list[GPU]:
    """Use llama.cpp's own figure for Apple's GPU budget; add GPUs only llama.cpp sees (Vulkan…)."""
    merged = list(gpus)
    gpu_devices = [d for d in llama.devices if d.kind in ("gpu", "igpu") and d.total_bytes > 0]
    for device in gpu_devices:
        if device.name.lower().startswith("metal"):
            merged = [
                GPU(
                    index=g.index,
                    name=g.name,
                    vendor=g.vendor,
                    total_bytes=device.total_bytes,
                    free_bytes=min(device.free_bytes, g.free_bytes) if g.free_bytes else device.free_bytes,
                    unified=True,
                    driver=g.driver,
                    source="llama.cpp",
                )
                if g.vendor == "apple"
                else g
                for g in merged
            ]
    if not merged and gpu_devices:
        merged = [
            GPU(
                index=i,
                name=d.description or d.name,
                vendor="unknown",
                total_bytes=d.total_bytes,
                free_bytes=d.free_bytes,
                unified=d.kind == "igpu",
                source="llama.cpp",
            )
            for i, d in enumerate(gpu_devices)
        ]
    return merged
