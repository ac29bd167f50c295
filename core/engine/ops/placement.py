"""Where a loaded model's layers run on this machine: its GPUs by llama.cpp's names, for the chat's stats.

llama.cpp offloads the top ``min(n_gpu_layers, n_layer + 1)`` of its ``n_layer + 1`` "layers" (the repeating ones,
then the output layer: its log's "offloaded 19/19 layers to GPU"), so the output layer goes first; the repeating
ones are spread over the GPUs by their free memory (``llama_model::load_tensors``, the rule
``rpc_split.assign_layers`` mirrors).
"""

from __future__ import annotations

from core.engine.ops.rpc_split import assign_layers


def gpu_offload(n_layer: int, n_gpu_layers: int) -> list[tuple[str, int]]:
    """(``"Vulkan0: Radeon 780M"``, layers) per GPU the model uses; empty when it runs on the CPU."""
    if n_gpu_layers == 0 or n_layer <= 0:
        return []
    from core.engine import rpc

    api = rpc.ggml()
    gpus = api.local_gpus()
    if not gpus:
        return []
    offloaded = min(n_layer + 1 if n_gpu_layers < 0 else n_gpu_layers, n_layer + 1)
    devices = [api.device(d) for d in gpus]
    weights = [float(d.free_bytes) for d in devices]
    _cpu, counts = assign_layers(n_layer, offloaded, weights if sum(weights) > 0 else [1.0] * len(devices))
    counts[-1] += 1  # the output layer, offloaded first (i_gpu_start = n_layer + 1 - n_gpu_layers), with the last device
    return [(f"{d.name}: {d.description}" if d.description else d.name, n)
            for d, n in zip(devices, counts, strict=True) if n > 0]
