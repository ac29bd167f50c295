"""Which model a fine-tune starts from, and loading it for training.

A base is a library model name or a ``.gguf`` path (trained on the dequantized GGUF weights, so the
adapter fits exactly the model the user runs), or a Hugging Face model folder or repo id found in
the local Hugging Face cache (nothing is downloaded). Resolving reads metadata only; ``load_for_training``
(training process only) builds the torch model and the tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import HearthError, NotFoundError, TrainingError
from core.paths import get_paths, hf_hub_cache

# transformers' GGUF loader maps these architectures to models; encoder-only and metadata groups are not trainable here.
_NOT_CAUSAL = {"general", "tokenizer", "t5", "umt5", "t5encoder"}
# transformers' GGUF config keys that are not the GGUF architecture name (its load_gguf_checkpoint renames
# the file's architecture to the key): ``None`` is no GGUF architecture at all. llama.cpp's converter writes
# Mistral 7B as 'llama' (transformers re-reads a 'llama' file named exactly "mistral" as mistral).
_GGUF_ARCH_OF_KEY: dict[str, str | None] = {
    "qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe", "gpt_oss": "gpt-oss", "minimax_m2": "minimax-m2",
    "mistral": None,
}
# GGUF architectures whose config class has a fixed default head size (Qwen3Config: 128) rather than
# hidden size / heads, and whose attention.key_length transformers' GGUF mapping does not read.
_HEAD_DIM_UNREAD = {"qwen3", "qwen3moe"}
# Converted GGUF bases kept in the cache (each is the model in its training dtype): the oldest go first.
KEEP_CONVERSIONS = 2


@dataclass(frozen=True)
class BaseModel:
    """A resolved base model."""

    kind: str  # "gguf" or "hf"
    name: str
    path: Path  # the .gguf file, or the Hugging Face model folder
    architecture: str
    parameters: int
    size_bytes: int
    chat_template: str | None
    context_length: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "name": self.name, "path": str(self.path), "architecture": self.architecture,
            "parameters": self.parameters, "size_bytes": self.size_bytes, "context_length": self.context_length,
        }


def resolve_base(name_or_path: str) -> BaseModel:
    """The base model a user named; ``NotFoundError`` saying what was looked for otherwise."""
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir():
        return _hf_folder(candidate, name_or_path)
    if candidate.suffix.lower() != ".gguf" and "/" in name_or_path and not candidate.exists():
        folder = _hf_cache_snapshot(name_or_path)
        if folder is not None:
            return _hf_folder(folder, name_or_path)
    from core.library import Library
    from core.library.gguf_meta import read_gguf_info

    try:
        entry = Library().get(name_or_path)
    except NotFoundError as exc:
        if "/" in name_or_path and not candidate.exists():
            raise NotFoundError(
                f"'{name_or_path}' is not in the library, not a file, and not a model in the Hugging Face "
                "cache: download it first ('hearth pull') or give a folder with config.json."
            ) from exc
        raise
    info = read_gguf_info(entry.path)
    return BaseModel(
        kind="gguf", name=entry.name, path=Path(entry.path), architecture=info.architecture,
        parameters=info.parameters, size_bytes=info.size_bytes, chat_template=info.chat_template,
        context_length=info.context_length,
    )


def _hf_cache_snapshot(repo_id: str) -> Path | None:
    repo = hf_hub_cache() / ("models--" + repo_id.replace("/", "--"))
    ref = repo / "refs" / "main"
    if ref.is_file():
        snap = repo / "snapshots" / ref.read_text().strip()
        if (snap / "config.json").is_file():
            return snap
    snaps = sorted((repo / "snapshots").glob("*/config.json"), key=lambda p: p.stat().st_mtime) if repo.is_dir() else []
    return snaps[-1].parent if snaps else None


def _hf_folder(folder: Path, display: str) -> BaseModel:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise NotFoundError(f"{folder} has no config.json: give a Hugging Face model folder or a .gguf file.")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    text_config = config.get("text_config") or config
    weights = list(folder.glob("*.safetensors")) + list(folder.glob("*.bin"))
    if not weights:
        raise NotFoundError(f"{folder} has no model weights (*.safetensors): the download is incomplete.")
    size = sum(p.stat().st_size for p in weights)
    dtype_bytes = 2 if str(config.get("torch_dtype") or config.get("dtype") or "").endswith("16") else 4
    template = None
    tok_config = folder / "tokenizer_config.json"
    if tok_config.is_file():
        template = json.loads(tok_config.read_text(encoding="utf-8")).get("chat_template")
    jinja = folder / "chat_template.jinja"
    if template is None and jinja.is_file():
        template = jinja.read_text(encoding="utf-8")
    return BaseModel(
        kind="hf", name=folder.name if Path(display).expanduser().is_dir() else display, path=folder,
        architecture=str(config.get("model_type", "unknown")), parameters=size // dtype_bytes, size_bytes=size,
        chat_template=template if isinstance(template, str) else None,
        context_length=text_config.get("max_position_embeddings"),
    )


def trainable_gguf_architectures() -> list[str]:
    """GGUF architectures the installed transformers can load for training."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    names = (_GGUF_ARCH_OF_KEY.get(a, a) for a in GGUF_CONFIG_MAPPING if a not in _NOT_CAUSAL)
    return sorted(a for a in names if a is not None)


