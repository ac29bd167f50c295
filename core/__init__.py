"""Hearth's Qt-free library: models, hub, hardware, chat engine, chats, fine-tuning and export."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:  # the one version number lives in pyproject.toml; the installed app carries its metadata
    __version__ = version("hearth")
except PackageNotFoundError:  # a checkout on sys.path without an install
    __version__ = "0.0.0+unknown"
