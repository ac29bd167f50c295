"""Load llama.cpp's compute backends into this process, and say which CPU variant was picked.

Hearth builds llama.cpp with ``GGML_BACKEND_DL=ON`` and ``GGML_CPU_ALL_VARIANTS=ON`` (the Makefile's
``LLAMA_CMAKE_ARGS``): every instruction-set level of the CPU backend is its own library
(``libggml-cpu-haswell.so``, ``libggml-cpu-skylakex.so``, ...) and ggml loads the one that scores best
on the running CPU. With such a build nothing is registered until ``ggml_backend_load_all_from_path``
runs (ggml/include/ggml-backend.h); llama-cpp-python 0.3.36 neither calls nor wraps it, and a model
load then fails with "no backends are loaded". So every process of ours that touches llama.cpp
(engine worker, quantizer, probes, the fit measurer) calls :func:`load_backends` first; it is a no-op
on a build with the backends linked in, and after the first call.
"""

from __future__ import annotations

import ctypes
import glob
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

_VARIANT = re.compile(r"^(?:lib)?ggml-cpu-(.+)\.(?:so|dll|dylib)$")


@dataclass(frozen=True)
class Backends:
    dynamic: bool  # the backends are loadable libraries (GGML_BACKEND_DL)
    cpu_variant: str = ""  # the CPU library ggml picked, e.g. "haswell"; "" for a built-in CPU backend
    cpu_variants: list[str] = field(default_factory=list)  # every CPU variant this build carries
    registered: list[str] = field(default_factory=list)  # registry names after loading: "CPU", "CUDA"
    gpu_off: bool = False  # HEARTH_GPU=off: no GPU backend library was loaded (gpu_disabled())
    no_gpu_device: bool = False  # none loaded either: this machine has no GPU device node (gpu_device_present())


def gpu_disabled() -> bool:
    """Whether the user turned the GPU off (``HEARTH_GPU=off``, or Settings > System, which sets it for
    the engine's processes): then no GPU backend library (CUDA, Vulkan...) is even loaded, so a driver
    that crashes when asked cannot take the engine down."""
    return os.environ.get("HEARTH_GPU", "").strip().lower() in ("off", "0", "no", "false", "cpu")


# Device nodes through which a GPU driver reaches its hardware on Linux: DRM render nodes (AMD, Intel, and NVIDIA with
# nvidia-drm), NVIDIA's own nodes, AMD's compute node, and WSL2's GPU paravirtualization (Vulkan through Dozen).
_GPU_NODES = ("/dev/dri/renderD*", "/dev/nvidia[0-9]*", "/dev/kfd", "/dev/dxg")


def gpu_device_present() -> bool:
    """Whether a GPU backend could find a device here. On Linux, a GPU driver needs a device node: where there is
    none (a server, a container, a VM without a GPU), the GPU backends are not loaded at all, so a machine without
    a GPU runs exactly as a CPU-only build (loading ggml-vulkan and the Vulkan drivers costs some 60 MB of memory).
    ``GGML_VK_VISIBLE_DEVICES`` (a device named by hand, e.g. lavapipe, Mesa's Vulkan on the CPU) and
    ``HEARTH_GPU=on`` load them anyway. Elsewhere (Windows) the drivers are asked."""
    if os.environ.get("HEARTH_GPU", "").strip().lower() == "on" or os.environ.get("GGML_VK_VISIBLE_DEVICES"):
        return True
    if not sys.platform.startswith("linux"):
        return True
    return any(glob.glob(pattern) for pattern in _GPU_NODES)


_RPC_LIBRARY = re.compile(r"^(?:lib)?ggml-rpc\.(?:so|dll|dylib)$")  # other machines' devices: kept with the GPU off


_loaded: Backends | None = None


class _DevCaps(ctypes.Structure):
    _fields_ = [("async_", ctypes.c_bool), ("host_buffer", ctypes.c_bool), ("buffer_from_host_ptr", ctypes.c_bool),
                ("events", ctypes.c_bool), ("mmap_support", ctypes.c_bool)]


class DevProps(ctypes.Structure):
    """``struct ggml_backend_dev_props``, as ``ggml_backend_dev_get_props`` fills it (ggml/include/ggml-backend.h):
    ``device_id`` is the PCI address of a PCI device ("0000:c1:00.0"), NULL when unknown."""

    _fields_ = [("name", ctypes.c_char_p), ("description", ctypes.c_char_p), ("memory_free", ctypes.c_size_t),
                ("memory_total", ctypes.c_size_t), ("type", ctypes.c_int), ("device_id", ctypes.c_char_p),
                ("caps", _DevCaps)]


def lib_dir() -> Path:
    """The folder that holds llama-cpp-python's native libraries."""
    import llama_cpp

    return Path(llama_cpp.__file__).resolve().parent / "lib"


