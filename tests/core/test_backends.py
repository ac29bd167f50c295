"""core.engine.backends: the dynamically loaded CPU variants of Hearth's llama.cpp build."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.runtime import module_command

PROBE = """
import json
from core.engine import backends
loaded = backends.load_backends()
again = backends.load_backends()
folder = backends.lib_dir()
print(json.dumps({"dynamic": loaded.dynamic, "variant": loaded.cpu_variant, "variants": loaded.cpu_variants,
                  "registered": loaded.registered, "same": again is loaded,
                  "scored": backends._scored_variant(folder, loaded.cpu_variants) if loaded.dynamic else ""}))
"""


def _probe() -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_every_cpu_variant_is_built_and_the_best_for_this_cpu_is_loaded() -> None:
    import llama_cpp

    lib = Path(llama_cpp.__file__).parent / "lib"
    if not list(lib.glob("*ggml-cpu-*")):
        pytest.skip("this llama.cpp has its CPU backend linked in (the macOS Metal build, or one not made by the Makefile): no variants to load")
    info = _probe()
    assert info["dynamic"] is True and info["same"] is True
    variants = info["variants"]
    assert isinstance(variants, list) and len(variants) >= 3 and ("x64" in variants or "armv8.0_1" in variants)
    assert "CPU" in info["registered"]  # type: ignore[operator]
    # Two ways of telling agree: the library mapped into the process, and ggml's own scores.
    assert info["variant"] in variants and info["variant"] == info["scored"]
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if " avx2" in flags:
        assert info["variant"] not in ("x64", "sse42", "sandybridge"), "an AVX2 CPU got a pre-AVX2 variant"


def test_hw_names_the_loaded_cpu_variant() -> None:
    done = subprocess.run(module_command("core", "hw", "--json"), capture_output=True, text=True, check=True)
    llama = json.loads(done.stdout)["llama"]
    assert llama["available"] is True
    words = subprocess.run(module_command("core", "hw"), capture_output=True, text=True, check=True).stdout
    line = next(line for line in words.splitlines() if line.startswith("CPU backend"))
    if llama["cpu_variants"]:
        assert llama["cpu_variant"] in llama["cpu_variants"]
        assert f"{llama['cpu_variant']} (picked for this CPU from {len(llama['cpu_variants'])} variants)" in line
    else:
        assert "built in" in line
