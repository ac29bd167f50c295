"""The model library: GGUF files Hearth knows about, with their metadata cached in an index."""

from __future__ import annotations

from core.library.gguf_meta import GGUFInfo, TensorInfo, read_gguf_info
from core.library.projector import choose_projector, is_projector_file, is_projector_info, load_options_for
from core.library.registry import Library, ModelEntry, check_projector, model_name_for

__all__ = [
    "GGUFInfo",
    "Library",
    "ModelEntry",
    "TensorInfo",
    "check_projector",
    "choose_projector",
    "is_projector_file",
    "is_projector_info",
    "load_options_for",
    "model_name_for",
    "read_gguf_info",
]
