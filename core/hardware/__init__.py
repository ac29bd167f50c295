"""The machine Hearth runs on: RAM, CPU features, GPUs with their memory, llama.cpp's backends.

``detect_hardware()`` never raises for a missing driver or library: what could not be detected is
said in ``Hardware.notes``. Results are cached for a few seconds (free memory changes); llama.cpp's
backends are asked once per process, in a child process, so importing this module (and the GUI's
start) never loads llama_cpp.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import threading
import time
from dataclasses import replace
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
                backend=str(raw.get("backend", "")),
                device_id=str(raw.get("device_id", "")),
                duplicate_of=str(raw.get("duplicate_of", "")),
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
        gpu_off=bool(data.get("gpu_off")),
        no_gpu_device=bool(data.get("no_gpu_device")),
    )


def probe_llama(timeout: float = 120.0) -> LlamaBackends:
    """Ask the installed llama.cpp (in a child process) which backends and devices it has.

    A probe that dies of a signal was most likely taken down by a GPU driver (ggml asks every driver for its
    devices): it is asked again without the GPU backends, as the engine then runs, and ``crashed`` says so.
    """
    from core.engine.backends import gpu_disabled
    from core.engine.crash import signal_name

    try:
        done = subprocess.run(
            module_command("core.hardware.llama_probe"), capture_output=True, text=True, timeout=timeout,
            check=False,
        )
        crashed = ""
        if done.returncode < 0 and not gpu_disabled():
            crashed = signal_name(-done.returncode)
            done = subprocess.run(
                module_command("core.hardware.llama_probe"), capture_output=True, text=True, timeout=timeout,
                check=False, env={**os.environ, "HEARTH_GPU": "off"},
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
    return replace(_parse_probe(data), gpu_crash=crashed)


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
            if llama.gpu_crash:
                notes.append(f"a GPU driver crashed when llama.cpp asked it for its devices ({llama.gpu_crash}), so "
                             "models run on the CPU: update the GPU's driver, or turn the GPU off in Settings > "
                             "System (HEARTH_GPU=off) to skip asking it")
            elif llama.gpu_off:
                notes.append("the GPU is turned off (Settings > System, or HEARTH_GPU=off): models run on the CPU")
            elif gpus and not llama.gpu_offload:
                notes.append(
                    _no_gpu_backend(llama)
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


def _no_gpu_backend(llama: LlamaBackends) -> str:
    """Why a GPU the drivers report is not used, and what to do."""
    if "Vulkan" in llama.backends:
        return ("llama.cpp's Vulkan backend found no GPU to run on, so the GPU will not be used: install or "
                "update the GPU's Vulkan driver (Mesa's RADV or ANV on Linux, the vendor's driver on Windows)")
    return ("the installed llama.cpp is built for the CPU only, so the GPU will not be used: install a CUDA, "
            "Metal or Vulkan build of llama-cpp-python to use it")


_VENDOR_WORDS = (("nvidia", ("nvidia", "geforce", "quadro", "tesla", "rtx")), ("amd", ("amd", "radeon", "instinct")),
                 ("intel", ("intel", " arc", "iris", "uhd graphics")), ("apple", ("apple",)),
                 ("software", ("llvmpipe", "lavapipe", "swiftshader")))


def _vendor(description: str) -> str:
    text = f" {description.lower()}"
    return next((vendor for vendor, words in _VENDOR_WORDS if any(w in text for w in words)), "unknown")


def _merge_llama_devices(gpus: list[GPU], llama: LlamaBackends) -> list[GPU]:
    """The drivers' GPUs joined to the devices llama.cpp runs on (CUDA0, Vulkan0, Metal...).

    A device is matched to a driver's GPU by PCI address, else by name; llama.cpp's figures for memory
    are used where it reports them (Metal's working-set budget, Vulkan's heaps). A GPU that two backends list
    (an NVIDIA card under CUDA and Vulkan) is one GPU run by the first, as llama.cpp does; the other is
    named in ``also``. Devices no driver reported (Intel, AMD on Windows...) are added.
    """
    merged = list(gpus)
    devices = [d for d in llama.devices if d.kind in ("gpu", "igpu") and d.backend != "RPC"]
    duplicates: dict[str, list[str]] = {}
    for d in devices:
        if d.duplicate_of:
            duplicates.setdefault(d.duplicate_of, []).append(d.name)
    for d in devices:
        if d.duplicate_of:
            continue

        def matches(g: GPU, d: LlamaDevice = d) -> bool:
            if g.backend:
                return False
            if g.pci and d.device_id:
                return g.pci == d.device_id
            if g.vendor == "apple":
                return d.backend == "Metal" or d.name.lower().startswith("metal")
            return bool(d.description) and (d.description.lower() in g.name.lower()
                                             or g.name.lower() in d.description.lower())

        found = next((i for i, g in enumerate(merged) if matches(g)), None)
        total = d.total_bytes
        backend = d.backend or d.name.rstrip("0123456789")
        if found is None:
            merged.append(GPU(index=len(merged), name=d.description or d.name, vendor=_vendor(d.description),
                              total_bytes=total, free_bytes=d.free_bytes, unified=d.kind == "igpu",
                              source="llama.cpp", pci=d.device_id, backend=backend, device=d.name,
                              also=duplicates.get(d.name, [])))
            continue
        g = merged[found]
        free = g.free_bytes
        if total > 0:
            # llama.cpp's own figures: what its allocator sees (Metal's budget; the driver's heaps under Vulkan).
            free = min(d.free_bytes, g.free_bytes) if g.vendor == "apple" and g.free_bytes else d.free_bytes
        merged[found] = replace(g, total_bytes=total or g.total_bytes, free_bytes=free,
                                unified=g.unified or d.kind == "igpu", pci=g.pci or d.device_id, backend=backend,
                                device=d.name, also=duplicates.get(d.name, []),
                                source=g.source if total <= 0 else f"{g.source}+llama.cpp" if g.source else "llama.cpp")
    return merged
