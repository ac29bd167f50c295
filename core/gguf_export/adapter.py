"""Reading a PEFT LoRA adapter folder into low-rank pairs named and laid out as llama.cpp expects.

The adapter is ``adapter_config.json`` + ``adapter_model.safetensors`` (peft's ``save_pretrained``).
Each pair is returned in the GGUF orientation of its base tensor: ``delta = scale · B @ A`` has the
numpy shape of the GGUF weight (rows = outputs), with B's rows permuted as the converter permutes
the base's rows, and any per-module scaling that one GGUF ``adapter.lora.alpha`` cannot express
(rsLoRA, ``rank_pattern``/``alpha_pattern``) folded into B.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ExportError, NotFoundError
from core.gguf_export.names import ArchInfo, TensorNamer, strip_peft_name
from core.paths import get_paths

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass
class LoraPair:
    """One adapted weight: ``delta = scale * b @ a`` in the GGUF tensor's numpy orientation."""

    gguf_name: str
    hf_module: str
    a: np.ndarray  # (rank, in)
    b: np.ndarray  # (out, rank), rows already in GGUF order, extra scaling folded in
    scale: float

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.b.shape[0]), int(self.a.shape[1])

    def delta(self) -> np.ndarray:
        return (self.scale * (self.b.astype(np.float32) @ self.a.astype(np.float32))).astype(np.float32)


@dataclass
class LoraAdapter:
    """A PEFT LoRA adapter resolved against a base architecture."""

    folder: Path
    config: dict[str, Any]
    arch: ArchInfo
    alpha: float  # the value written to adapter.lora.alpha (scale = alpha / rank)
    pairs: list[LoraPair] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.folder.name


def is_full_fine_tune(folder: Path) -> bool:
    """A full fine-tune's folder (``--method full``): a whole model's config.json and safetensors weights where an
    adapter would be, and no adapter_config.json."""
    return ((folder / "config.json").is_file() and not (folder / ADAPTER_CONFIG).is_file()
            and any(folder.glob("*.safetensors")))


def find_adapter_folder(name_or_path: str | Path) -> Path:
    """An adapter given by library name (the adapters folder) or by a PEFT folder's path."""
    candidates = [Path(name_or_path).expanduser()]
    if not Path(name_or_path).is_absolute():
        candidates.append(get_paths().adapters / str(name_or_path))
    for folder in candidates:
        if (folder / ADAPTER_CONFIG).is_file():
            return folder
        if is_full_fine_tune(folder):
            base = str(read_manifest(folder).get("base", {}).get("name") or "BASE")
            raise ExportError(
                f"'{folder.name}' is a full fine-tune: a whole model, not an adapter to put on one. Make it a "
                f"model of My Models with 'hearth merge {base} {folder.name}' (or \"Make a standalone model\" in "
                "the window) and chat with that."
            )
        if folder.is_dir():
            inner = sorted(p.parent for p in folder.glob(f"*/{ADAPTER_CONFIG}"))
            if inner:
                return inner[-1]
    raise NotFoundError(
        f"No adapter '{name_or_path}': give an adapter name from the library or a folder with "
        f"{ADAPTER_CONFIG} and {ADAPTER_WEIGHTS} (peft's save_pretrained output)."
    )


def read_manifest(folder: Path) -> dict[str, Any]:
    """The library manifest beside a PEFT folder (written by fine-tuning), or {} when there is none."""
    for candidate in (folder / "manifest.json", folder.parent / "manifest.json"):
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return {}
            return data if isinstance(data, dict) else {}
    return {}


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    # peft's get_pattern_key: a pattern matches a module name as a dotted suffix.
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


