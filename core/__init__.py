"""Hearth's Qt-free library: models, hub, hardware, chat engine, chats, fine-tuning and export."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """``__version__``, read on first use: importlib.metadata costs the window's start-up 30-40 ms."""
    if name != "__version__":
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:  # the one version number lives in pyproject.toml; the installed app carries its metadata
        value = version("hearth")
    except PackageNotFoundError:  # a checkout on sys.path without an install
        value = "0.0.0+unknown"
    globals()["__version__"] = value
    return value
