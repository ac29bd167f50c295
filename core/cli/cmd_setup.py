"""``hearth setup``: prepare the data folders and unpack the starter model (idempotent)."""

from __future__ import annotations

import argparse

from core.library import Library
from core.paths import get_paths


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("setup", help="prepare data folders and the bundled starter model")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    paths = get_paths().ensure()
    entry = Library(paths).ensure_starter()
    print(f"Data folder: {paths.data}")
    if entry:
        print(f"Starter model: {entry.name} ({entry.path})")
    else:
        print("Starter model package is not installed; import a .gguf with 'hearth import PATH'.")
    return 0
