"""The chat engine: llama.cpp in a worker process, chat templates, streaming, cancel, adapters."""

from __future__ import annotations

from core.engine.client import Engine
from core.engine.params import (
    Completion,
    EmbedResult,
    GenerationStats,
    LoadOptions,
    ModelStatus,
    SamplingParams,
    TextChunk,
)

__all__ = [
    "Completion",
    "EmbedResult",
    "Engine",
    "GenerationStats",
    "LoadOptions",
    "ModelStatus",
    "SamplingParams",
    "TextChunk",
]
