"""From Hugging Face module names and weights to llama.cpp's tensor names and layout.

Names come from the ``gguf`` package's tensor name map (``gguf.get_tensor_name_map``), the same
table llama.cpp's ``convert_hf_to_gguf.py`` uses, so every architecture it knows maps without a
table per model here. What the converter does to the weights themselves is repeated where it
matters for a weight delta: llama-family Q and K rows are permuted (``LlamaModel.permute``, for
llama.cpp's rotary embedding layout), so an adapter's B (the rows) gets the same permutation.
Gemma's ``norm.weight + 1`` only touches full norm weights (``value_shift``), never a LoRA delta of a projection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import ExportError

# Hugging Face ``model_type`` values whose GGUF architecture has another name
# (convert_hf_to_gguf.py registers these model classes under the GGUF arch on the right).
MODEL_TYPE_TO_ARCH: dict[str, str] = {
    "mistral": "llama",
    "gemma3_text": "gemma3",
    "gemma2_text": "gemma2",
    "qwen2_moe": "qwen2moe",
    "qwen3_moe": "qwen3moe",
    "phi3": "phi3",
}

# GGUF architectures whose converter permutes the Q and K projection rows (LlamaModel.permute).
PERMUTE_QK_ARCHS = {"llama"}
# Architectures whose norm weights the converter stores as ``w + 1`` (see ``TensorNamer.value_shift``).
NORM_SHIFT_ARCHS = {"gemma2", "gemma3"}

# Prefixes of language-model weights inside multimodal checkpoints (as convert_lora_to_gguf.py strips).
_LM_PREFIXES = (("model.language_model.", "model."), ("language_model.", ""))


def arch_for_model_type(model_type: str) -> str:
    """The GGUF architecture name of a Hugging Face ``model_type``; raises when llama.cpp has none."""
    import gguf

    arch = MODEL_TYPE_TO_ARCH.get(model_type, model_type)
    if arch not in gguf.MODEL_ARCH_NAMES.values():
        raise ExportError(
            f"Hugging Face model type '{model_type}' has no llama.cpp (GGUF) architecture: it cannot be "
            "exported to GGUF."
        )
    return arch


@dataclass(frozen=True)
class ArchInfo:
    """What the name mapping and weight layout need to know about the base model."""

    arch: str
    n_blocks: int
    n_head: int | None = None
    n_head_kv: int | None = None

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> ArchInfo:
        text = config.get("text_config") if isinstance(config.get("text_config"), dict) else None
        cfg = {**config, **text} if text else config
        model_type = str(cfg.get("model_type") or config.get("model_type") or "")
        n_blocks = cfg.get("num_hidden_layers")
        if not model_type or not isinstance(n_blocks, int):
            raise ExportError("The base model's config.json has no model_type/num_hidden_layers.")
        n_head = cfg.get("num_attention_heads")
        return cls(arch_for_model_type(model_type), n_blocks, n_head, cfg.get("num_key_value_heads", n_head))

    @classmethod
    def from_gguf_metadata(cls, metadata: dict[str, Any]) -> ArchInfo:
        arch = str(metadata.get("general.architecture", ""))
        n_blocks = metadata.get(f"{arch}.block_count")
        if not arch or not isinstance(n_blocks, int):
            raise ExportError("The base GGUF has no general.architecture/block_count: it is not a model file.")
        n_head = metadata.get(f"{arch}.attention.head_count")
        n_head_kv = metadata.get(f"{arch}.attention.head_count_kv", n_head)
        return cls(
            arch, n_blocks,
            n_head if isinstance(n_head, int) else None,
            n_head_kv if isinstance(n_head_kv, int) else None,
        )


def strip_peft_name(key: str) -> str:
    """``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`` → ``model.layers.0.self_attn.q_proj``."""
    name = key.removeprefix("base_model.model.")
    name = re.sub(r"\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)(\.[^.]+)?(\.weight)?$", "", name)
    for prefix, replacement in _LM_PREFIXES:
        if name.startswith(prefix):
            name = replacement + name[len(prefix):]
            break
    return name


class TensorNamer:
    """Hugging Face weight names → GGUF tensor names for one architecture and block count."""

    def __init__(self, info: ArchInfo) -> None:
        import gguf

        self.info = info
        arch_enum = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[info.arch]
        self._map = gguf.get_tensor_name_map(arch_enum, info.n_blocks)

    def gguf_name(self, hf_module: str) -> str | None:
        """``model.layers.0.self_attn.q_proj`` → ``blk.0.attn_q.weight`` (None when unknown)."""
        for prefix, replacement in _LM_PREFIXES:
            if hf_module.startswith(prefix):
                hf_module = replacement + hf_module[len(prefix):]
                break
        name = self._map.get_name(hf_module + ".weight", try_suffixes=(".weight", ".bias"))
        return str(name) if name else None

    def value_shift(self, gguf_name: str) -> float:
        """What the converter adds to a whole tensor's values: Gemma 2/3 norm weights are stored as ``w + 1``
        (llama.cpp's convert_hf_to_gguf.py; transformers' GGUF loader takes the 1 off again for training,
        ``Gemma2TensorProcessor``), so full weights written back into a GGUF get it back. Never for a delta."""
        return 1.0 if self.info.arch in NORM_SHIFT_ARCHS and gguf_name.endswith("norm.weight") else 0.0

    def row_permutation(self, gguf_name: str, n_rows: int) -> np.ndarray | None:
        """The row order the converter gives this tensor (Q/K in llama-family), or None when unchanged."""
        if self.info.arch not in PERMUTE_QK_ARCHS or self.info.n_head is None:
            return None
        if gguf_name.endswith("attn_q.weight"):
            return permute_qk_rows(n_rows, self.info.n_head, self.info.n_head)
        if gguf_name.endswith("attn_k.weight"):
            return permute_qk_rows(n_rows, self.info.n_head, self.info.n_head_kv or self.info.n_head)
        return None


def permute_qk_rows(n_rows: int, n_head: int, n_head_kv: int) -> np.ndarray:
    """Row indices of convert_hf_to_gguf's ``LlamaModel.permute``.

    There: ``w.reshape(n_head, 2, rows // n_head // 2, *rest).swapaxes(1, 2).reshape(w.shape)``
    (with ``n_head = n_head_kv`` for K), i.e. each head's two rotary halves are interleaved.
    """
    heads = n_head_kv if n_head_kv and n_head != n_head_kv else n_head
    index = np.arange(n_rows)
    return index.reshape(heads, 2, n_rows // heads // 2).swapaxes(1, 2).reshape(n_rows)
