"""Vision projectors (``mmproj-*.gguf``): telling them from models, and picking one among several.

A projector is the image encoder llama.cpp's multimodal library (``tools/mtmd``) loads beside a
text model. Its GGUF says ``general.architecture = "clip"`` (``gguf-py``'s ``MODEL_ARCH.MMPROJ``)
and, when written by a recent ``convert_hf_to_gguf.py --mmproj``, ``general.type = "mmproj"``.
Publishers name the file ``mmproj-….gguf`` (ggml-org, unsloth, bartowski …); llama.cpp's own
``-hf`` download takes any ``.gguf`` whose name contains ``mmproj`` as a projector
(``common/download.cpp``, ``gguf_filename_is_model``), and so does Hearth.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path, PurePath, PurePosixPath
from typing import TYPE_CHECKING

from core.errors import InvalidModelError

if TYPE_CHECKING:
    from core.engine.params import LoadOptions
    from core.library.gguf_meta import GGUFInfo
    from core.library.registry import ModelEntry

PROJECTOR_ARCH = "clip"
# Which precision to take when a repo has several projectors. F16 first: it is the type
# convert_hf_to_gguf.py writes projectors in by default and the one publishers test with llama.cpp;
# BF16 is the same size (slower where the CPU lacks BF16 arithmetic); F32 doubles the memory for no
# gain in answers; Q8_0 saves memory but costs the image encoder accuracy. Others: smallest first.
PROJECTOR_PREFERENCE = ("F16", "BF16", "F32", "Q8_0")


def is_projector_file(name: str | PurePath) -> bool:
    """True for a vision projector's file name (a ``.gguf`` whose name contains ``mmproj``)."""
    base = _posix(str(name)).name.lower()
    return base.endswith(".gguf") and "mmproj" in base


def is_projector_info(info: GGUFInfo) -> bool:
    """True when a GGUF's own metadata says it is a projector (architecture ``clip`` or type ``mmproj``)."""
    return info.architecture == PROJECTOR_ARCH or info.general_type == "mmproj"


def _posix(path: str) -> PurePosixPath:
    """A Hub path or a local one (Windows separators too) as a POSIX path, for names and folders."""
    return PurePosixPath(path.replace("\\", "/"))


def projector_quant(name: str) -> str | None:
    """The precision in a projector's file name (``'mmproj-model-f16.gguf'`` → ``'F16'``), or None."""
    from core.hub.quants import parse_quant

    return parse_quant(_posix(name).name)


def _rank(path: str, size: int, model_path: str | None) -> tuple[int, int, int]:
    """Sort key: same folder as the model first (llama.cpp's ``find_best_sibling`` rule), then the
    precision order above, then the smaller file."""
    same = 0 if model_path is None or _posix(path).parent == _posix(model_path).parent else 1
    quant = projector_quant(path)
    order = PROJECTOR_PREFERENCE.index(quant) if quant in PROJECTOR_PREFERENCE else len(PROJECTOR_PREFERENCE)
    return same, order, size


def choose_projector(
    candidates: Sequence[tuple[str, int]], model_path: str | None = None, wanted: str | None = None
) -> tuple[str | None, str]:
    """The projector to pair with a model among ``(path, size)`` pairs of projectors, and why, in words.

    ``wanted`` is a file name or a precision (``'mmproj-F32.gguf'``, ``'f32'``) the user asked for;
    a wish nothing matches raises ``NotFoundError`` naming the projectors there are.
    """
    projectors = list(candidates)
    if not projectors:
        return None, "no vision projector"
    names = ", ".join(_posix(p).name for p, _ in projectors)
    if wanted:
        w = wanted.strip().lower()
        hits = [
            (p, s)
            for p, s in projectors
            if p.lower() == w or _posix(p).name.lower() == w or (projector_quant(p) or "").lower() == w
        ]
        if not hits:
            from core.errors import NotFoundError

            raise NotFoundError(f"There is no projector '{wanted}' here: the projectors are {names}.")
        pick = min(hits, key=lambda ps: _rank(ps[0], ps[1], model_path))
        return pick[0], f"{_posix(pick[0]).name} as asked"
    pick = min(projectors, key=lambda ps: _rank(ps[0], ps[1], model_path))
    name = _posix(pick[0]).name
    if len(projectors) == 1:
        return pick[0], f"{name}, the repository's projector"
    quant = projector_quant(pick[0])
    why = (
        f"{quant} is preferred: {' > '.join(PROJECTOR_PREFERENCE)}"
        if quant in PROJECTOR_PREFERENCE
        else "the smallest"
    )
    return pick[0], f"{name} ({why}; choose another with --mmproj NAME)"


