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


_loaded: Backends | None = None


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
        try:
            score = int(ctypes.CDLL(paths[0]).ggml_backend_score()) if paths else 0
        except (OSError, AttributeError):
            continue
        if score > best_score:
            best, best_score = name, score
    return best


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
    if dynamic:
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
    _loaded = Backends(dynamic=dynamic, cpu_variant=variant, cpu_variants=variants, registered=registered)
    return _loaded
