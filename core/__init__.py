"""Hearth's Qt-free library: models, hub, hardware, chat engine, chats, fine-tuning and export."""

from __future__ import annotations

__version__ = "0.1.0"