def load_options_for(entry: ModelEntry, options: LoadOptions) -> LoadOptions:
    """``options`` with ``mmproj`` set to the entry's paired projector and ``rpc_workers`` to the enabled
    workers (``core.workers.with_workers``), for every place a chat model loads.

    A projector the caller already set wins. A paired projector whose file is gone is left out, so the
    model still loads and reads text (an image then gets the engine's "no projector" sentence).
    """
    from core.workers import with_workers  # the enabled other machines (Settings > Other machines)

    if options.mmproj or not entry.mmproj or not Path(entry.mmproj).is_file():
        return with_workers(options, model=entry.path)
    return with_workers(replace(options, mmproj=entry.mmproj), model=entry.path)

# -- does a projector fit a model? (read from the headers; the engine checks again when it loads) ------
FIX = "pick the projector from the model's own repository"
# Where clip.cpp's ``clip_n_mmproj_embd`` finds a projector's output width, for the common projector types:
# (tensor, ggml dimension). Types not listed are checked by mtmd itself when it loads the file.
OUTPUT_WIDTH: dict[str, tuple[str, int]] = {
    **{t: ("mm.2.weight", 1) for t in ("mlp", "pixtral", "lightonocr", "lfm2", "kimivl", "kimik25", "paddleocr",
                                       "ultravox", "voxtral", "qwen3a", "glma", "yasa2")},
    **{t: ("mm.1.bias", 0) for t in ("qwen2vl_merger", "qwen2.5vl_merger", "qwen2.5o", "youtuvl", "exaone4_5")},
    **{t: ("mm.input_projection.weight", 0) for t in ("gemma3", "gemma3nv")},
    **{t: ("mm.input_projection.weight", 1) for t in ("gemma4v", "gemma4uv")},
    "idefics3": ("mm.model.fc.weight", 1),
    "internvl": ("mm.3.weight", 1),
    "cogvlm": ("mm.down.weight", 1),
}


def projector_width(path: str) -> tuple[str, int | None]:
    """Check that ``path`` is a vision projector from its GGUF header; returns (projector type, output width
    or None where the header does not say it plainly). Raises ``InvalidModelError`` with what to do."""
    from core.library.gguf_meta import read_gguf_info

    info = read_gguf_info(path, check_architecture=False)
    name = os.path.basename(path)
    if info.architecture != "clip":
        raise InvalidModelError(
            f"{name} is not a vision projector (its architecture is '{info.architecture}', a projector's is "
            f"'clip'): {FIX} (an mmproj-*.gguf file)."
        )
    meta = info.metadata
    if not meta.get("clip.has_vision_encoder"):
        raise InvalidModelError(f"{name} has no vision encoder (it reads sound, not images): {FIX}.")
    kind = str(meta.get("clip.projector_type") or meta.get("clip.vision.projector_type") or "")
    tensors = {t.name: t.shape for t in info.tensors}
    where = OUTPUT_WIDTH.get(kind)
    if kind == "mlp" and "mm.3.weight" in tensors:
        where = ("mm.3.bias", 0)  # Yi-style LLaVA (clip.cpp turns it into PROJECTOR_TYPE_MLP_NORM)
    if where is None or where[0] not in tensors:
        return kind, None
    shape = tensors[where[0]]  # numpy order: ggml's ne reversed
    if len(shape) <= where[1]:
        return kind, None
    return kind, int(shape[len(shape) - 1 - where[1]])


def mismatch(projector: str, model: str, width: int, n_embd: int) -> InvalidModelError:
    return InvalidModelError(
        f"The projector {os.path.basename(projector)} does not fit {os.path.basename(model)}: its image "
        f"embeddings are {width} wide and the model's are {n_embd}; {FIX}."
    )


def check_fits(projector: str | Path, model: str | Path) -> None:
    """Refuse (``InvalidModelError``) a projector whose image embeddings are not as wide as the model's.

    Read from both files' headers, so a wrong pairing is refused when it is made, not at the next load.
    A projector type whose width the header does not say plainly passes here; mtmd checks it at load.
    """
    from core.library.gguf_meta import read_gguf_info

    _kind, width = projector_width(str(projector))
    n_embd = read_gguf_info(model, check_architecture=False).embedding_length
    if width is not None and n_embd is not None and width != n_embd:
        raise mismatch(str(projector), str(model), width, n_embd)
