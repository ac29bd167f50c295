"""Will a model fit: memory estimate from GGUF metadata, verdicts, and the quant to download.

``estimate_memory`` gives the bytes of each part (weights, KV cache, compute buffers, margin) on
the GPU and in RAM; ``assess`` turns it into a verdict for this machine; ``recommend`` picks a
quant from a repository's files; ``read_remote_shape`` reads a Hub file's header only.
"""

from __future__ import annotations

from core.fit.estimate import MemoryEstimate, estimate_memory, kv_cache_bytes
from core.fit.projector import ProjectorShape, read_projector_shape, read_remote_projector_shape
from core.fit.recommend import Recommendation, quant_bits, recommend
from core.fit.remote import RangeReader, read_remote_shape
from core.fit.resolve import parse_hub_ref, shape_for
from core.fit.shape import ModelShape
from core.fit.verdict import FitVerdict, assess

__all__ = [
    "FitVerdict",
    "MemoryEstimate",
    "ModelShape",
    "ProjectorShape",
    "RangeReader",
    "Recommendation",
    "assess",
    "estimate_memory",
    "kv_cache_bytes",
    "parse_hub_ref",
    "quant_bits",
    "read_projector_shape",
    "read_remote_projector_shape",
    "read_remote_shape",
    "recommend",
    "shape_for",
]
