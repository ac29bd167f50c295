"""How much memory llama.cpp needs to run a model: weights + KV cache + compute buffers + margin.

"Memory used" means what the engine's process keeps resident: on a GPU, everything llama.cpp
allocates there; in RAM, the resident pages of the worker process (the weights' pages count as
resident, as they are once the model has run, whether read with ``use_mmap`` or not).

Sources of the formulas (llama.cpp, ``src/``):
- Layer placement (``llama-model.cpp`` ``load_tensors``): with ``n_gpu_layers = g``, llama.cpp counts
  ``n_layer + 1`` layers, the output layer last, and offloads the top ``g`` of them
  (``i_gpu_start = n_layer + 1 - g``): the output layer and the last ``g - 1`` repeating layers;
  ``token_embd`` always stays in host memory. A model without ``output.weight`` reuses ``token_embd`` as its lm
  head (``TENSOR_DUPLICATED``), so offloading the output layer puts a second copy on the GPU.
- KV cache (``llama-kv-cache.cpp``): per layer, ``cells × n_head_kv × (head_k + head_v)`` elements of
  the cache type; cells = ``n_ctx`` padded to 256. Sliding-window layers use ``n_ctx`` cells when
  ``swa_full`` (the engine's setting: it must roll the cache back to reuse prompts), else
  ``min(n_ctx, pad(n_swa × n_seq + n_ubatch))`` (``llama-kv-cache-iswa.cpp``).
- Compute buffer (``llama-context.cpp`` ``sched_reserve``): ggml-alloc reserves the peak of the
  worst-case graph, an ``n_ubatch``-token batch that asks for every token's logits; that peak is
  either the logits (``n_ubatch × n_vocab`` floats) or one layer's activations. A GPU allocates
  the whole reserve. In RAM only the pages a real batch touches become resident, and the engine
  asks for the last token's logits only, so RAM counts the activations of a full ``n_ubatch``
  prompt batch. Calibrated against llama.cpp's logged buffer sizes and measured process memory
  (``bench/fit_accuracy.py``): activations ≈ ``4 × n_ubatch × (2·n_ff + 4·n_embd + q + 2·kv + v)``
  bytes, plus the attention mask (f16, ``n_kv × n_ubatch``) with flash attention, or the
  ``n_head × n_kv × n_ubatch`` score matrix (f32, twice: scores and softmax) without it.
- Output buffer (``llama-context.cpp`` ``output_reserve``): ``n_vocab`` floats per sequence.
- Vocabulary tables (``llama-vocab.cpp``): ~160 bytes per token (text, score, attributes, the
  text→id map and the piece cache), measured on a 262k-token vocabulary.
- Vision projector (``shape.projector``): its weights plus clip.cpp's compute buffer, on the GPU
  when layers are offloaded (mtmd's ``use_gpu``) and in RAM otherwise; see ``core/fit/projector.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from core.fit.shape import ModelShape

MIB = 1 << 20
KV_PAD = 256  # llama.cpp pads the number of KV cells to a multiple of 256
# Bytes per element of the KV cache types llama.cpp offers (ggml block sizes: q8_0 = 34 bytes per
# 32 values, q4_0 = 18 bytes per 32 values …).
CACHE_TYPE_BYTES: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q5_1": 24 / 32,
    "q5_0": 22 / 32,
    "q4_1": 20 / 32,
    "q4_0": 18 / 32,
    "iq4_nl": 18 / 32,
}
VOCAB_BYTES_PER_TOKEN = 160
# RSS of the engine's worker before it loads a model: the Python interpreter with llama_cpp and
# numpy imported (measured: 49 MB on CPython 3.11, Linux x86-64).
PROCESS_BASELINE_BYTES = 50 * MIB
# GPU memory the driver takes for the process before any model data (CUDA context, cuBLAS
# workspace; ROCm likewise). Typical figures, stated here rather than measured on this machine.
GPU_RUNTIME_BYTES: dict[str, int] = {"nvidia": 400 * MIB, "amd": 400 * MIB, "apple": 0, "unknown": 256 * MIB}
MARGIN_FRACTION = 0.10  # allocator rounding, fragmentation, repacked-weight scratch (CPU), small buffers


def pad(value: int, to: int) -> int:
    return (value + to - 1) // to * to


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per part and per device. ``total_bytes`` = GPU + RAM, margins included."""

    n_ctx: int
    n_gpu_layers: int  # effective: 0 … n_layer + 1 (the +1 is the output layer)
    n_layer: int
    kv_cells: int
    cache_type_k: str
    cache_type_v: str
    swa_full: bool
    flash_attn: bool
    weights_gpu: int
    weights_cpu: int
    kv_gpu: int
    kv_cpu: int
    compute_gpu: int  # reserved by llama.cpp on the GPU (all of it is allocated)
    compute_cpu: int  # resident in RAM during a full prompt batch
    compute_cpu_reserved: int  # address space llama.cpp reserves in RAM (mostly never touched)
    output: int  # logits buffer (RAM)
    vocab: int  # tokenizer tables (RAM)
    baseline: int  # the worker process before loading (RAM)
    gpu_runtime: int  # driver context on the GPU
    margin_gpu: int
    margin_cpu: int
    unified: bool = False  # GPU memory is system RAM (Apple Silicon)
    notes: list[str] = field(default_factory=list)
    projector_gpu: int = 0  # a vision projector's weights + compute buffer, where mtmd puts them
    projector_cpu: int = 0

    @property
    def projector_bytes(self) -> int:
        return self.projector_gpu + self.projector_cpu

    @property
    def gpu_bytes(self) -> int:
        if self.n_gpu_layers == 0:
            return 0
        parts = self.weights_gpu + self.kv_gpu + self.compute_gpu + self.gpu_runtime + self.margin_gpu
        return parts + self.projector_gpu

    @property
    def cpu_bytes(self) -> int:
        parts = self.weights_cpu + self.kv_cpu + self.compute_cpu + self.output + self.vocab + self.baseline
        return parts + self.margin_cpu + self.projector_cpu

    @property
    def total_bytes(self) -> int:
        return self.gpu_bytes + self.cpu_bytes

    @property
    def ram_bytes(self) -> int:
        """RAM the model takes: the RAM part, plus the GPU part where GPU memory is RAM."""
        return self.cpu_bytes + (self.gpu_bytes if self.unified else 0)

    @property
    def cpu_parts_without_margin(self) -> int:
        return self.cpu_bytes - self.margin_cpu

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            projector_bytes=self.projector_bytes,
            gpu_bytes=self.gpu_bytes,
            cpu_bytes=self.cpu_bytes,
            ram_bytes=self.ram_bytes,
            total_bytes=self.total_bytes,
        )
        return data


