"""The engine's request and result types: plain dataclasses that cross the process boundary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# SamplingParams.draft: how generation drafts tokens to verify in one batch (speculative decoding).
# "off": one token per step; "lookup": prompt lookup (n-grams of the conversation, no second model);
# "model": the draft model loaded with LoadOptions.draft_model (none loaded: no drafting).
DRAFT_MODES: tuple[str, ...] = ("off", "lookup", "model")


# LoadOptions.n_gpu_layers: as many layers as fit in the GPU's free memory (the fit estimate decides when the model
# loads: core.fit.offload), none on a machine without a GPU llama.cpp can use. The app's and CLI's default.
GPU_LAYERS_AUTO = -2


@dataclass
class LoadOptions:
    """How to load a model: context window, threads, GPU offload, adapters."""

    n_ctx: int = 4096  # 0 = the model's training context
    n_threads: int | None = None  # None = physical cores
    n_threads_batch: int | None = None
    n_gpu_layers: int = 0  # -1 = all layers; GPU_LAYERS_AUTO = as many as fit
    n_batch: int = 512
    use_mmap: bool = True
    flash_attn: bool | None = None  # None: llama.cpp decides (on where the backend supports it)
    loras: list[tuple[str, float]] = field(default_factory=list)  # (GGUF LoRA path, scale)
    embedding: bool = False  # a context that computes embeddings (for Engine.embed)
    draft_model: str | None = None  # a small GGUF with the same vocabulary, loaded beside to draft tokens
    mmproj: str | None = None  # a vision projector GGUF (mmproj-*.gguf) loaded beside: the model reads images
    # Other machines running ``hearth rpc-worker`` ("host:port") to split the model across, with this one
    # (llama.cpp's RPC backend). Their layers are the model's last ones, as llama.cpp offloads.
    rpc_workers: list[str] = field(default_factory=list)
    # Shares per place: [this machine, worker 1, worker 2, ...]; None = by the free memory each reports
    # (this machine: free RAM, or the GPU's with n_gpu_layers and a local GPU).
    tensor_split: list[float] | None = None
    # llama.cpp's repacked CPU weights (faster matrix products on the CPU). A split load turns it off: the
    # workers cannot repack, and the kernels round differently, so only without it do all places compute alike
    # (a split load then writes what a local load with cpu_repack=False writes, token for token).
    cpu_repack: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SamplingParams:
    """Sampling settings of one answer (llama.cpp's sampler chain, in llama.cpp's default order)."""

    temperature: float = 0.8  # <= 0: greedy
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    seed: int = -1  # -1: random
    max_tokens: int = 512
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False  # keep generating past end-of-generation tokens (benchmarks)
    presence_penalty: float = 0.0  # OpenAI's: subtracted once from the logit of every token already written
    frequency_penalty: float = 0.0  # OpenAI's: subtracted per occurrence (both over the last repeat_last_n tokens)
    grammar: str | None = None  # GBNF text (root rule "root") the answer must match
    logprobs: bool = False  # report each token's log-probability (TextChunk.logprobs, Completion.logprobs)
    top_logprobs: int = 0  # with logprobs: the most likely alternatives per token (0..20)
    # Speculative decoding (DRAFT_MODES): the same answer (up to rounding at near-ties), sooner when it
    # repeats text. Not used with a grammar or logprobs. Off by default: bench/speculative.py measured free
    # chat with prompt lookup at x0.93 on a 2-core CPU with the starter model (a paragraph rewrite x1.23).
    draft: str = "off"
    draft_max: int = 8  # most tokens drafted per step (1..64)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingParams:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class ModelStatus:
    """What the worker reports after loading a model."""

    path: str
    n_ctx: int
    n_ctx_train: int
    n_layer: int
    n_vocab: int
    chat_format: str  # "gguf", a family name, or "plain"
    chat_format_source: str  # "gguf", "family", "plain"
    chat_format_description: str
    load_seconds: float
    loras: list[tuple[str, float]] = field(default_factory=list)
    supports_tools: bool = False  # the model's own chat template reads ``tools``
    embedding: bool = False  # loaded with LoadOptions.embedding (Engine.embed works)
    n_embd: int = 0  # the length of an embedding vector
    has_decoder: bool = True  # False for encoder-only models (bert): no chat or completion
    draft_model: str | None = None  # the draft model loaded beside (LoadOptions.draft_model)
    vision: bool = False  # a projector is loaded and reads images (chat messages may have image parts)
    mmproj: str | None = None  # the projector loaded beside (LoadOptions.mmproj)
    # Layers per place when the model is split across machines (LoadOptions.rpc_workers), e.g.
    # [("this computer", 10), ("127.0.0.1:50061", 8)]; empty when everything is local.
    split: list[tuple[str, int]] = field(default_factory=list)
    # This machine's GPUs the model runs on and the layers each holds, e.g. [("Vulkan0: Radeon 780M", 25)]
    # (llama.cpp's count: the repeating layers plus the output layer); empty on the CPU.
    offload: list[tuple[str, int]] = field(default_factory=list)
    # Why the model runs on the CPU although a GPU was asked for (the GPU backend failed: Engine.load's fallback).
    gpu_note: str = ""

    @property
    def where(self) -> str:
        """``offload`` in words, layers counted as llama.cpp does: "Vulkan0: Radeon 780M, 25/25 layers"
        ("" on the CPU)."""
        return "; ".join(f"{place}, {layers}/{self.n_layer + 1} layers" for place, layers in self.offload)


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens reused from the KV cache of the previous turn
    completion_tokens: int = 0
    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0
    time_to_first_token: float = 0.0
    context_used: int = 0
    n_ctx: int = 0
    dropped_messages: int = 0  # oldest turns left out to fit the context window
    drafted_tokens: int = 0  # tokens proposed by drafting (SamplingParams.draft) and verified
    accepted_tokens: int = 0  # of those, the ones the model agreed with (each saved a decoding step)
    image_tokens: int = 0  # prompt tokens that are image embeddings (part of prompt_tokens)
    image_seconds: float = 0.0  # encoding the images with the projector (part of prompt_seconds)

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.generation_seconds if self.generation_seconds > 0 else 0.0

    @property
    def prompt_tokens_per_second(self) -> float:
        evaluated = self.prompt_tokens - self.cached_tokens
        return evaluated / self.prompt_seconds if self.prompt_seconds > 0 else 0.0


@dataclass
class Completion:
    """A finished answer. ``finish_reason``: stop, length, context, cancelled."""

    text: str
    finish_reason: str
    stats: GenerationStats
    # With SamplingParams.logprobs: one dict per token written, in OpenAI's shape:
    # {"token": str, "logprob": float, "bytes": list[int], "top_logprobs": [{"token", "logprob", "bytes"}, ...]}
    logprobs: list[dict[str, Any]] | None = None

    @property
    def cancelled(self) -> bool:
        return self.finish_reason == "cancelled"


@dataclass
class TextChunk:
    """Streamed text: one or more tokens' worth."""

    text: str
    n_tokens: int
    logprobs: list[dict[str, Any]] | None = None  # with SamplingParams.logprobs: one dict per token (as Completion)


@dataclass
class EmbedResult:
    """``Engine.embed``'s answer: one L2-normalised vector per text, and the tokens they took."""

    vectors: list[list[float]]
    prompt_tokens: int
