"""How many layers to offload when the user left "GPU layers" on Auto: as many as the fit estimate says fit.

``auto_gpu_layers`` is what ``Engine.load`` asks for ``LoadOptions.n_gpu_layers == GPU_LAYERS_AUTO``: the
verdict of ``assess`` for this machine (every layer where the model fits on the GPU, a part where it fits
only partly, none on a machine whose llama.cpp lists no GPU), with the model's projector counted.
"""

from __future__ import annotations

from pathlib import Path

from core.engine.params import LoadOptions


def auto_gpu_layers(path: str | Path, options: LoadOptions) -> int:
    """Layers to offload for ``path`` loaded with ``options`` (its context, projector and draft model counted)."""
    from core.fit.shape import ModelShape
    from core.fit.verdict import assess
    from core.hardware import detect_hardware

    hardware = detect_hardware()
    if not hardware.usable_gpus:
        return 0
    shape = ModelShape.from_gguf(str(path))
    if options.mmproj:
        from core.fit.projector import read_projector_shape

        shape = shape.with_projector(read_projector_shape(options.mmproj))
    verdict = assess(shape, hardware, n_ctx=options.n_ctx)
    return max(0, int(verdict.gpu_layers))
