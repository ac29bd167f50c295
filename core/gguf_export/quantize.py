"""Quantizing a GGUF model with llama.cpp's own quantizer (``llama_model_quantize``).

The type names are llama.cpp's ``llama_ftype`` names (``LLAMA_FTYPE_MOSTLY_Q4_K_M`` → ``Q4_K_M``).
Bits per weight are those of the type's main ggml block format (``gguf.GGML_QUANT_SIZES``); the
K-quant mixes (``_S``/``_M``/``_L``) keep some tensors in a larger type, so their files come out a
little larger than that figure.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.errors import ExportError
from core.events import Progress, ProgressCallback

# llama.cpp's quantizer logs "[  12/ 236]  blk.0.attn_q.weight - [...], type = ..." per tensor
# (llama-quant.cpp, llama_model_quantize_impl).
_TENSOR_LINE = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")

# Type name → (main ggml type, what it is). Order: largest to smallest.
QUANT_TYPES: dict[str, tuple[str, str]] = {
    "F32": ("F32", "32-bit float, no loss"),
    "F16": ("F16", "16-bit float, practically no loss"),
    "BF16": ("BF16", "bfloat16, practically no loss"),
    "Q8_0": ("Q8_0", "8-bit, very close to F16"),
    "Q6_K": ("Q6_K", "6-bit K-quant, near lossless"),
    "Q5_K_M": ("Q5_K", "5-bit K-quant mix, very good quality"),
    "Q5_K_S": ("Q5_K", "5-bit K-quant, small"),
    "Q5_0": ("Q5_0", "5-bit legacy"),
    "Q4_K_M": ("Q4_K", "4-bit K-quant mix, the usual choice"),
    "Q4_K_S": ("Q4_K", "4-bit K-quant, small"),
    "IQ4_XS": ("IQ4_XS", "4-bit i-quant, compact"),
    "IQ4_NL": ("IQ4_NL", "4-bit i-quant, non-linear"),
    "Q4_0": ("Q4_0", "4-bit legacy"),
    "Q3_K_L": ("Q3_K", "3-bit K-quant mix, large"),
    "Q3_K_M": ("Q3_K", "3-bit K-quant mix"),
    "Q3_K_S": ("Q3_K", "3-bit K-quant, small"),
    "Q2_K": ("Q2_K", "2-bit K-quant, large quality loss"),
    # Ternary (-1, 0, +1) types for models trained that way (BitNet b1.58 and kin); an ordinary model
    # loses most of its quality. TQ2_0 packs 4 weights a byte (66 bytes per 256), TQ1_0 5 a byte (54 per
    # 256): gguf.GGML_QUANT_SIZES, from ggml's block_tq2_0 and block_tq1_0.
    "TQ2_0": ("TQ2_0", "ternary (-1, 0, 1), for models trained so (BitNet b1.58); fast on CPU"),
    "TQ1_0": ("TQ1_0", "ternary, 5 weights a byte, for models trained so (BitNet b1.58); smallest"),
}


@dataclass(frozen=True)
class QuantType:
    name: str
    ggml_type: str
    bits_per_weight: float
    description: str


def quant_types() -> list[QuantType]:
    """Every quantization type ``quantize`` accepts, with its bits per weight."""
    import gguf

    out = []
    for name, (ggml_name, description) in QUANT_TYPES.items():
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ggml_name]]
        out.append(QuantType(name, ggml_name, round(size * 8 / block, 4), description))
    return out


def normalize_quant(name: str) -> str:
    """The canonical type name (case-insensitive); raises with the list when unknown."""
    upper = name.strip().upper()
    if upper not in QUANT_TYPES:
        raise ExportError(f"Unknown quantization type '{name}': use one of {', '.join(QUANT_TYPES)} "
                          "('hearth quants' lists them).")
    return upper


def quantize_gguf(
    src: str | Path, out: str | Path, quant: str, *, n_threads: int | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Quantize ``src`` to ``out`` (written atomically) with llama.cpp; keeps all metadata.

    Tensors already stored in another quantized type are re-quantized where the type mix asks for
    a different one (``allow_requantize``). llama.cpp's per-tensor log is caught, not printed: it
    becomes ``progress`` reports (one per tensor) and explains a failure.
    """
    import ctypes

    import llama_cpp

    from core.engine.backends import load_backends
    from core.engine.llama_log import LlamaLog

    load_backends()  # the quantizer runs on the CPU backend, which a GGML_BACKEND_DL build loads late

    def on_line(line: str) -> None:
        match = _TENSOR_LINE.match(line)
        if match and progress is not None:
            progress(Progress("quantize", int(match[1]), int(match[2]), match[3]))

    quant = normalize_quant(quant)
    src, out = Path(src), Path(out)
    if not src.is_file():
        raise ExportError(f"{src} does not exist.")
    if src.resolve() == out.resolve():
        raise ExportError("The quantized output must be another file than the input.")
    ftype = getattr(llama_cpp, "LLAMA_FTYPE_ALL_F32" if quant == "F32" else f"LLAMA_FTYPE_MOSTLY_{quant}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = n_threads or max(1, os.cpu_count() or 1)
    params.allow_requantize = True
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    log = LlamaLog(on_line)
    try:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), tmp.encode(), ctypes.byref(params))
        if rc != 0:
            reason = log.reason()
            raise ExportError(
                f"llama.cpp could not quantize {src.name} to {quant} (code {rc}"
                + (f": {reason}" if reason else "")
                + "): the model may use an architecture or tensor shapes this type does not support; try Q8_0."
            )
        os.replace(tmp, out)
    finally:
        log.on_line = None  # the log stays caught; progress reports stop with the call
        Path(tmp).unlink(missing_ok=True)
    return out
