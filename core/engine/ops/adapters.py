"""LoRA adapters: loaded once per path, applied with a scale each, without reloading the base model."""

from __future__ import annotations

import ctypes
import os
from typing import TYPE_CHECKING, Any

import llama_cpp as L

from core.engine.ops.base import RequestError

if TYPE_CHECKING:
    from core.engine.worker import Worker


def load_adapter(w: Worker, path: str) -> Any:
    if path in w.adapters:
        return w.adapters[path]
    w.log.lines.clear()
    adapter = L.llama_adapter_lora_init(w.model, path.encode())
    if not adapter:
        reason = w.log.reason() or "llama.cpp could not read it"
        raise RequestError(
            "adapter_failed",
            f"Could not load the adapter {os.path.basename(path)}: {reason}. Check that it is a GGUF LoRA "
            "exported for this base model.",
        )
    w.adapters[path] = adapter
    return adapter


def apply_loras(w: Worker, loras: list[tuple[str, float]]) -> None:
    """Make exactly ``loras`` (path, scale) active on the context."""
    chosen = [(load_adapter(w, p), float(s)) for p, s in loras]
    n = len(chosen)
    arr = (L.llama_adapter_lora_p_ctypes * max(n, 1))(*[a for a, _ in chosen])
    scales = (ctypes.c_float * max(n, 1))(*[s for _, s in chosen])
    L.llama_set_adapters_lora(w.ctx, arr if n else None, n, scales if n else None)
    if loras != w.active_loras:
        w.reset_cache()  # cached keys/values were computed with other adapters
    w.active_loras = [(p, float(s)) for p, s in loras]


def free_adapters(w: Worker) -> None:
    for adapter in w.adapters.values():
        L.llama_adapter_lora_free(adapter)
    w.adapters = {}
    w.active_loras = []


def op_set_loras(w: Worker, request: dict[str, Any]) -> None:
    w.require_model()
    apply_loras(w, [(str(p), float(s)) for p, s in request["loras"]])
    w.conn.send({"type": "ok", "loras": w.active_loras})
