"""Does a model that is too large for this machine fit across it and the user's workers (``core.workers``)?

How llama.cpp places a model on RPC workers (``src/llama.cpp`` ``llama_prepare_model_devices``,
``llama-model.cpp`` ``load_tensors``): each worker's devices are GPU-type devices; the offloaded layers
are spread over the devices in proportion to ``tensor_split``, by default each device's free memory as
it reports it (``ggml_backend_dev_memory``, RPC_CMD_GET_DEVICE_MEMORY). Every device holds its layers'
weights and KV cache and allocates its own compute buffer; the token embeddings, the vocabulary, the
logits buffer and the process stay on this machine. The worker's server process is already running,
so no driver context is counted for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.fit.estimate import MARGIN_FRACTION, MemoryEstimate

if TYPE_CHECKING:
    from core.engine.rpc import WorkerInfo
    from core.hardware import GPU

GB = 1e9


@dataclass(frozen=True)
class Place:
    """One place layers can go: this machine (its RAM, plus its GPU) or one worker."""

    label: str
    free_bytes: int  # what it reports free
    capacity: int  # bytes of layers (weights + KV) it can take after its own buffers and margin


def across_machines(
    estimate_all: Callable[[int], MemoryEstimate],
    n_full: int,
    ram_available: int,
    gpu: GPU | None,
    workers: Sequence[WorkerInfo],
    names: Mapping[str, str] | None = None,
) -> tuple[MemoryEstimate, list[Place]] | None:
    """The places a model would be split over when it fits there, else None.

    ``estimate_all(layers)`` is the model's estimate with ``layers`` offloaded (``n_full`` = all, with the
    output layer): the offloaded part is what gets spread, the rest stays here. Workers that did not
    answer or report no free memory are not counted.
    """
    usable = [w for w in workers if w.ok and w.free_bytes > 0]
    if not usable:
        return None
    full = estimate_all(n_full)
    # Every device reserves the compute buffer of its layers; the one holding the output layer reserves the
    # logits too (the full offload's compute buffer), counted once with what is spread.
    per_device = estimate_all(n_full - 1).compute_gpu
    payload = full.weights_gpu + full.kv_gpu + full.projector_gpu + max(0, full.compute_gpu - per_device)
    margin = 1.0 + MARGIN_FRACTION
    host = full.cpu_bytes  # embeddings, vocabulary, logits, the process: always here
    if gpu is not None and gpu.unified:
        gpu = None  # its memory is the RAM already counted
    local_free = ram_available + (gpu.free_bytes if gpu is not None else 0)
    local_cap = int((ram_available - host - per_device) / margin)
    if gpu is not None:
        local_cap += max(0, int((gpu.free_bytes - full.gpu_runtime - per_device) / margin))
    if ram_available < host:
        return None  # not even the part that must stay here fits
    places = [Place("this one", local_free, max(0, local_cap))]
    labels = names or {}
    for info in usable:
        cap = sum(max(0, int((d.free_bytes - per_device) / margin)) for d in info.devices)
        if cap > 0:
            places.append(Place(labels.get(info.endpoint) or info.endpoint, info.free_bytes, cap))
    if len(places) < 2 or sum(p.capacity for p in places) < payload:
        return None
    return full, places


def across_reason(full: MemoryEstimate, places: Sequence[Place]) -> str:
    """"Fits across 2 machines (this one 6.0 GB + studio-pc 16.0 GB): …" in words."""
    parts = " + ".join(f"{p.label} {p.free_bytes / GB:.1f} GB" for p in places)
    need = full.weights_gpu + full.kv_gpu + full.projector_gpu + full.cpu_bytes
    return (
        f"Fits across {len(places)} machines ({parts}): it needs about {need / GB:.1f} GB in all, and llama.cpp "
        "spreads the layers over each one's free memory. Every token crosses the network, so answers come slower "
        "than from one machine that holds it all."
    )