def library(stem: str, folder: Path | None = None) -> ctypes.CDLL:
    """The copy of ``lib<stem>`` that libllama links, e.g. ``library("ggml")``.

    A wheel cannot hold symlinks, so llama_cpp/lib has ``libggml.so``, ``libggml.so.0`` and
    ``libggml.so.0.25.3`` as three separate files. libllama loads the one its DT_NEEDED names (the
    soname, ``libggml.so.0``); loading another copy would give a second ggml with its own, empty,
    backend registry. So the soname's file comes first (the loader then hands back the loaded one).
    """
    folder = folder or lib_dir()
    patterns = (f"lib{stem}.so.[0-9]", f"lib{stem}.so.[0-9][0-9]", f"lib{stem}.[0-9].dylib", f"lib{stem}.dylib",
                f"{stem}.dll", f"lib{stem}.dll", f"lib{stem}.so")
    for pattern in patterns:
        for path in sorted(glob.glob(str(folder / pattern))):
            return ctypes.CDLL(path)
    raise OSError(f"no lib{stem} in {folder}")


def _variants(folder: Path) -> list[str]:
    found = (_VARIANT.match(name) for name in os.listdir(folder))
    return sorted({m.group(1) for m in found if m and not m.group(1).endswith("-feats")})


def _mapped_variant() -> str:
    """The CPU variant library mapped into this process (Linux: /proc/self/maps)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return ""
    for line in maps.splitlines():
        m = _VARIANT.match(os.path.basename(line.split()[-1])) if line.split() else None
        if m:
            return m.group(1)
    return ""


def _scored_variant(folder: Path, variants: list[str]) -> str:
    """The variant ggml's own rule picks: the highest ``ggml_backend_score()`` (ggml-backend-reg.cpp)."""
    best, best_score = "", 0
    for name in variants:
        paths = glob.glob(str(folder / f"*ggml-cpu-{name}.*"))
        if not paths:
            continue
        try:
            lib = ctypes.CDLL(paths[0])
        except OSError:
            continue
        try:
            score = int(lib.ggml_backend_score())
        except AttributeError:
            continue
        finally:
            _unload(lib)
        if score > best_score:
            best, best_score = name, score
    return best


def _unload(lib: ctypes.CDLL) -> None:
    """Unmap a variant opened only to read its score, as ggml's own loader does (ggml-backend-reg.cpp): left
    mapped, every variant shows in /proc/self/maps and ``_mapped_variant`` could name one ggml did not load."""
    import _ctypes

    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
    if close is not None:
        close(lib._handle)


def load_backends() -> Backends:
    """Register llama.cpp's backends in this process (once) and say what was loaded."""
    global _loaded
    if _loaded is not None:
        return _loaded
    import llama_cpp  # loads libllama and libggml

    folder = lib_dir()
    ggml = library("ggml", folder)
    size_t, vp = ctypes.c_size_t, ctypes.c_void_p
    ggml.ggml_backend_reg_count.restype = size_t
    ggml.ggml_backend_reg_get.restype = vp
    ggml.ggml_backend_reg_get.argtypes = [size_t]
    variants = _variants(folder)
    dynamic = ggml.ggml_backend_reg_count() == 0
    gpu_off = gpu_disabled()
    no_device = not gpu_off and not gpu_device_present()
    if dynamic and (gpu_off or no_device):
        _load_without_gpu(ggml, folder, variants)
    elif dynamic:
        ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
        ggml.ggml_backend_load_all_from_path(os.fsencode(folder))
    try:
        base = library("ggml-base", folder)
    except OSError:  # older builds keep the registry's names in libggml itself
        base = ggml
    base.ggml_backend_reg_name.restype = ctypes.c_char_p
    base.ggml_backend_reg_name.argtypes = [vp]
    registered = [
        (base.ggml_backend_reg_name(ggml.ggml_backend_reg_get(i)) or b"").decode()
        for i in range(ggml.ggml_backend_reg_count())
    ]
    variant = ""
    if dynamic and variants:
        variant = (_mapped_variant() if sys.platform.startswith("linux") else "") or _scored_variant(
            folder, variants
        )
    llama_cpp.llama_backend_init()
    _loaded = Backends(dynamic=dynamic, cpu_variant=variant, cpu_variants=variants, registered=registered,
                       gpu_off=gpu_off, no_gpu_device=no_device and dynamic)
    return _loaded


def _load_without_gpu(ggml: ctypes.CDLL, folder: Path, variants: list[str]) -> None:
    """What ``ggml_backend_load_all_from_path`` loads, less the GPU backends: the CPU variant ggml's own rule
    picks (``_scored_variant``) and RPC, each with ``ggml_backend_load`` (ggml-backend.h)."""
    ggml.ggml_backend_load.restype = ctypes.c_void_p
    ggml.ggml_backend_load.argtypes = [ctypes.c_char_p]
    best = _scored_variant(folder, variants) if variants else ""
    for name in sorted(os.listdir(folder)):
        variant = _VARIANT.match(name)
        if (variant and variant.group(1) == best) or _RPC_LIBRARY.match(name):
            ggml.ggml_backend_load(os.fsencode(folder / name))
