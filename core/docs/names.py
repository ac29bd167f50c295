"""Where the collections live and which there are, without the store (numpy, the readers): the window's
chat lists them at start-up."""

from __future__ import annotations

from pathlib import Path

from core.paths import get_paths

DB_NAME = "index.sqlite3"  # each collection is a folder holding this SQLite database


def docs_root() -> Path:
    """The folder of the user's collections."""
    return get_paths().data / "docs"


def collection_names(root: Path | None = None) -> list[str]:
    """The collections' names, sorted (a folder being built, hidden with a leading dot, is not one yet)."""
    folder = root or docs_root()
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / DB_NAME).is_file())