def kv_cache_bytes(
    shape: ModelShape,
    n_ctx: int,
    *,
    cache_type_k: str = "f16",
    cache_type_v: str = "f16",
    swa_full: bool = True,
    n_ubatch: int = 512,
    n_seq: int = 1,
) -> list[int]:
    """KV cache bytes of each layer (llama-kv-cache.cpp / llama-kv-cache-iswa.cpp)."""
    if shape.recurrent:
        return [0] * shape.n_layer
    k_bytes = _cache_type(cache_type_k)
    v_bytes = _cache_type(cache_type_v)
    cells = pad(n_ctx, KV_PAD)
    swa_cells = cells if swa_full else min(cells, pad(shape.sliding_window * n_seq + n_ubatch, KV_PAD))
    out = []
    for il in range(shape.n_layer):
        n_cells = swa_cells if shape.swa_layers[il] else cells
        heads = shape.n_head_kv[il]
        out.append(int(n_cells * heads * (shape.n_embd_head_k * k_bytes + shape.n_embd_head_v * v_bytes)))
    return out


def _cache_type(name: str) -> float:
    try:
        return CACHE_TYPE_BYTES[name.lower()]
    except KeyError:
        from core.errors import HearthError

        raise HearthError(
            f"Unknown KV cache type '{name}': use one of {', '.join(CACHE_TYPE_BYTES)}."
        ) from None


def _activations(shape: ModelShape, n_tokens: int, n_kv: int, flash_attn: bool) -> int:
    """Peak bytes of one layer's intermediate tensors for ``n_tokens`` tokens (see module doc)."""
    kv_heads = max(shape.n_head_kv) if shape.n_head_kv else 0
    q = shape.n_head * shape.n_embd_head_k
    kv = kv_heads * shape.n_embd_head_k
    v = shape.n_head * shape.n_embd_head_v
    ff = shape.n_ff * (2 if shape.n_expert == 0 else 2 * min(shape.n_expert, 8))
    base = 4 * n_tokens * (ff + 4 * shape.n_embd + q + 2 * kv + v)
    if flash_attn:
        attention = 2 * n_kv * n_tokens  # f16 mask
    else:
        attention = 2 * 4 * n_kv * n_tokens * shape.n_head + 4 * n_kv * n_tokens
    return base + attention


