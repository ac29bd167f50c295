"""Ask the installed llama.cpp what it can run on; prints one JSON object.

Run as a child process (``python -m core.hardware.llama_probe``) so that importing llama_cpp, and any
crash in a GPU driver it loads, stays out of the caller. The backends are loaded as every process of
ours loads them (core.engine.backends), which also says which CPU variant was picked. The device
list comes from ggml's backend registry
(``ggml_backend_dev_*`` in ggml/include/ggml-backend.h), which the Python binding does not wrap, so
it is called through ctypes on the bundled libggml.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from typing import Any

# enum ggml_backend_dev_type (ggml-backend.h)
_DEV_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel"}
# ggml backend registry names that never offload to this machine's GPU (ggml-rpc: other machines' devices).
_NOT_GPU_BACKENDS = ("CPU", "RPC", "BLAS")


def _load(lib_dir: str, stem: str) -> ctypes.CDLL | None:
    from pathlib import Path

    from core.engine.backends import library

    try:
        return library(stem, Path(lib_dir))  # the copy libllama links, whose registry is the live one
    except OSError:
        return None


def _devices(lib_dir: str) -> list[dict[str, Any]]:
    """The devices in ggml's registry, each with its backend ("CPU", "CUDA", "Vulkan", "RPC"...) and PCI id.

    A GPU that two backends list (an NVIDIA card under CUDA and Vulkan) is kept once, as llama.cpp's model
    loader does (``llama_model_load_from_file_impl``: the first device with a PCI id is used, a later one with
    the same id is skipped); the later one is marked ``duplicate_of``.
    """
    ggml = _load(lib_dir, "ggml")
    base = _load(lib_dir, "ggml-base") or ggml
    if ggml is None or base is None:
        return []
    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    ggml.ggml_backend_dev_count.restype = sz
    ggml.ggml_backend_dev_get.restype = vp
    ggml.ggml_backend_dev_get.argtypes = [sz]
    from core.engine.backends import DevProps

    base.ggml_backend_dev_get_props.argtypes = [vp, ctypes.POINTER(DevProps)]
    base.ggml_backend_dev_backend_reg.restype = vp
    base.ggml_backend_dev_backend_reg.argtypes = [vp]
    base.ggml_backend_reg_name.restype = ctypes.c_char_p
    base.ggml_backend_reg_name.argtypes = [vp]
    devices: list[dict[str, Any]] = []
    first_by_id: dict[str, str] = {}
    for i in range(ggml.ggml_backend_dev_count()):
        dev = ggml.ggml_backend_dev_get(i)
        props = DevProps()
        base.ggml_backend_dev_get_props(dev, ctypes.byref(props))
        backend = (base.ggml_backend_reg_name(base.ggml_backend_dev_backend_reg(dev)) or b"").decode(errors="replace")
        name = (props.name or b"").decode(errors="replace")
        device_id = (props.device_id or b"").decode(errors="replace")
        kind = _DEV_TYPES.get(int(props.type), "other")
        entry: dict[str, Any] = {
            "name": name,
            "description": (props.description or b"").decode(errors="replace"),
            "kind": kind,
            "backend": backend,
            "device_id": device_id,
            "free_bytes": int(props.memory_free),
            "total_bytes": int(props.memory_total),
            "duplicate_of": "",
        }
        if kind in ("gpu", "igpu") and backend != "RPC" and device_id:
            entry["duplicate_of"] = first_by_id.get(device_id, "")
            first_by_id.setdefault(device_id, name)
        devices.append(entry)
    return devices


def probe() -> dict[str, Any]:
    try:
        import llama_cpp
    except Exception as exc:  # any failure to load the native library is reported, not raised
        return {"available": False, "error": f"llama_cpp cannot be imported: {exc}"}
    from core.engine.backends import load_backends

    try:
        loaded = load_backends()
    except (OSError, AttributeError) as exc:
        return {"available": False, "error": f"llama.cpp's backends cannot be loaded: {exc}"}
    result: dict[str, Any] = {
        "available": True,
        "cpu_variant": loaded.cpu_variant,
        "cpu_variants": loaded.cpu_variants,
        "gpu_off": loaded.gpu_off,
        "no_gpu_device": loaded.no_gpu_device,
        "system_info": llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip(),
        "backends": loaded.registered,
        "devices": [],
    }
    try:
        result["devices"] = _devices(os.path.join(os.path.dirname(llama_cpp.__file__), "lib"))
    except (OSError, AttributeError) as exc:
        result["error"] = f"llama.cpp's device list is not available: {exc}"
    # llama.cpp's llama_supports_gpu_offload() answers yes for any build with the RPC backend (Hearth's always
    # has it: other machines) and for a GPU backend with no device (Vulkan without a GPU): this machine offloads
    # when one of this machine's GPUs is listed.
    result["gpu_offload"] = bool(llama_cpp.llama_supports_gpu_offload()) and any(
        d["kind"] in ("gpu", "igpu") and d.get("backend") not in _NOT_GPU_BACKENDS for d in result["devices"])
    return result


if __name__ == "__main__":
    json.dump(probe(), sys.stdout)
