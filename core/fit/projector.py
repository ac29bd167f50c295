"""The memory a vision projector (``mmproj-*.gguf``) takes beside its model: weights + compute buffer.

Sources (llama.cpp ``tools/mtmd/clip.cpp``):
- Weights: ``clip_model_loader::load_tensors`` reads every tensor into a backend buffer (no mmap),
  so the projector's tensor data is resident in full, on the GPU when mtmd offloads it
  (``mtmd_context_params.use_gpu``, on by default) and in RAM otherwise.
- Compute buffer: ``warmup`` reserves the graph of one dummy image of ``warmup_image_size`` pixels
  a side (``hparams.image_size`` by default; dynamic-resolution encoders such as Qwen2-VL cap the
  warm-up at 46×46 = 2,116 patches, ``set_warmup_n_tokens``), with flash attention where the backend
  has it (``CLIP_FLASH_ATTN_TYPE_AUTO`` tries it first; CPU, CUDA and Metal have it). ggml-alloc's
  peak is then about one encoder layer's f32 activations for every patch plus the f32 image:
  ``4 × n_patch × (n_ff + 3·n_embd) + 16 × side²`` bytes. Fitted to the ``reserve_compute_meta: CPU
  compute buffer size`` clip.cpp logs (``bench/projector_memory.py``, llama.cpp of llama-cpp-python
  0.3.36): 1.83 / 14.30 / 13.79 / 32.62 MiB measured against 2.52 / 17.06 / 15.75 / 33.38 MiB estimated
  for encoders 256 / 512 / 128 / 1152 wide at 224 / 448 / 896 / 448 px; real encoders are wide,
  where the estimate is within a few per cent, and never below the measurement in those cases.
- Header without the vision keys (an old or unusual converter): ``FALLBACK_COMPUTE_BYTES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 1 << 20
FALLBACK_COMPUTE_BYTES = 256 * MIB
DYNAMIC_WARMUP_PATCHES = 46 * 46  # clip.cpp's warm-up cap for dynamic-resolution encoders


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, (int, float)):
        return int(value)
    return 0


@dataclass(frozen=True)
class ProjectorShape:
    """What the estimate needs of a projector: its weight bytes and its encoder's size."""

    weight_bytes: int
    image_size: int = 0
    patch_size: int = 0
    n_embd: int = 0
    n_ff: int = 0
    n_layer: int = 0
    name: str = ""

    @property
    def n_patches(self) -> int:
        if self.image_size > 0 and self.patch_size > 0:
            return (self.image_size // self.patch_size) ** 2
        return DYNAMIC_WARMUP_PATCHES

    @property
    def compute_bytes(self) -> int:
        """The compute buffer clip.cpp reserves for its warm-up image (see the module doc)."""
        if self.n_embd <= 0:
            return FALLBACK_COMPUTE_BYTES
        n_ff = self.n_ff or 4 * self.n_embd
        side = self.image_size or int(DYNAMIC_WARMUP_PATCHES**0.5) * max(self.patch_size, 14)
        return 4 * self.n_patches * (n_ff + 3 * self.n_embd) + 16 * side * side

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.compute_bytes

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any], weight_bytes: int, name: str = "") -> ProjectorShape:
        """From a projector's GGUF key/values (``clip.vision.*``, gguf-py ``Keys.ClipVision``)."""

        def key(suffix: str) -> int:
            return _int(metadata.get(f"clip.vision.{suffix}"))

        return cls(
            weight_bytes=int(weight_bytes),
            image_size=key("image_size"),
            patch_size=key("patch_size"),
            n_embd=key("embedding_length"),
            n_ff=key("feed_forward_length"),
            n_layer=key("block_count"),
            name=name,
        )


def read_projector_shape(path: str | Path) -> ProjectorShape:
    """The shape of a local projector file (``InvalidModelError`` when it is not a readable GGUF)."""
    from core.library.gguf_meta import read_gguf_info

    info = read_gguf_info(path, check_architecture=False)
    weights = sum(t.n_bytes for t in info.tensors)
    return ProjectorShape.from_metadata(info.metadata, weights or info.size_bytes, Path(path).name)


def read_remote_projector_shape(repo_id: str, filename: str, revision: str | None = None) -> ProjectorShape:
    """The shape of a projector on the Hub, from its header only (a range request)."""
    from core.fit.remote import read_remote_header
    from core.library.gguf_header import HeaderError, tensor_nbytes

    header, reader = read_remote_header(repo_id, filename, revision)
    try:
        weights = sum(tensor_nbytes(t) for t in header.tensors)
    except HeaderError:
        weights = reader.size or 0
    return ProjectorShape.from_metadata(header.metadata, weights or reader.size or 0, filename.rsplit("/", 1)[-1])
