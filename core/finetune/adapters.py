"""Trained adapters on disk: one folder each under the library's adapters folder, with a manifest.

A folder is complete when it has ``manifest.json``; work in progress lives in a hidden
``.NAME.partial`` folder beside it (kept after a cancel or a crash so ``--resume`` can continue) and is
renamed into place only when training, evaluation and saving have all finished.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import AlreadyExistsError, NotFoundError, TrainingError
from core.paths import get_paths

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class AdapterEntry:
    name: str
    path: Path
    manifest: dict[str, Any]

    @property
    def base(self) -> str:
        return str(self.manifest.get("base", {}).get("name", ""))

    @property
    def method(self) -> str:
        return str(self.manifest.get("method", {}).get("name", ""))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), **self.manifest}


def check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}", name):
        raise TrainingError(
            f"'{name}' cannot name an adapter: use letters, digits, '.', '_', '+' or '-' (up to 100 characters)."
        )
    return name


def adapter_folder(name: str) -> Path:
    return get_paths().adapters / check_name(name)


def partial_folder(name: str) -> Path:
    return get_paths().adapters / f".{check_name(name)}.partial"


def ensure_free(name: str) -> None:
    if (adapter_folder(name) / MANIFEST).exists() or adapter_folder(name).exists():
        raise AlreadyExistsError(f"An adapter called '{name}' already exists: pick another name with --out.")


def default_name(base_name: str, method: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._+-]+", "-", Path(base_name).stem).strip("-").lower() or "model"
    n = 1
    while True:
        name = f"{stem}-{method}" + (f"-{n}" if n > 1 else "")
        if not adapter_folder(name).exists() and not partial_folder(name).exists():
            return name
        n += 1


def list_adapters() -> list[AdapterEntry]:
    """Every complete adapter, newest first."""
    root = get_paths().adapters
    entries = []
    if root.is_dir():
        for folder in root.iterdir():
            manifest_path = folder / MANIFEST
            if folder.name.startswith(".") or not manifest_path.is_file():
                continue
            try:
                manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            entries.append(AdapterEntry(folder.name, folder, manifest))
    return sorted(entries, key=lambda e: -float(e.manifest.get("created_at", 0)))


def get_adapter(name: str) -> AdapterEntry:
    for entry in list_adapters():
        if entry.name == name:
            return entry
    names = ", ".join(e.name for e in list_adapters()) or "none yet"
    raise NotFoundError(f"No adapter called '{name}' (adapters: {names}). 'hearth adapters' lists them.")
