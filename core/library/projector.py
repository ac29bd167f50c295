"""Vision projectors (``mmproj-*.gguf``): telling them from models, and picking one among several.

A projector is the image encoder llama.cpp's multimodal library (``tools/mtmd``) loads beside a
text model. Its GGUF says ``general.architecture = "clip"`` (``gguf-py``'s ``MODEL_ARCH.MMPROJ``)
and, when written by a recent ``convert_hf_to_gguf.py --mmproj``, ``general.type = "mmproj"``.
Publishers name the file ``mmproj-….gguf`` (ggml-org, unsloth, bartowski …); llama.cpp's own
``-hf`` download takes any ``.gguf`` whose name contains ``mmproj`` as a projector
(``common/download.cpp``, ``gguf_filename_is_model``), and so does Hearth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import PurePath, PurePosixPath
from typing import TYPE_CHECKING

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
    """``options`` with ``mmproj`` set to the entry's paired projector, for every place a chat model loads.

    A projector the caller already set wins. A paired projector whose file is gone is left out, so the
    model still loads and reads text (an image then gets the engine's "no projector" sentence).
    """
    from pathlib import Path

    if options.mmproj or not entry.mmproj or not Path(entry.mmproj).is_file():
        return options
    return replace(options, mmproj=entry.mmproj)
