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
    """The devices in ggml's registry (the registry's backend names come from load_backends)."""
    ggml = _load(lib_dir, "ggml")
    base = _load(lib_dir, "ggml-base") or ggml
    if ggml is None or base is None:
        return []
    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    ggml.ggml_backend_dev_count.restype = sz
    ggml.ggml_backend_dev_get.restype = vp
    ggml.ggml_backend_dev_get.argtypes = [sz]
    for fn in (base.ggml_backend_dev_name, base.ggml_backend_dev_description):
        fn.restype = ctypes.c_char_p
        fn.argtypes = [vp]
    base.ggml_backend_dev_type.restype = ctypes.c_int
    base.ggml_backend_dev_type.argtypes = [vp]
    base.ggml_backend_dev_memory.argtypes = [vp, ctypes.POINTER(sz), ctypes.POINTER(sz)]
    devices = []
    for i in range(ggml.ggml_backend_dev_count()):
        dev = ggml.ggml_backend_dev_get(i)
        free, total = sz(0), sz(0)
        base.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        devices.append(
            {
                "name": (base.ggml_backend_dev_name(dev) or b"").decode(errors="replace"),
                "description": (base.ggml_backend_dev_description(dev) or b"").decode(errors="replace"),
                "kind": _DEV_TYPES.get(int(base.ggml_backend_dev_type(dev)), "other"),
                "free_bytes": int(free.value),
                "total_bytes": int(total.value),
            }
        )
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
        # llama.cpp answers yes for any build with the RPC backend (Hearth's always has it: other machines),
        # so a GPU backend must also be registered (CUDA, Metal, Vulkan, ...) for this machine's own GPU.
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload())
        and any(name not in _NOT_GPU_BACKENDS for name in loaded.registered),
        "system_info": llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip(),
        "backends": loaded.registered,
        "devices": [],
    }
    try:
        result["devices"] = _devices(os.path.join(os.path.dirname(llama_cpp.__file__), "lib"))
    except (OSError, AttributeError) as exc:
        result["error"] = f"llama.cpp's device list is not available: {exc}"
    return result


if __name__ == "__main__":
    json.dump(probe(), sys.stdout)
