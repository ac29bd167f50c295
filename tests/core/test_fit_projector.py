"""The fit estimate counts a paired vision projector: its weights plus clip.cpp's compute buffer, where mtmd puts it."""

from __future__ import annotations

import pytest

from core.cli import main
from core.fit import ModelShape, ProjectorShape, assess, estimate_memory, read_projector_shape, shape_for
from core.fit.projector import DYNAMIC_WARMUP_PATCHES, FALLBACK_COMPUTE_BYTES
from core.hardware import detect_hardware
from core.library import Library, read_gguf_info
from tests.fixtures.tiny_vision import IMAGE_SIZE, PATCH_SIZE, VISION_EMBD, VISION_FF, TinyVision


def test_projector_shape_from_its_header(tiny_vision: TinyVision) -> None:
    shape = read_projector_shape(tiny_vision.mmproj)
    info = read_gguf_info(tiny_vision.mmproj, check_architecture=False)
    assert shape.weight_bytes == sum(t.n_bytes for t in info.tensors) > 0
    assert (shape.image_size, shape.patch_size, shape.n_embd, shape.n_ff) == (IMAGE_SIZE, PATCH_SIZE, VISION_EMBD, VISION_FF)
    patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    assert shape.n_patches == patches
    # One encoder layer's f32 activations for every patch, plus the f32 warm-up image (core/fit/projector.py).
    assert shape.compute_bytes == 4 * patches * (VISION_FF + 3 * VISION_EMBD) + 16 * IMAGE_SIZE**2
    assert shape.total_bytes == shape.weight_bytes + shape.compute_bytes
    assert shape.name == tiny_vision.mmproj.name


def test_a_real_sized_encoder_gets_a_real_sized_allowance() -> None:
    # SigLIP-So400m as Gemma 3 ships it (896 px, 14 px patches, 1152 wide, 4304 feed-forward): 4,096 patches.
    siglip = ProjectorShape(weight_bytes=851_000_000, image_size=896, patch_size=14, n_embd=1152, n_ff=4304)
    assert siglip.n_patches == 4096
    assert 80e6 < siglip.compute_bytes < 200e6
    dynamic = ProjectorShape(weight_bytes=1, patch_size=14, n_embd=1280, n_ff=3420)  # no fixed image size
    assert dynamic.n_patches == DYNAMIC_WARMUP_PATCHES
    assert ProjectorShape(weight_bytes=1).compute_bytes == FALLBACK_COMPUTE_BYTES  # no vision keys at all


def test_the_estimate_adds_the_projector_where_mtmd_puts_it(tiny_vision: TinyVision) -> None:
    text = ModelShape.from_gguf(tiny_vision.model)
    projector = read_projector_shape(tiny_vision.mmproj)
    vision = text.with_projector(projector)
    cpu_text, cpu_vision = estimate_memory(text, n_ctx=256), estimate_memory(vision, n_ctx=256)
    assert cpu_vision.projector_cpu == projector.total_bytes and cpu_vision.projector_gpu == 0
    assert cpu_vision.cpu_bytes - cpu_text.cpu_bytes == projector.total_bytes
    assert cpu_vision.to_dict()["projector_bytes"] == projector.total_bytes
    # With layers offloaded, mtmd loads the projector on the GPU too (use_gpu follows n_gpu_layers).
    gpu_text = estimate_memory(text, n_ctx=256, n_gpu_layers=-1)
    gpu_vision = estimate_memory(vision, n_ctx=256, n_gpu_layers=-1)
    assert gpu_vision.projector_gpu == projector.total_bytes and gpu_vision.projector_cpu == 0
    assert gpu_vision.gpu_bytes - gpu_text.gpu_bytes == projector.total_bytes
    assert estimate_memory(text, n_ctx=256).projector_bytes == 0


def test_the_verdict_says_it_counts_the_projector(tiny_vision: TinyVision) -> None:
    text = ModelShape.from_gguf(tiny_vision.model)
    hardware = detect_hardware()
    plain = assess(text, hardware, n_ctx=256)
    with_projector = assess(text.with_projector(read_projector_shape(tiny_vision.mmproj)), hardware, n_ctx=256)
    assert "projector" not in plain.reason
    assert f"includes the vision projector {tiny_vision.mmproj.name}" in with_projector.reason
    assert "to encode an image" in with_projector.reason
    assert with_projector.total_bytes > plain.total_bytes


def test_hearth_fit_counts_a_library_models_projector(
    tiny_vision: TinyVision, capsys: pytest.CaptureFixture[str]
) -> None:
    library = Library()
    entry = library.import_file(tiny_vision.model, mode="link")
    assert shape_for(entry.name)[0].projector is None
    library.set_mmproj(entry.name, tiny_vision.mmproj)
    shape, label = shape_for(entry.name)
    assert label == entry.name and shape.projector is not None
    assert shape.projector.weight_bytes == read_projector_shape(tiny_vision.mmproj).weight_bytes
    assert main(["fit", entry.name, "--ctx", "256"]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("vision projector") for line in out.splitlines())
    assert "includes the vision projector" in out
