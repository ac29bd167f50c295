"""A PEFT LoRA adapter → llama.cpp's GGUF LoRA adapter file.

Format (llama.cpp ``convert_lora_to_gguf.py`` and ``src/llama-adapter.cpp``): ``general.type =
adapter``, ``adapter.type = lora``, ``adapter.lora.alpha`` (f32), ``general.architecture`` of the
base; per adapted weight ``<base tensor>.lora_a`` with ggml dims ``[in, rank]`` (numpy ``(rank,
in)``, PEFT's A as is) and ``<base tensor>.lora_b`` with dims ``[rank, out]`` (numpy ``(out,
rank)``, PEFT's B). llama.cpp checks ``base.ne[0] == a.ne[0]``, ``base.ne[1] == b.ne[1]`` and
``a.ne[1] == b.ne[0]``, and scales each pair by ``alpha / rank``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import ExportError
from core.events import Progress, ProgressCallback
from core.gguf_export.adapter import LoraAdapter, check_against_base, load_lora_adapter

LORA_TYPES = ("f32", "f16", "bf16", "q8_0")


@dataclass(frozen=True)
class LoraExport:
    """What ``export_lora_gguf`` wrote."""

    path: Path
    architecture: str
    alpha: float
    n_pairs: int
    size_bytes: int


def _storage(values: np.ndarray, out_type: str) -> tuple[np.ndarray, object]:
    import gguf

    from core.gguf_export.gguf_stream import encode_tensor

    qtype = gguf.GGMLQuantizationType[out_type.upper()]
    # Q8_0 blocks run along a row (32 values): rows that do not divide fall back to F16, as the converter does.
    if qtype == gguf.GGMLQuantizationType.Q8_0 and values.shape[-1] % 32:
        qtype = gguf.GGMLQuantizationType.F16
    return encode_tensor(values, int(qtype)), qtype


def write_lora_gguf(adapter: LoraAdapter, out: Path, out_type: str = "f32") -> Path:
    """Write an already-mapped adapter as a GGUF LoRA (atomically)."""
    import gguf

    if out_type not in LORA_TYPES:
        raise ExportError(f"Unknown adapter type '{out_type}': use one of {', '.join(LORA_TYPES)}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, adapter.arch.arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(adapter.alpha))
        writer.add_name(adapter.name)
        for pair in adapter.pairs:
            for suffix, values in ((".lora_a", pair.a), (".lora_b", pair.b)):
                data, qtype = _storage(values, out_type)
                writer.add_tensor(pair.gguf_name + suffix, data, raw_dtype=qtype)  # type: ignore[arg-type]
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def default_lora_path(adapter: LoraAdapter, out_type: str) -> Path:
    return adapter.folder / f"{adapter.name}-lora-{out_type}.gguf"


def export_lora_gguf(
    adapter: str | Path,
    out: str | Path | None = None,
    *,
    out_type: str = "f32",
    base: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> LoraExport:
    """Convert a PEFT LoRA adapter (library name or folder) to a GGUF LoRA llama.cpp can load.

    When a base GGUF is known (``base`` or the adapter's config/manifest) the adapter's tensor names
    and shapes are checked against it first.
    """
    if progress:
        progress(Progress("read", 0, 1, "reading the adapter"))
    lora, base_gguf = load_lora_adapter(adapter, base=base)
    if base_gguf is not None:
        from core.gguf_export.gguf_stream import GGUFSource

        with GGUFSource(base_gguf) as source:
            if source.architecture != lora.arch.arch:
                raise ExportError(
                    f"The base is a '{source.architecture}' model but the adapter maps to '{lora.arch.arch}'."
                )
            check_against_base(lora, {n: t.shape for n, t in source.tensors.items()})
    path = Path(out).expanduser() if out else default_lora_path(lora, out_type)
    if path.suffix.lower() != ".gguf":
        raise ExportError(f"The output file must end in .gguf (got {path.name}).")
    write_lora_gguf(lora, path, out_type)
    if progress:
        progress(Progress("write", 1, 1, f"wrote {path}"))
    return LoraExport(path, lora.arch.arch, lora.alpha, len(lora.pairs), path.stat().st_size)
