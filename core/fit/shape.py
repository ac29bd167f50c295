"""A model's shape as the memory estimate needs it, read from GGUF metadata (and tensor table).

Key names follow llama.cpp's GGUF conventions (``{arch}.block_count``,
``{arch}.attention.head_count_kv`` …, gguf-py ``gguf/constants.py``). Which layers use sliding-window
attention follows ``llama_hparams::set_swa_pattern`` in llama.cpp's ``src/llama-hparams.cpp``:
layer ``il`` is a sliding-window layer when ``il % n_pattern < n_pattern - 1``; the pattern of each
architecture is the one ``llama_model::load_hparams`` (``src/llama-model.cpp``) sets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from core.errors import InvalidModelError
from core.fit.projector import ProjectorShape

# Architectures whose sliding-window layers follow a fixed pattern (llama-model.cpp load_hparams).
SWA_PATTERNS: dict[str, int] = {
    "gemma2": 2,
    "gemma3": 6,
    "gemma3n": 5,
    "gemma-embedding": 6,
    "cohere2": 4,
    "llama4": 4,  # chunked attention: 3 chunked layers, then 1 global
    "exaone4": 4,
    "gpt-oss": 2,
    "openai-moe": 2,
}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.")


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if hasattr(value, "length"):  # gguf_header.ArrayInfo: a large array summarised by its length
        return int(value.length)
    return None


def _per_layer(value: Any, n_layer: int, default: int) -> list[int]:
    """A per-layer value that GGUF stores either as one number or as an array of ``n_layer``."""
    if isinstance(value, list) and value:
        numbers = [_int(v) or 0 for v in value]
        return (numbers + [numbers[-1]] * n_layer)[:n_layer]
    number = _int(value)
    return [default if number is None else number] * n_layer


def swa_layers_for(architecture: str, n_layer: int, metadata: dict[str, Any]) -> list[bool]:
    """Which layers use sliding-window attention (all False when the model has no window)."""
    window = _int(metadata.get(f"{architecture}.attention.sliding_window")) or 0
    if window <= 0:
        return [False] * n_layer
    explicit = metadata.get(f"{architecture}.attention.sliding_window_pattern")
    if isinstance(explicit, list) and explicit:
        flags = [bool(v) for v in explicit]
        return (flags * (n_layer // len(flags) + 1))[:n_layer]
    pattern = _int(explicit) or SWA_PATTERNS.get(architecture)
    if pattern is None:
        # A window with no known pattern (e.g. Mistral v0.1, Phi-3): llama.cpp applies it to every
        # layer. llama_hparams::set_swa_pattern(0) marks every layer as a sliding-window layer.
        return [True] * n_layer
    return [pattern == 0 or il % pattern < pattern - 1 for il in range(n_layer)]


@dataclass(frozen=True)
class ModelShape:
    """Hyper-parameters and weight sizes of one model file, enough to estimate its memory."""

    architecture: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: list[int]  # per layer; 0 for a layer without a KV cache
    n_embd_head_k: int
    n_embd_head_v: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int
    sliding_window: int
    swa_layers: list[bool]
    n_expert: int = 0
    parameters: int | None = None  # from the tensor table when known
    weight_bytes: int | None = None  # tensor data bytes of the whole model
    layer_bytes: list[int] | None = None  # tensor data bytes of each repeating layer ("blk.N.")
    embd_bytes: int | None = None  # token_embd: always kept in host memory by llama.cpp
    output_bytes: int | None = None  # output (lm head) and output_norm
    tied_output: bool = False  # no output.weight: llama.cpp reuses token_embd as the lm head
    file_type: str | None = None
    recurrent: bool = False  # state-space models keep a small fixed state instead of a KV cache
    extras: dict[str, Any] = field(default_factory=dict)
    projector: ProjectorShape | None = None  # a vision projector loaded beside the model (core.fit.projector)

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_metadata(
        cls,
        metadata: dict[str, Any],
        tensors: Iterable[tuple[str, int, int]] | None = None,
        *,
        weight_bytes: int | None = None,
    ) -> ModelShape:
        """The shape from GGUF key/values (as in ``GGUFInfo.metadata`` or ``GGUFHeader.metadata``).

        ``tensors`` are ``(name, n_elements, n_bytes)`` triples from the tensor table; without them,
        weight sizes are left unknown (``weight_bytes`` may still give the total).
        """
        arch = metadata.get("general.architecture")
        if not isinstance(arch, str) or not arch:
            raise InvalidModelError(
                "The GGUF metadata has no 'general.architecture': it is not a llama.cpp model file."
            )

        def key(suffix: str) -> Any:
            return metadata.get(f"{arch}.{suffix}")

        n_layer = _int(key("block_count")) or 0
        n_embd = _int(key("embedding_length")) or 0
        if n_layer <= 0 or n_embd <= 0:
            raise InvalidModelError(
                f"The GGUF metadata of this '{arch}' model lacks {arch}.block_count or "
                f"{arch}.embedding_length, so its memory cannot be estimated."
            )
        head_raw = key("attention.head_count")
        heads = _per_layer(head_raw, n_layer, 0)
        n_head = max(heads) if heads else 0
        n_head_kv = _per_layer(key("attention.head_count_kv"), n_layer, n_head)
        # llama.cpp's default head size: n_embd / n_head (llama-model.cpp load_hparams).
        default_head = n_embd // n_head if n_head else 0
        n_embd_head_k = _int(key("attention.key_length")) or default_head
        n_embd_head_v = _int(key("attention.value_length")) or default_head
        ff = key("feed_forward_length")
        n_ff = max(_per_layer(ff, n_layer, 0)) if ff is not None else 4 * n_embd
        vocab = _int(metadata.get("tokenizer.ggml.tokens")) or _int(key("vocab_size")) or 0
        recurrent = key("ssm.state_size") is not None and n_head == 0

        parameters = layer_total = embd = out = None
        layer_bytes: list[int] | None = None
        tied = False
        if tensors is not None:
            per_layer = [0] * n_layer
            parameters = layer_total = embd = out = 0
            names = set()
            for name, n_elements, n_bytes in tensors:
                names.add(name)
                parameters += n_elements
                match = _BLOCK_RE.match(name)
                if match and int(match[1]) < n_layer:
                    per_layer[int(match[1])] += n_bytes
                    layer_total += n_bytes
                elif name.startswith("token_embd"):
                    embd += n_bytes
                else:
                    out += n_bytes
            layer_bytes = per_layer
            tied = "output.weight" not in names
            weight_bytes = weight_bytes or (layer_total + embd + out)
        return cls(
            architecture=arch,
            n_layer=n_layer,
            n_embd=n_embd,
            n_head=n_head,
            n_head_kv=n_head_kv,
            n_embd_head_k=n_embd_head_k,
            n_embd_head_v=n_embd_head_v,
            n_ff=n_ff,
            n_vocab=vocab,
            n_ctx_train=_int(key("context_length")) or 0,
            sliding_window=_int(key("attention.sliding_window")) or 0,
            swa_layers=swa_layers_for(arch, n_layer, metadata),
            n_expert=_int(key("expert_count")) or 0,
            parameters=parameters,
            weight_bytes=weight_bytes,
            layer_bytes=layer_bytes,
            embd_bytes=embd,
            output_bytes=out,
            tied_output=tied,
            file_type=_file_type(metadata.get("general.file_type")),
            recurrent=recurrent,
        )

    @classmethod
    def from_gguf(cls, path: str | Path) -> ModelShape:
        """The shape of a local GGUF file (all parts of a split model)."""
        from core.library.gguf_meta import read_gguf_info

        info = read_gguf_info(path, check_architecture=False)
        return cls.from_metadata(info.metadata, [(t.name, t.n_elements, t.n_bytes) for t in info.tensors])

    def with_projector(self, projector: ProjectorShape | None) -> ModelShape:
        """The same model with a vision projector loaded beside it (None: without)."""
        return replace(self, projector=projector)

    def with_weight_bytes(self, weight_bytes: int) -> ModelShape:
        """The same model at another quant: per-part sizes scaled to ``weight_bytes`` in total."""
        if self.weight_bytes and self.layer_bytes is not None:
            scale = weight_bytes / self.weight_bytes
            return replace(
                self,
                weight_bytes=weight_bytes,
                layer_bytes=[int(b * scale) for b in self.layer_bytes],
                embd_bytes=int((self.embd_bytes or 0) * scale),
                output_bytes=int((self.output_bytes or 0) * scale),
            )
        return replace(self, weight_bytes=weight_bytes, layer_bytes=None, embd_bytes=None, output_bytes=None)

    # -- derived -----------------------------------------------------------------------------------
    def weight_split(self) -> tuple[list[int], int, int]:
        """Bytes of each repeating layer, of token_embd and of the output part.

        Without a tensor table the split follows parameter counts of a standard transformer block
        (attention q/k/v/o and a gated feed-forward of ``n_ff``) against the embedding matrices.
        """
        if self.weight_bytes is None:
            raise InvalidModelError(
                "The model's file size is unknown, so the size of its weights cannot be estimated."
            )
        if self.layer_bytes is not None and self.embd_bytes is not None and self.output_bytes is not None:
            return list(self.layer_bytes), self.embd_bytes, self.output_bytes
        q = self.n_head * self.n_embd_head_k
        kv = [h * (self.n_embd_head_k + self.n_embd_head_v) for h in self.n_head_kv]
        ffn = 3 * self.n_embd * self.n_ff * max(1, self.n_expert)
        layer_params = [self.n_embd * (2 * q + k) + ffn for k in kv]
        embd_params = self.n_vocab * self.n_embd
        total = sum(layer_params) + 2 * embd_params
        per_param = self.weight_bytes / total if total else 0.0
        layers = [int(p * per_param) for p in layer_params]
        embd = int(embd_params * per_param)
        return layers, embd, self.weight_bytes - sum(layers) - embd

    @property
    def parameter_count(self) -> int:
        """Parameters from the tensor table, or estimated from the hyper-parameters."""
        if self.parameters:
            return self.parameters
        q = self.n_head * self.n_embd_head_k
        kv = sum(h * (self.n_embd_head_k + self.n_embd_head_v) for h in self.n_head_kv)
        layers = self.n_layer * self.n_embd * 2 * q + self.n_embd * kv
        layers += self.n_layer * 3 * self.n_embd * self.n_ff * max(1, self.n_expert)
        return layers + 2 * self.n_vocab * self.n_embd

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["parameter_count"] = self.parameter_count
        return data


def _file_type(value: Any) -> str | None:
    number = _int(value)
    if number is None:
        return None
    from core.library.gguf_meta import file_type_name

    return file_type_name(number)


def shape_from_header_tensors(
    metadata: dict[str, Any], tensors: Sequence[Any], *, weight_bytes: int | None = None
) -> ModelShape:
    """The shape from a parsed ``GGUFHeader`` (``RawTensor`` entries with dims and ggml types)."""
    from core.library.gguf_header import HeaderError, tensor_nbytes

    triples = []
    try:
        for t in tensors:
            n = 1
            for d in t.dims:
                n *= d
            triples.append((t.name, n, tensor_nbytes(t)))
    except HeaderError as exc:
        raise InvalidModelError(f"The GGUF tensor table is corrupt ({exc}).") from exc
    return ModelShape.from_metadata(metadata, triples, weight_bytes=weight_bytes)
