"""Merging an adapter (or full fine-tuned weights) into a base model, then quantizing.

GGUF base: the base is streamed tensor by tensor; only adapted tensors are dequantized
(``gguf.quants.dequantize``), get ``scale · B @ A`` added in the GGUF orientation and are written as
F16/BF16/F32; every other tensor and all metadata (tokenizer and chat template included) are copied
byte for byte. llama.cpp's quantizer then makes the requested type. Memory stays near one tensor.
Safetensors base: peft's ``merge_and_unload`` in torch, then Hearth's HF → GGUF converter.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ExportError
from core.events import CancelToken, Progress, ProgressCallback
from core.gguf_export.adapter import check_against_base, is_full_fine_tune, load_lora_adapter
from core.gguf_export.gguf_stream import (
    GGUFSource,
    GGUFStreamWriter,
    TensorSpec,
    encode_tensor,
    encode_value,
    float_type,
)
from core.gguf_export.names import ArchInfo, TensorNamer
from core.gguf_export.quantize import normalize_quant, quantize_gguf

Transform = Callable[[np.ndarray], np.ndarray]
FLOAT_TYPES = ("F32", "F16", "BF16")


@dataclass(frozen=True)
class MergeResult:
    path: Path
    name: str | None  # library name when registered
    quant: str
    changed_tensors: int


def chat_kv(source: GGUFSource) -> list[tuple[str, bytes]]:
    """What a base lacks to chat: its family's chat template and end-of-turn token id.

    The family is recognised from the architecture or the vocabulary's turn markers
    (``core.engine.templates.choose_format``); nothing is added for an unknown family.
    """
    from core.engine.templates import FAMILY_MARKERS, FAMILY_STOPS, choose_format

    markers = source.token_ids([m for m, _ in FAMILY_MARKERS] + [s for v in FAMILY_STOPS.values() for s in v])
    template = source.metadata.get("tokenizer.chat_template")
    fmt = choose_format(source.architecture, template if isinstance(template, str) else None,
                        lambda text: text in markers)
    out: list[tuple[str, bytes]] = []
    if template is None and fmt.template:
        out.append(("tokenizer.chat_template", encode_value(fmt.template)))
    stops = [markers[s] for s in fmt.stop if s in markers]
    if "tokenizer.ggml.eot_token_id" not in source.kv_ranges and stops:
        out.append(("tokenizer.ggml.eot_token_id", encode_value(stops[0])))
    return out


def copied_metadata(source: GGUFSource, overrides: dict[str, Any], *, drop: tuple[str, ...] = ()) -> list[tuple[str, bytes]]:
    """The source's key/values verbatim, with ``overrides`` replaced or added."""
    kv = [(k, source.raw_kv(k)) if k not in overrides else (k, encode_value(overrides[k]))
          for k in source.kv_ranges if k not in drop]
    kv += [(k, encode_value(v)) for k, v in overrides.items() if k not in source.kv_ranges]
    return kv + chat_kv(source)


