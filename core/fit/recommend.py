"""Which quant of a model to download: the best one that fits, by the rules users rely on.

The rules (llama.cpp's quantize table of perplexity vs size, and the advice of the main GGUF
publishers): ``Q4_K_M`` is the balanced default; small models (under ~8B parameters) lose more
from quantization, so take ``Q5_K_M`` or better when it fits (``Q8_0`` under ~3B); 2- and 3-bit
quants cost a lot of quality and are often slower on CPU, so take them only when nothing else fits,
and larger models tolerate them better (3-bit from ~30B, 2-bit from ~70B). Among the quants good
enough, prefer the one that runs fully on the GPU over a bigger one that must be split.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from core.fit.shape import ModelShape
from core.fit.verdict import FitVerdict, assess, gb
from core.hardware import Hardware
from core.units import human_count

SMALL_MODEL = 8e9
TINY_MODEL = 3e9
LARGE_MODEL = 30e9
HUGE_MODEL = 70e9
_SPEED = {"full_gpu": 0, "partial_gpu": 1, "cpu": 2, "across_machines": 3, "too_large": 4}
# Preferred quants in order, by model size (the first that fits at the best speed wins).
_PREFERRED_TINY = ["Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M"]
_PREFERRED_SMALL = ["Q6_K", "Q5_K_M", "Q8_0", "Q5_K_S", "Q4_K_M"]
_PREFERRED = ["Q4_K_M", "Q5_K_M", "Q4_K_S", "IQ4_XS", "Q6_K", "Q5_K_S", "IQ4_NL", "Q4_0"]
_BITS_RE = re.compile(r"(?:^|[-_])(?:I?Q|TQ)(\d)")


def quant_bits(name: str) -> int | None:
    """The nominal bit count of a quant name (``Q4_K_M`` → 4, ``IQ2_XS`` → 2, ``F16`` → 16)."""
    upper = name.upper()
    if upper in ("F16", "BF16", "FP16"):
        return 16
    if upper in ("F32", "FP32"):
        return 32
    if upper.startswith("MXFP4"):
        return 4
    match = _BITS_RE.search(upper)
    return int(match[1]) if match else None


def _lowest_acceptable_bits(parameters: float) -> int:
    if parameters >= HUGE_MODEL:
        return 2
    if parameters >= LARGE_MODEL:
        return 3
    return 4


@dataclass(frozen=True)
class Recommendation:
    """The quant to take (None when none fits), why, and the verdict of every quant considered."""

    quant: str | None
    reason: str
    verdicts: dict[str, FitVerdict] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "quant": self.quant,
            "reason": self.reason,
            "verdicts": {q: v.to_dict() for q, v in self.verdicts.items()},
        }


def recommend(
    quants: Iterable[tuple[str, int]],
    shape: ModelShape,
    n_ctx: int = 4096,
    hardware: Hardware | None = None,
    **options: Any,
) -> Recommendation:
    """Pick among ``(quant_name, size_bytes)`` pairs of one model; ``shape`` is read from any of them.

    ``options`` go to :func:`assess` (``workers`` and ``worker_names`` count the user's other machines)."""
    if hardware is None:
        from core.hardware import detect_hardware

        hardware = detect_hardware()
    sizes: dict[str, int] = {}
    for name, size in quants:
        if size > 0 and (name not in sizes or size < sizes[name]):
            sizes[name] = int(size)
    if not sizes:
        return Recommendation(None, "There is no GGUF file to choose from.")
    verdicts = {
        name: assess(shape, hardware, n_ctx=n_ctx, weight_bytes=size, **options)
        for name, size in sizes.items()
    }
    fitting = [q for q, v in verdicts.items() if v.fits]
    if not fitting:
        smallest = min(sizes, key=lambda q: sizes[q])
        return Recommendation(
            None,
            f"None of the quants fits: even {smallest} needs about {gb(verdicts[smallest].estimate.ram_bytes)}, "
            f"and {gb(hardware.ram_available_bytes)} of RAM is available. Pick a smaller model or a "
            "shorter context.",
            verdicts,
        )
    params = float(shape.parameter_count)
    floor = _lowest_acceptable_bits(params)
    preferred = (
        _PREFERRED_TINY if params < TINY_MODEL else _PREFERRED_SMALL if params < SMALL_MODEL else _PREFERRED
    )
    size_words = f"a {human_count(int(params))}-parameter model"

    def acceptable(q: str) -> bool:
        bits = quant_bits(q)
        return bits is None or bits >= floor

    good = [q for q in fitting if acceptable(q)]
    if not good:
        pick = max(fitting, key=lambda q: sizes[q])
        return Recommendation(
            pick,
            f"{pick} is the only kind of quant that fits ({verdicts[pick].kind.replace('_', ' ')}); "
            f"below {floor} bits {size_words} loses much quality and often runs slower. "
            "A smaller model at Q4_K_M may answer better.",
            verdicts,
        )
    best_speed = min(_SPEED[verdicts[q].kind] for q in good)
    fastest = [q for q in good if _SPEED[verdicts[q].kind] == best_speed]
    upper = {q.upper(): q for q in fastest}
    for wanted in preferred:
        if wanted in upper:
            pick = upper[wanted]
            break
    else:
        # None of the usual names: the largest that runs at the best speed, capped at 8 bits.
        capped = [q for q in fastest if (quant_bits(q) or 8) <= 8] or fastest
        pick = max(capped, key=lambda q: sizes[q])
    verdict = verdicts[pick]
    reason = _reason(pick, verdict, params, size_words, sizes, verdicts)
    if shape.projector is not None:  # it comes with the download and loads beside the model
        name = f" {shape.projector.name}" if shape.projector.name else ""
        reason += f" The memory counts the vision projector{name} too."
    return Recommendation(pick, reason, verdicts)


def _reason(
    pick: str,
    verdict: FitVerdict,
    params: float,
    size_words: str,
    sizes: dict[str, int],
    verdicts: dict[str, FitVerdict],
) -> str:
    where = {
        "full_gpu": "runs fully on the GPU",
        "partial_gpu": f"runs with {verdict.gpu_layers} layers on the GPU",
        "cpu": "runs on the CPU",
        "across_machines": "runs split across this computer and your other machines",
    }[verdict.kind]
    if params < TINY_MODEL:
        rule = f"for {size_words}, quantization costs more quality, so Q8_0 is preferred when it fits"
    elif params < SMALL_MODEL:
        rule = f"for {size_words} (under ~8B), Q5_K_M or better keeps noticeably more quality than Q4"
    else:
        rule = f"Q4_K_M is the balanced default for {size_words}"
    bigger = [q for q in sizes if sizes[q] > sizes[pick] and verdicts[q].fits]
    slower = [q for q in bigger if _SPEED[verdicts[q].kind] > _SPEED[verdict.kind]]
    extra = f" Larger quants ({', '.join(sorted(slower))}) would not run as fast here." if slower else ""
    return f"{pick} {where} ({gb(verdict.total_bytes)} in all): {rule}.{extra}"
