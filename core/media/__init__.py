"""Media attached to chats: images checked, decoded and scaled down before they are stored or sent.

Qt-free and light to import: Pillow loads only when an image is prepared.
"""

from __future__ import annotations

from core.media.images import MAX_PIXELS, MAX_SIDE, PreparedImage, load_image_file, prepare_image

__all__ = ["MAX_PIXELS", "MAX_SIDE", "PreparedImage", "load_image_file", "prepare_image"]