def rewrite_gguf(
    source: GGUFSource,
    out: Path,
    transforms: dict[str, Transform],
    *,
    work_type: str = "F16",
    overrides: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """Copy ``source`` to ``out`` with the named tensors replaced by ``transform(dequantized)``."""
    import gguf

    matrix_type = float_type(work_type)
    f32 = int(gguf.GGMLQuantizationType.F32)
    specs = []
    for t in source.tensors.values():
        if t.name in transforms:
            specs.append(TensorSpec(t.name, t.shape, matrix_type if len(t.shape) >= 2 else f32))
        else:
            specs.append(TensorSpec(t.name, t.shape, t.ggml_type))
    kv = copied_metadata(source, overrides or {}, drop=("general.alignment",))
    total = len(specs)
    with GGUFStreamWriter(out, kv, specs) as writer:
        for n, spec in enumerate(specs):
            if cancel:
                cancel.raise_if_cancelled("The merge")
            if spec.name in transforms:
                values = transforms[spec.name](source.dequantize(spec.name))
                writer.write(spec.name, encode_tensor(values, spec.ggml_type))
                del values
            else:
                writer.write(spec.name, source.raw(spec.name))
            if progress:
                progress(Progress("merge", n + 1, total, spec.name))
        return writer.finish()


def _finish(intermediate: Path, out: Path, quant: str, register: bool, name: str | None,
            changed: int, progress: ProgressCallback | None) -> MergeResult:
    entry_name = quantize_and_register(intermediate, out, quant, register, name, progress)
    return MergeResult(out, entry_name, quant, changed)


def quantize_and_register(intermediate: Path, out: Path, quant: str, register: bool, name: str | None,
                          progress: ProgressCallback | None) -> str | None:
    """Quantize a merge's float intermediate to ``out`` (always removing it); the library name if registered."""
    # Always through llama.cpp's quantizer, so the file's types are exactly those of ``quant``.
    if progress:
        progress(Progress("quantize", 0, 1, f"quantizing to {quant}"))
    try:
        quantize_gguf(intermediate, out, quant, progress=progress)
    finally:
        intermediate.unlink(missing_ok=True)
    if not register:
        return None
    from core.library import Library

    return Library().register(out, name=name, source="merge").name


def output_path(name: str | None, out: str | Path | None, default_stem: str, quant: str) -> tuple[Path, str]:
    """Where a merged model goes: ``--out`` path, or the library's models folder."""
    from core.library.registry import model_name_for
    from core.paths import get_paths

    if out is not None and str(out).lower().endswith(".gguf"):
        path = Path(out).expanduser()
        return path, name or model_name_for(path)
    stem = str(out or name or f"{default_stem}-{quant.lower()}")
    path = get_paths().ensure().models / f"{stem}.gguf"
    return path, stem


def merge_adapter_gguf(
    base: str | Path,
    adapter: str | Path,
    out: str | Path,
    *,
    quant: str = "Q4_K_M",
    work_type: str = "F16",
    register: bool = False,
    name: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> MergeResult:
    """Merge a PEFT LoRA into a GGUF base, quantize to ``quant`` and optionally register the result.

    A full fine-tune (``--method full``: a whole model's weights where an adapter would be) is written over
    the base the same way (``merge_full_weights_gguf``)."""
    if (full := full_weights_folder(adapter)) is not None:
        return merge_full_weights_gguf(base, full, out, quant=quant, register=register, name=name,
                                       progress=progress, cancel=cancel)
    quant = normalize_quant(quant)
    work_type = quant if quant in FLOAT_TYPES else work_type.upper()
    out = Path(out)
    with GGUFSource(base) as source:
        lora, _ = load_lora_adapter(adapter, base=source.path)
        if lora.arch.arch != source.architecture:
            raise ExportError(f"The adapter is for a '{lora.arch.arch}' model but the base is '{source.architecture}'.")
        check_against_base(lora, {n: t.shape for n, t in source.tensors.items()})
        pairs = {p.gguf_name: p for p in lora.pairs}

        def add_delta(gguf_name: str) -> Transform:
            return lambda w: w + pairs[gguf_name].delta()

        transforms = {n: add_delta(n) for n in pairs}
        intermediate = out.with_name(f".{out.stem}.{work_type.lower()}.partial.gguf")
        overrides = {"general.name": f"{source.metadata.get('general.name', source.path.stem)} + {lora.name}",
                     "general.file_type": int(_file_type(work_type))}
        try:
            rewrite_gguf(source, intermediate, transforms, work_type=work_type, overrides=overrides,
                         progress=progress, cancel=cancel)
        except BaseException:
            intermediate.unlink(missing_ok=True)
            raise
    return _finish(intermediate, out, quant, register, name, len(transforms), progress)


def _file_type(work_type: str) -> int:
    import gguf

    return int({"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
                "BF16": gguf.LlamaFileType.MOSTLY_BF16}[work_type])


def full_weights_folder(adapter: str | Path) -> Path | None:
    """The folder of a full fine-tune given by library name or path; None for anything else (an adapter)."""
    from core.paths import get_paths

    folders = (Path(adapter).expanduser(), get_paths().adapters / str(adapter))
    return next((folder for folder in folders if is_full_fine_tune(folder)), None)


def merge_full_weights_gguf(
    base: str | Path,
    weights_folder: str | Path,
    out: str | Path,
    *,
    quant: str = "Q4_K_M",
    register: bool = False,
    name: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> MergeResult:
    """Replace a GGUF base's tensors by full fine-tuned weights (Hugging Face names, safetensors)."""
    from safetensors import safe_open

    quant = normalize_quant(quant)
    work_type = quant if quant in FLOAT_TYPES else "F16"
    out = Path(out)
    files = sorted(Path(weights_folder).glob("*.safetensors"))
    if not files:
        raise ExportError(f"{weights_folder} has no .safetensors weights.")
    with GGUFSource(base) as source:
        namer = TensorNamer(ArchInfo.from_gguf_metadata(source.metadata))
        transforms: dict[str, Transform] = {}
        for file in files:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                    target = namer.gguf_name(key.removesuffix(".weight"))
                    if target is None or target not in source.tensors:
                        continue
                    shape = tuple(handle.get_slice(key).get_shape())
                    if shape != source.tensors[target].shape:
                        raise ExportError(f"{key} is {shape} but {target} is {source.tensors[target].shape} in the base.")

                    def load(_: np.ndarray, file: Path = file, key: str = key, target: str = target) -> np.ndarray:
                        with safe_open(str(file), framework="pt") as h:
                            values = h.get_tensor(key).float().numpy()
                        perm = namer.row_permutation(target, values.shape[0]) if values.ndim == 2 else None
                        out: np.ndarray = values[perm] if perm is not None else values
                        return out + namer.value_shift(target)

                    transforms[target] = load
        if not transforms:
            raise ExportError(f"No weight in {weights_folder} matches a tensor of the base model.")
        intermediate = out.with_name(f".{out.stem}.{work_type.lower()}.partial.gguf")
        try:
            rewrite_gguf(source, intermediate, transforms, work_type=work_type,
                         overrides={"general.name": f"{source.metadata.get('general.name', source.path.stem)} + "
                                                    f"{Path(weights_folder).name}",
                                    "general.file_type": _file_type(work_type)},
                         progress=progress, cancel=cancel)
        except BaseException:
            intermediate.unlink(missing_ok=True)
            raise
    return _finish(intermediate, out, quant, register, name, len(transforms), progress)


def merge_adapter_safetensors(
    base_folder: str | Path,
    adapter: str | Path,
    out: str | Path,
    *,
    tokenizer_from: str | Path,
    quant: str = "Q4_K_M",
    register: bool = False,
    name: str | None = None,
    progress: ProgressCallback | None = None,
) -> MergeResult:
    """Merge a PEFT LoRA into a Hugging Face (safetensors) base in torch and convert it to GGUF."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from core.gguf_export.adapter import find_adapter_folder
    from core.gguf_export.hf_convert import convert_hf_folder

    quant = normalize_quant(quant)
    work_type = quant if quant in FLOAT_TYPES else "F16"
    out = Path(out)
    folder = find_adapter_folder(adapter)
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("peft_type", "LORA") != "LORA":
        raise ExportError("Only LoRA adapters can be merged.")
    if progress:
        progress(Progress("merge", 0, 2, "merging in torch"))
    model = AutoModelForCausalLM.from_pretrained(str(base_folder), dtype="float32")
    merged = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".merge-") as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        del merged, model
        intermediate = out.with_name(f".{out.stem}.{work_type.lower()}.partial.gguf")
        convert_hf_folder(tmp, intermediate, tokenizer_from=tokenizer_from, out_type=work_type,
                          name=f"{Path(base_folder).name} + {folder.name}")
    return _finish(intermediate, out, quant, register, name, -1, progress)