def estimate_memory(
    shape: ModelShape,
    *,
    n_ctx: int = 4096,
    n_gpu_layers: int = 0,
    n_batch: int = 512,
    n_ubatch: int | None = None,
    cache_type_k: str = "f16",
    cache_type_v: str = "f16",
    swa_full: bool = True,
    flash_attn: bool = True,
    n_seq: int = 1,
    gpu_vendor: str | None = None,
    unified: bool = False,
    weight_bytes: int | None = None,
) -> MemoryEstimate:
    """Memory to run ``shape`` with the engine's settings, split between GPU and RAM.

    ``n_gpu_layers``: layers offloaded (``-1`` or more than ``n_layer``: all, plus the output
    layer). ``n_ctx`` ``0`` means the model's training context, as in the engine. ``flash_attn``
    is what llama.cpp's "auto" resolves to on CPU, CUDA and Metal. ``weight_bytes`` replaces the
    model's weight size (another quant of the same model).
    """
    if weight_bytes is not None:
        shape = shape.with_weight_bytes(weight_bytes)
    notes: list[str] = []
    n_layer = shape.n_layer
    if n_ctx <= 0:
        n_ctx = shape.n_ctx_train or 4096
    if shape.n_ctx_train and n_ctx > shape.n_ctx_train:
        notes.append(f"context {n_ctx} is above the model's trained {shape.n_ctx_train}; the engine caps it")
        n_ctx = shape.n_ctx_train
    n_batch = min(n_batch, n_ctx)
    n_ubatch = min(n_ubatch or n_batch, n_batch)
    g = n_layer + 1 if n_gpu_layers < 0 or n_gpu_layers > n_layer else n_gpu_layers
    # llama.cpp counts the output layer as layer n_layer and offloads from the top: i_gpu_start = n_layer + 1 - g,
    # so the output layer goes first, then the last g - 1 repeating layers.
    first_gpu = n_layer - max(g - 1, 0)  # layers first_gpu … n_layer-1 are on the GPU
    output_on_gpu = g >= 1

    layers, embd, out = shape.weight_split()
    weights_gpu = sum(layers[first_gpu:])
    weights_cpu = embd + sum(layers[:first_gpu])
    if output_on_gpu:
        weights_gpu += out + (embd if shape.tied_output else 0)
    else:
        weights_cpu += out

    kv = kv_cache_bytes(
        shape,
        n_ctx,
        cache_type_k=cache_type_k,
        cache_type_v=cache_type_v,
        swa_full=swa_full,
        n_ubatch=n_ubatch,
        n_seq=n_seq,
    )
    kv_gpu, kv_cpu = sum(kv[first_gpu:]), sum(kv[:first_gpu])
    cells = pad(n_ctx, KV_PAD)

    logits_peak = 4 * n_ubatch * (shape.n_vocab + shape.n_embd)
    layer_peak = _activations(shape, n_ubatch, cells, flash_attn)
    # Work buffer of the CPU kernels: activations converted to the weights' dot-product type.
    work = n_ubatch * max(shape.n_ff, shape.n_embd) * 34 // 32
    small = 4 * n_ubatch * shape.n_embd * 2  # embeddings and the copy between devices
    compute_gpu = 0
    if g > 0:
        compute_gpu = max(logits_peak if output_on_gpu else 0, layer_peak)
    cpu_holds_layers = first_gpu > 0
    compute_cpu_reserved = max(0 if output_on_gpu else logits_peak, layer_peak if cpu_holds_layers else small)
    compute_cpu = (layer_peak + work if cpu_holds_layers else small) + 4 * shape.n_vocab * n_seq
    output = 4 * shape.n_vocab * n_seq
    vocab = VOCAB_BYTES_PER_TOKEN * shape.n_vocab
    vendor = gpu_vendor or "unknown"
    gpu_runtime = GPU_RUNTIME_BYTES.get(vendor, GPU_RUNTIME_BYTES["unknown"]) if g > 0 else 0
    margin_gpu = int(MARGIN_FRACTION * (weights_gpu + kv_gpu + compute_gpu)) if g > 0 else 0
    cpu_parts = weights_cpu + kv_cpu + compute_cpu + output + vocab + PROCESS_BASELINE_BYTES
    margin_cpu = int(MARGIN_FRACTION * cpu_parts)
    if shape.recurrent:
        notes.append("a recurrent (state-space) model: its small fixed state is not counted")
    projector_gpu = projector_cpu = 0
    if shape.projector is not None:
        if g > 0:
            projector_gpu = shape.projector.total_bytes
        else:
            projector_cpu = shape.projector.total_bytes
    return MemoryEstimate(
        n_ctx=n_ctx,
        n_gpu_layers=g,
        n_layer=n_layer,
        kv_cells=cells,
        cache_type_k=cache_type_k,
        cache_type_v=cache_type_v,
        swa_full=swa_full,
        flash_attn=flash_attn,
        weights_gpu=weights_gpu,
        weights_cpu=weights_cpu,
        kv_gpu=kv_gpu,
        kv_cpu=kv_cpu,
        compute_gpu=compute_gpu,
        compute_cpu=compute_cpu,
        compute_cpu_reserved=compute_cpu_reserved,
        output=output,
        vocab=vocab,
        baseline=PROCESS_BASELINE_BYTES,
        gpu_runtime=gpu_runtime,
        margin_gpu=margin_gpu,
        margin_cpu=margin_cpu,
        unified=unified,
        notes=notes,
        projector_gpu=projector_gpu,
        projector_cpu=projector_cpu,
    )