def load_adapter_tensors(folder: Path) -> dict[str, np.ndarray]:
    """Every tensor of ``adapter_model.safetensors`` as float32 numpy arrays."""
    weights = folder / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise ExportError(
            f"{folder} has no {ADAPTER_WEIGHTS}: save the adapter with safe_serialization (the default)."
        )
    from safetensors import safe_open

    out: dict[str, np.ndarray] = {}
    try:
        # numpy first: the window exports adapters and must not load torch (importing it on a worker
        # thread beside Qt crashed the process); bf16 has no numpy type and needs torch.
        with safe_open(str(weights), framework="numpy") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                out[key] = np.asarray(handle.get_tensor(key), dtype=np.float32)
        return out
    except Exception:  # any tensor numpy cannot hold: read them all with torch
        out = {}
    with safe_open(str(weights), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
            out[key] = handle.get_tensor(key).float().numpy()
    return out


def check_representable(config: dict[str, Any], keys: list[str]) -> None:
    """Refuse, with the reason, what a GGUF LoRA cannot carry."""
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise ExportError(f"The adapter is a {peft_type} adapter: only LoRA adapters can become a GGUF LoRA.")
    if config.get("use_dora") or any("lora_magnitude_vector" in k for k in keys):
        raise ExportError(
            "The adapter uses DoRA: its magnitude vectors rescale whole weight columns, which a GGUF LoRA "
            "(W + scale·B·A) cannot express. Train with plain LoRA to export an adapter."
        )
    full = [k for k in keys if "modules_to_save" in k or not re.search(r"\.lora_(A|B)\.", k)]
    if config.get("modules_to_save") or full:
        shown = ", ".join(full[:3]) or ", ".join(config.get("modules_to_save") or [])
        raise ExportError(
            f"The adapter saves full tensors ({shown}): a GGUF LoRA carries only low-rank pairs. Train "
            "without modules_to_save to export an adapter."
        )
    if config.get("fan_in_fan_out"):
        raise ExportError("The adapter was trained with fan_in_fan_out (Conv1D layers): not supported.")
    if any("lora_embedding" in k for k in keys):
        raise ExportError("The adapter adapts the token embeddings: only linear layers can be exported.")


def resolve_arch(folder: Path, config: dict[str, Any], base: str | Path | None) -> tuple[ArchInfo, Path | None]:
    """The base's architecture and block count, and the base GGUF when one is known."""
    from core.gguf_export.gguf_stream import GGUFSource

    def from_gguf(path: Path) -> tuple[ArchInfo, Path]:
        with GGUFSource(path) as source:
            return ArchInfo.from_gguf_metadata(source.metadata), path

    if base is not None:
        base_path = Path(base).expanduser()
        if base_path.is_dir() and (base_path / "config.json").is_file():
            return ArchInfo.from_hf_config(json.loads((base_path / "config.json").read_text())), None
        if not base_path.exists():
            from core.library import Library

            base_path = Path(Library().get(str(base)).path)
        return from_gguf(base_path)
    manifest = read_manifest(folder)
    hints = [config.get("base_model_name_or_path")] + [
        manifest.get(k) for k in ("base_model_path", "base_path", "base_model", "base")
    ]
    for hint in hints:
        if not isinstance(hint, str) or not hint:
            continue
        path = Path(hint).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            return from_gguf(path)
        if path.is_dir():
            if (path / "config.json").is_file():
                return ArchInfo.from_hf_config(json.loads((path / "config.json").read_text())), None
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return from_gguf(ggufs[0])
    raise ExportError(
        "The adapter does not say where its base model is (adapter_config.json's base_model_name_or_path "
        "is not a local folder or .gguf): give the base with --base MODEL (a library name, a .gguf or a "
        "Hugging Face model folder)."
    )


def load_lora_adapter(adapter: str | Path, *, base: str | Path | None = None) -> tuple[LoraAdapter, Path | None]:
    """Read, check and map a PEFT LoRA adapter; also returns the base GGUF when it was found."""
    folder = find_adapter_folder(adapter)
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"{folder / ADAPTER_CONFIG} is not readable JSON ({exc}).") from exc
    tensors = load_adapter_tensors(folder)
    check_representable(config, list(tensors))
    arch, base_gguf = resolve_arch(folder, config, base)
    namer = TensorNamer(arch)

    lora_alpha = float(config.get("lora_alpha", 8))
    r_default = int(config.get("r", 8))
    rslora = bool(config.get("use_rslora"))
    # One alpha for the whole file: llama.cpp scales every pair by alpha / rank (llama-adapter.cpp).
    alpha = lora_alpha * math.sqrt(r_default) if rslora else lora_alpha
    alpha_patterns = config.get("alpha_pattern") or {}

    pairs: list[LoraPair] = []
    modules = sorted({strip_peft_name(k) for k in tensors})
    for module in modules:
        prefix = [k for k in tensors if strip_peft_name(k) == module]
        a_key = next((k for k in prefix if ".lora_A." in k), None)
        b_key = next((k for k in prefix if ".lora_B." in k), None)
        if a_key is None or b_key is None:
            raise ExportError(f"The adapter has only half of the LoRA pair of {module}: it is damaged.")
        a, b = tensors[a_key], tensors[b_key]
        gguf_name = namer.gguf_name(module)
        if gguf_name is None:
            raise ExportError(
                f"The adapter adapts '{module}', which has no llama.cpp tensor in a '{arch.arch}' model: "
                "train without that target module."
            )
        rank = int(a.shape[0])
        module_alpha = float(_pattern_value(alpha_patterns, module, lora_alpha))
        peft_scale = module_alpha / math.sqrt(rank) if rslora else module_alpha / rank
        gguf_scale = alpha / rank
        if not math.isclose(peft_scale, gguf_scale, rel_tol=1e-6):
            b = b * (peft_scale / gguf_scale)  # fold what alpha/rank cannot say into B
        perm = namer.row_permutation(gguf_name, int(b.shape[0]))
        if perm is not None:
            b = b[perm]
        pairs.append(LoraPair(gguf_name, module, np.ascontiguousarray(a), np.ascontiguousarray(b), gguf_scale))
    if not pairs:
        raise ExportError(f"The adapter in {folder} has no LoRA weights.")
    return LoraAdapter(folder, config, arch, alpha, pairs), base_gguf


def check_against_base(adapter: LoraAdapter, base_tensors: dict[str, tuple[int, ...]]) -> None:
    """Refuse an adapter whose tensors are missing from, or shaped unlike, the base model."""
    for pair in adapter.pairs:
        shape = base_tensors.get(pair.gguf_name)
        if shape is None:
            raise ExportError(
                f"The base model has no tensor {pair.gguf_name} (adapted module {pair.hf_module}): this "
                "adapter was trained on another model."
            )
        if tuple(shape) != pair.shape:
            raise ExportError(
                f"{pair.gguf_name} is {tuple(shape)} in the base but {pair.shape} in the adapter: this adapter "
                "was trained on another model."
            )
