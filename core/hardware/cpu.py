"""The CPU: model name, core counts and the instruction-set features llama.cpp's kernels use.

Linux reads ``/proc/cpuinfo`` (x86 ``flags``, ARM ``Features``); macOS reads ``sysctl``
(``machdep.cpu.*`` on Intel, ``hw.optional.*`` on Apple Silicon). Other systems get the model
name from :mod:`platform` and no feature list.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path

from core.hardware.info import CPUInfo

# /proc/cpuinfo flag -> the name llama.cpp's system info uses (ggml-cpu feature checks).
_X86_FLAGS = {
    "pni": "SSE3",
    "ssse3": "SSSE3",
    "sse4_1": "SSE4_1",
    "sse4_2": "SSE4_2",
    "avx": "AVX",
    "avx2": "AVX2",
    "fma": "FMA",
    "f16c": "F16C",
    "bmi2": "BMI2",
    "avx_vnni": "AVX_VNNI",
    "avx512f": "AVX512F",
    "avx512bw": "AVX512BW",
    "avx512vl": "AVX512VL",
    "avx512vbmi": "AVX512_VBMI",
    "avx512_vnni": "AVX512_VNNI",
    "avx512_bf16": "AVX512_BF16",
    "amx_int8": "AMX_INT8",
    "amx_bf16": "AMX_BF16",
}
# ARM hwcaps (Linux ``Features`` line) -> llama.cpp names.
_ARM_FLAGS = {
    "asimd": "NEON",
    "fphp": "FP16",
    "asimdhp": "FP16_VA",
    "asimddp": "DOTPROD",
    "i8mm": "MATMUL_INT8",
    "sve": "SVE",
    "sve2": "SVE2",
    "sme": "SME",
}
# macOS sysctl keys -> llama.cpp names (Apple Silicon ``hw.optional.*`` and Intel ``machdep.cpu.*``).
_MAC_ARM_KEYS = {
    "hw.optional.neon": "NEON",
    "hw.optional.arm.FEAT_FP16": "FP16",
    "hw.optional.neon_fp16": "FP16_VA",
    "hw.optional.arm.FEAT_DotProd": "DOTPROD",
    "hw.optional.arm.FEAT_I8MM": "MATMUL_INT8",
    "hw.optional.arm.FEAT_BF16": "BF16",
    "hw.optional.arm.FEAT_SME": "SME",
}
_MAC_X86_FEATURES = {
    "SSE3": "SSE3",
    "SSSE3": "SSSE3",
    "SSE4.1": "SSE4_1",
    "SSE4.2": "SSE4_2",
    "AVX1.0": "AVX",
    "AVX2": "AVX2",
    "FMA": "FMA",
    "F16C": "F16C",
    "BMI2": "BMI2",
    "AVX512F": "AVX512F",
    "AVX512BW": "AVX512BW",
    "AVX512VL": "AVX512VL",
    "AVX512VNNI": "AVX512_VNNI",
}
SYSCTL_KEYS = [
    "machdep.cpu.brand_string",
    "machdep.cpu.features",
    "machdep.cpu.leaf7_features",
    "hw.memsize",
    "hw.physicalcpu",
    "hw.logicalcpu",
    "iogpu.wired_limit_mb",
    "hw.optional.arm64",
    *_MAC_ARM_KEYS,
]


def parse_proc_cpuinfo(text: str) -> tuple[str, list[str]]:
    """The model name and llama.cpp-style feature names from ``/proc/cpuinfo`` text."""
    model = ""
    raw: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not raw:
            raw = set(value.split())
    features = [name for flag, name in _X86_FLAGS.items() if flag in raw]
    features += [name for flag, name in _ARM_FLAGS.items() if flag in raw]
    return model, features


def parse_sysctl(text: str) -> dict[str, str]:
    """``sysctl key key …`` output (``key: value`` lines) as a dict; unknown keys are absent."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        # Unknown keys print "sysctl: unknown oid '…'" on stderr (merged output must not add a key).
        if sep and key.strip() and " " not in key.strip() and key.strip() != "sysctl":
            values[key.strip()] = value.strip()
    return values


def run_sysctl(keys: Iterable[str] = SYSCTL_KEYS) -> dict[str, str]:
    """Ask macOS's ``sysctl`` for ``keys``; an empty dict where there is no sysctl."""
    try:
        done = subprocess.run(["sysctl", *keys], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return {}
    return parse_sysctl(done.stdout)


def mac_features(values: dict[str, str]) -> list[str]:
    features = [name for key, name in _MAC_ARM_KEYS.items() if values.get(key, "0").strip() == "1"]
    x86 = set(
        (values.get("machdep.cpu.features", "") + " " + values.get("machdep.cpu.leaf7_features", "")).split()
    )
    features += [name for flag, name in _MAC_X86_FEATURES.items() if flag in x86]
    return features


def _core_counts() -> tuple[int | None, int | None]:
    import psutil

    return psutil.cpu_count(logical=False), psutil.cpu_count(logical=True) or os.cpu_count()


def detect_cpu(
    *,
    system: str | None = None,
    cpuinfo_path: Path = Path("/proc/cpuinfo"),
    sysctl_values: dict[str, str] | None = None,
) -> CPUInfo:
    """Model, cores and features of this machine's CPU (arguments let tests feed fake answers)."""
    system = system or platform.system()
    arch = platform.machine() or "unknown"
    physical, logical = _core_counts()
    model, features = "", list[str]()
    if system == "Linux":
        try:
            model, features = parse_proc_cpuinfo(cpuinfo_path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            pass
    elif system == "Darwin":
        values = run_sysctl() if sysctl_values is None else sysctl_values
        model = values.get("machdep.cpu.brand_string", "")
        features = mac_features(values)
        if values.get("hw.physicalcpu", "").isdigit():
            physical = int(values["hw.physicalcpu"])
        if values.get("hw.logicalcpu", "").isdigit():
            logical = int(values["hw.logicalcpu"])
    if not model:
        model = platform.processor() or arch
    return CPUInfo(model=model, arch=arch, physical_cores=physical, logical_cores=logical, features=features)
