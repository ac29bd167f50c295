"""Turn what the user typed (a library name, a .gguf path, ``REPO/FILE`` or ``hf://REPO/FILE``) into a shape."""

from __future__ import annotations

from pathlib import Path

from core.errors import NotFoundError
from core.fit.shape import ModelShape


def parse_hub_ref(text: str) -> tuple[str, str] | None:
    """``('org/repo', 'path/file.gguf')`` for ``hf://org/repo/path/file.gguf`` or ``org/repo/file.gguf``."""
    ref = text.removeprefix("hf://")
    parts = ref.split("/")
    if len(parts) < 3 or not ref.lower().endswith(".gguf") or any(not p for p in parts):
        return None
    return "/".join(parts[:2]), "/".join(parts[2:])


def shape_for(model_or_file: str) -> tuple[ModelShape, str]:
    """The shape of a model and a label for it; local names and files first, then the Hub."""
    from core.library import Library

    is_hub = model_or_file.startswith("hf://")
    if not is_hub:
        try:
            entry = Library().get(model_or_file)
            shape = ModelShape.from_gguf(entry.path)
            if entry.vision and entry.mmproj:  # the paired projector loads with the model: count it
                from core.fit.projector import read_projector_shape

                shape = shape.with_projector(read_projector_shape(entry.mmproj))
            return shape, entry.name
        except NotFoundError:
            hub = parse_hub_ref(model_or_file)
            if hub is None or Path(model_or_file).expanduser().exists():
                raise
    hub = parse_hub_ref(model_or_file)
    if hub is None:
        raise NotFoundError(f"'{model_or_file}' is not a Hub file: write it as hf://OWNER/REPO/FILE.gguf.")
    from core.fit.remote import read_remote_shape

    return read_remote_shape(*hub), f"{hub[0]}/{hub[1]}"
