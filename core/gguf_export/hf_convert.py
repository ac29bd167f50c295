"""A Hugging Face llama-family checkpoint (safetensors) → GGUF, one tensor at a time.

Follows what llama.cpp's ``convert_hf_to_gguf.py`` (``LlamaModel``) writes: the hyper-parameter
keys of the ``llama`` architecture, tensor names from the ``gguf`` package's tensor map, and Q/K
rows permuted for llama.cpp's rotary layout (``LlamaModel.permute``). The tokenizer cannot be
rebuilt from Hugging Face files without the converter's vocabulary code, so its ``tokenizer.*``
keys are copied verbatim from a GGUF of the same model (the original base, or any GGUF sharing
its vocabulary).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ExportError
from core.gguf_export.gguf_stream import GGUFSource, GGUFStreamWriter, TensorSpec, encode_tensor, encode_value
from core.gguf_export.names import ArchInfo, TensorNamer

CONVERTIBLE_ARCHS = {"llama"}


def _llama_hparams(cfg: dict[str, Any]) -> list[tuple[str, Any]]:
    arch = "llama"
    n_head = int(cfg["num_attention_heads"])
    head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // n_head)
    rope: dict[str, Any] = cfg["rope_parameters"] if isinstance(cfg.get("rope_parameters"), dict) else {}
    theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
    return [
        (f"{arch}.context_length", int(cfg.get("max_position_embeddings", 2048))),
        (f"{arch}.embedding_length", int(cfg["hidden_size"])),
        (f"{arch}.block_count", int(cfg["num_hidden_layers"])),
        (f"{arch}.feed_forward_length", int(cfg["intermediate_size"])),
        (f"{arch}.attention.head_count", n_head),
        (f"{arch}.attention.head_count_kv", int(cfg.get("num_key_value_heads") or n_head)),
        (f"{arch}.rope.dimension_count", head_dim),
        (f"{arch}.rope.freq_base", float(theta)),
        (f"{arch}.attention.layer_norm_rms_epsilon", float(cfg.get("rms_norm_eps", 1e-5))),
        (f"{arch}.vocab_size", int(cfg["vocab_size"])),
    ]


def convert_hf_folder(
    folder: str | Path,
    out: str | Path,
    *,
    tokenizer_from: str | Path,
    out_type: str = "F16",
    name: str | None = None,
) -> Path:
    """Write the safetensors model in ``folder`` as a GGUF (``F32``, ``F16`` or ``BF16`` matrices)."""
    import gguf
    from safetensors import safe_open

    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ExportError(f"{folder} has no config.json: it is not a Hugging Face model folder.")
    cfg = json.loads(config_path.read_text(encoding="utf-8"))
    info = ArchInfo.from_hf_config(cfg)
    if info.arch not in CONVERTIBLE_ARCHS:
        raise ExportError(
            f"Converting '{info.arch}' safetensors models to GGUF is not supported (only "
            f"{', '.join(sorted(CONVERTIBLE_ARCHS))}): merge into the model's GGUF instead."
        )
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{folder} has no .safetensors weights.")
    namer = TensorNamer(info)
    matrix_type = int(gguf.GGMLQuantizationType[out_type.upper()])
    f32 = int(gguf.GGMLQuantizationType.F32)

    plan: list[tuple[Path, str, str, tuple[int, ...]]] = []  # file, hf name, gguf name, shape
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                module = key.removesuffix(".weight")
                if key.endswith("rotary_emb.inv_freq"):
                    continue
                target = namer.gguf_name(module)
                if target is None:
                    raise ExportError(f"{key} has no llama.cpp tensor name in a {info.arch} model.")
                shape = tuple(handle.get_slice(key).get_shape())
                plan.append((file, key, target, shape))
    if cfg.get("tie_word_embeddings"):
        plan = [p for p in plan if p[2] != "output.weight"]  # llama.cpp reuses token_embd

    with GGUFSource(tokenizer_from) as vocab:
        tokenizer_kv = [(k, vocab.raw_kv(k)) for k in vocab.kv_ranges if k.startswith("tokenizer.")]
    if not tokenizer_kv:
        raise ExportError(f"{Path(tokenizer_from).name} has no tokenizer metadata to copy.")
    file_type = {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
                 "BF16": gguf.LlamaFileType.MOSTLY_BF16}[out_type.upper()]
    kv: list[tuple[str, bytes]] = [
        ("general.architecture", encode_value(info.arch)),
        ("general.type", encode_value("model")),
        ("general.name", encode_value(name or folder.name)),
        ("general.file_type", encode_value(int(file_type))),
        *[(k, encode_value(v)) for k, v in _llama_hparams(cfg)],
        *tokenizer_kv,
    ]
    specs = [TensorSpec(t, s, matrix_type if len(s) >= 2 else f32) for _, _, t, s in plan]
    with GGUFStreamWriter(out, kv, specs) as writer:
        for (file, key, target, _), spec in zip(plan, specs, strict=True):
            with safe_open(str(file), framework="pt") as handle:
                values = handle.get_tensor(key).float().numpy()
            perm = namer.row_permutation(target, values.shape[0]) if values.ndim == 2 else None
            if perm is not None:
                values = values[perm]
            writer.write(target, encode_tensor(np.ascontiguousarray(values), spec.ggml_type))
        return writer.finish()
