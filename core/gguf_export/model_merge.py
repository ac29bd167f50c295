"""Merging whole models of one architecture in GGUF space, tensor by tensor.

Every model (and the base, for task-vector methods) is opened as a memory-mapped GGUF; all are
checked for the same architecture, tensor names and shapes before any work. Each tensor is then
dequantized from every model, merged by the chosen method (``merge_methods``) and written (F16
matrices, F32 vectors); llama.cpp's quantizer makes the requested type. Metadata and the
tokenizer come from the base (or the first model).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import ExportError
from core.events import CancelToken, Progress, ProgressCallback
from core.gguf_export.gguf_stream import GGUFSource, GGUFStreamWriter, TensorSpec, encode_tensor, float_type
from core.gguf_export.merge import copied_metadata, quantize_and_register
from core.gguf_export.merge_methods import MergeMethod, get_method
from core.gguf_export.quantize import normalize_quant


@dataclass(frozen=True)
class ModelMergeResult:
    path: Path
    name: str | None
    method: str
    n_tensors: int


def _resolve(model: str | Path) -> Path:
    path = Path(model).expanduser()
    if path.is_file():
        return path
    from core.library import Library

    return Path(Library().get(str(model)).path)


def check_compatible(sources: Sequence[GGUFSource]) -> None:
    """Refuse models of different architectures, tensor sets or shapes (before any work)."""
    first = sources[0]
    for other in sources[1:]:
        if other.architecture != first.architecture:
            raise ExportError(
                f"{other.path.name} is a '{other.architecture}' model but {first.path.name} is "
                f"'{first.architecture}': only models of the same architecture can be merged."
            )
        missing = set(first.tensors) ^ set(other.tensors)
        if missing:
            raise ExportError(
                f"{other.path.name} and {first.path.name} do not have the same tensors (e.g. "
                f"{sorted(missing)[0]}): they are different model sizes or families."
            )
        for name, t in first.tensors.items():
            if other.tensors[name].shape != t.shape:
                raise ExportError(
                    f"{name} is {other.tensors[name].shape} in {other.path.name} but {t.shape} in "
                    f"{first.path.name}: the models have different shapes and cannot be merged."
                )


def merge_models_gguf(
    models: Sequence[str | Path],
    out: str | Path,
    *,
    method: str | MergeMethod = "linear",
    weights: Sequence[float] | None = None,
    base: str | Path | None = None,
    params: dict[str, float] | None = None,
    quant: str = "Q8_0",
    seed: int = 0,
    register: bool = False,
    name: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ModelMergeResult:
    """Merge GGUF models (library names or paths) with ``method`` and quantize the result."""
    m = method if isinstance(method, MergeMethod) else get_method(method)
    resolved = m.resolve(params)
    quant = normalize_quant(quant)
    if len(models) < m.min_models or (m.max_models is not None and len(models) > m.max_models):
        most = f"at most {m.max_models}" if m.max_models else "any number of"
        raise ExportError(f"{m.pretty_name} merges at least {m.min_models} and {most} models (got {len(models)}).")
    if m.needs_base and base is None:
        raise ExportError(f"{m.pretty_name} works on differences from a base model: give it with --base.")
    w = [1.0] * len(models) if not weights else [float(x) for x in weights]
    if len(w) != len(models):
        raise ExportError(f"Give one weight per model ({len(models)} models, {len(w)} weights).")
    out = Path(out)
    paths = [_resolve(x) for x in models]
    base_path = _resolve(base) if base is not None and m.needs_base else None
    work_type = quant if quant in ("F32", "BF16") else "F16"
    rng = np.random.default_rng(seed)
    with ExitStack() as stack:
        sources = [stack.enter_context(GGUFSource(p)) for p in paths]
        base_src = stack.enter_context(GGUFSource(base_path)) if base_path else None
        check_compatible(sources + ([base_src] if base_src else []))
        meta_src = base_src or sources[0]
        import gguf

        f32 = int(gguf.GGMLQuantizationType.F32)
        specs = [TensorSpec(n, t.shape, float_type(work_type) if len(t.shape) >= 2 else f32)
                 for n, t in meta_src.tensors.items()]
        names = " + ".join(p.stem for p in paths)
        kv = copied_metadata(meta_src, {"general.name": f"{m.name} merge of {names}"[:200]},
                             drop=("general.alignment", "general.file_type"))
        intermediate = out.with_name(f".{out.stem}.merge.partial.gguf")
        try:
            with GGUFStreamWriter(intermediate, kv, specs) as writer:
                for n, spec in enumerate(specs):
                    if cancel:
                        cancel.raise_if_cancelled("The merge")
                    tensors = [s.dequantize(spec.name) for s in sources]
                    base_t = base_src.dequantize(spec.name) if base_src else None
                    merged = m.merge(tensors, base_t, w, resolved, rng)
                    del tensors, base_t
                    writer.write(spec.name, encode_tensor(merged, spec.ggml_type))
                    del merged
                    if progress:
                        progress(Progress("merge", n + 1, len(specs), spec.name))
                writer.finish()
        except BaseException:
            intermediate.unlink(missing_ok=True)
            raise
    entry_name = quantize_and_register(intermediate, out, quant, register, name, progress)
    return ModelMergeResult(out, entry_name, m.name, len(specs))
