"""The model library: GGUF files Hearth knows about, with their metadata cached in an index."""

from __future__ import annotations

from core.library.gguf_meta import GGUFInfo, TensorInfo, read_gguf_info
from core.library.registry import Library, ModelEntry, model_name_for

__all__ = ["GGUFInfo", "Library", "ModelEntry", "TensorInfo", "model_name_for", "read_gguf_info"]
