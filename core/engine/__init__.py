"""The chat engine: llama.cpp in a worker process, chat templates, streaming, cancel, adapters."""

from __future__ import annotations

from core.engine.client import Engine
from core.engine.params import (
    Completion,
    GenerationStats,
    LoadOptions,
    ModelStatus,
    SamplingParams,
    TextChunk,
)

__all__ = ["Completion", "Engine", "GenerationStats", "LoadOptions", "ModelStatus", "SamplingParams", "TextChunk"]