def check_trainable(base: BaseModel) -> None:
    """``TrainingError`` when the installed transformers cannot build this base for training."""
    if base.kind != "gguf":
        return
    supported = trainable_gguf_architectures()
    if base.architecture not in supported:
        raise TrainingError(
            f"{base.name} is a '{base.architecture}' model, which cannot be loaded for training from GGUF "
            f"(supported: {', '.join(supported)}). Use the original Hugging Face model as the base instead."
        )


def sha256_of(path: Path, chunk: int = 8 << 20) -> str:
    """The SHA-256 of a file (or of a folder's weight files, in name order), read in chunks."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin"))
    for file in files:
        with open(file, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def _conversion_folder(base: BaseModel, dtype_name: str) -> Path:
    stat = base.path.stat()
    key = hashlib.sha1(f"{base.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{dtype_name}".encode()).hexdigest()[:16]
    return get_paths().cache / "gguf-for-training" / f"{base.path.stem}-{key}"


def load_for_training(base: BaseModel, *, dtype: Any, device: Any, four_bit: bool = False) -> tuple[Any, Any, Path]:
    """The transformers model (on ``device``, in ``dtype``) and tokenizer, and a folder holding them.

    A GGUF base is dequantized once and kept in the cache folder in the training dtype: converting a
    GGUF takes a minute (its metadata parser is slow), loading the converted copy takes seconds.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": dtype}
    if four_bit:
        from transformers import BitsAndBytesConfig

        kwargs = {"quantization_config": BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True), "device_map": {"": device}}
    try:
        if base.kind == "hf":
            folder = base.path
        else:
            folder = _conversion_folder(base, str(dtype).removeprefix("torch."))
            if not (folder / "hearth-complete").exists():
                _convert_gguf(base, folder, dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    except HearthError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise TrainingError(f"{base.name} could not be loaded for training: {exc}") from exc
    if not four_bit:
        model.to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.config.use_cache = False
    return model, tokenizer, folder


def _convert_gguf(base: BaseModel, folder: Path, dtype: Any) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tmp = folder.with_name(folder.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with _one_gguf_parse():
            tokenizer = AutoTokenizer.from_pretrained(str(base.path.parent), gguf_file=base.path.name)
            if base.chat_template and not tokenizer.chat_template:
                tokenizer.chat_template = base.chat_template
            # Dequantized to plain dense weights: GGUF blocks cannot be trained (transformers' GGUF quantizer).
            model = AutoModelForCausalLM.from_pretrained(
                str(base.path.parent), gguf_file=base.path.name, config=_gguf_config(base), dtype=dtype,
                quantization_config=GgufConfig(dequantize=True),
            )
            model.hf_quantizer = None  # type: ignore[assignment]
        tokenizer.save_pretrained(str(tmp))
        model.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / "hearth-complete").write_text(json.dumps({"source": str(base.path), "at": time.time()}))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _prune_conversions(folder.parent, keep=folder)


@contextmanager
def _one_gguf_parse() -> Iterator[None]:
    """Within a conversion, each GGUF file's header is parsed once.

    transformers reads the GGUF three times (config, tokenizer, weights), and gguf's ``GGUFReader``
    builds a numpy view for every vocabulary entry: about 35 s per read for Gemma 3's 262k tokens on
    2 cores, two thirds of a first conversion. The reader is read-only once built, so it is shared,
    and the metadata the config and the tokenizer both ask for is parsed once (a copy to each).
    """
    import copy

    import gguf
    from transformers import modeling_gguf_pytorch_utils as hf_gguf

    original, original_load = gguf.GGUFReader, hf_gguf.load_gguf_checkpoint
    readers: dict[tuple[str, str], Any] = {}
    metadata: dict[str, Any] = {}

    def shared(path: Any, mode: str = "r") -> Any:
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original(path, mode)  # type: ignore[arg-type]
        return readers[key]

    def load(path: Any, return_tensors: bool = False, **kwargs: Any) -> Any:
        if return_tensors or kwargs:
            return original_load(path, return_tensors=return_tensors, **kwargs)  # type: ignore[no-untyped-call]
        key = str(Path(path).resolve())  # the config and the tokenizer each ask for the same metadata
        if key not in metadata:
            metadata[key] = original_load(path, return_tensors=False)  # type: ignore[no-untyped-call]
        return copy.deepcopy(metadata[key])

    gguf.GGUFReader = shared  # type: ignore[misc,assignment]
    hf_gguf.load_gguf_checkpoint = load  # type: ignore[assignment]
    try:
        yield
    finally:
        gguf.GGUFReader = original  # type: ignore[misc]
        hf_gguf.load_gguf_checkpoint = original_load


def _gguf_config(base: BaseModel) -> Any:
    """transformers' config of a GGUF base, corrected where its GGUF reader misreads llama.cpp's metadata.

    ``None`` (let ``from_pretrained`` read the config itself) for the files it reads right: building the
    config here parses the GGUF once more, about 15 s for a 262k-token vocabulary.
    """
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    from core.library.gguf_meta import read_gguf_info

    info = read_gguf_info(base.path)
    misread_as_mistral = base.architecture == "llama" and info.name == "mistral"
    key = next((k for k, arch in _GGUF_ARCH_OF_KEY.items() if arch == base.architecture), base.architecture)
    mapping = GGUF_CONFIG_MAPPING.get(key, {})  # GGUF key -> config attribute
    reads_head_dim = isinstance(mapping, dict) and "attention.key_length" in mapping
    derived = info.embedding_length // info.head_count if info.embedding_length and info.head_count else None
    odd_head_dim = info.key_length is not None and not reads_head_dim and (
        info.key_length != derived or base.architecture in _HEAD_DIM_UNREAD
    )
    if not misread_as_mistral and not odd_head_dim:
        return None
    from transformers import AutoConfig, LlamaConfig

    config = AutoConfig.from_pretrained(str(base.path.parent), gguf_file=base.path.name)
    if base.architecture == "llama" and config.model_type == "mistral":
        # transformers reads a 'llama' file named exactly "mistral" as a Mistral, then finds no gguf-py
        # architecture of that name for its weights (modeling_gguf_pytorch_utils.load_gguf_checkpoint).
        # llama.cpp runs the file as plain llama (no sliding window): train it as that.
        skip = {"model_type", "architectures", "sliding_window", "transformers_version"}
        config = LlamaConfig(**{k: v for k, v in config.to_dict().items() if k not in skip})
    # The head size is llama.cpp's attention.key_length. transformers' GGUF mapping ignores that key for
    # some architectures (qwen3) and keeps its config class default (Qwen3Config: 128), which only
    # fits models whose head size happens to be that default.
    key_length = info.key_length
    if key_length and isinstance(getattr(config, "head_dim", None), int) and config.head_dim != key_length:
        config.head_dim = key_length
    return config


def _prune_conversions(root: Path, keep: Path) -> None:
    done = sorted((p for p in root.iterdir() if (p / "hearth-complete").exists() and p != keep),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    for old in done[KEEP_CONVERSIONS - 1 :]:
        shutil.rmtree(old, ignore_errors=True)
