"""Images in requests: read from the three APIs' shapes, checked, and handed to the engine as image parts.

Hearth never fetches anything from the network on a request's behalf: a request that could name a URL
for the server to download would let any client make the user's machine reach any address (server-side
request forgery) and leak what it reads there. So an image comes inside the request, base64-encoded: a
``data:`` URI in OpenAI's ``image_url`` (RFC 2397), an entry of Ollama's ``images``, a ``base64`` source
in Anthropic's image blocks. Each image is checked and scaled by ``core.media.prepare_image`` (PNG, JPEG,
WebP) on a worker thread, so that decoding a large picture does not stall the server's event loop, and
reaches the engine as ``{"type": "image", "data": bytes}`` where its part was. Every refusal names the
image's parameter path (``messages.0.content.1.image_url``), as OpenAI's ``param`` does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from typing import Any

from core.server.config import clip
from core.server.errors import ApiError, bad_request, no_vision
from core.server.host import ServedModel

MAX_IMAGES = 32  # per request: each costs a projector pass and hundreds of tokens of context
FORMATS = "PNG, JPEG or WebP"
# RFC 2397: data:[<mediatype>][;base64],<data>; the media type may carry parameters (;charset=...).
_DATA_URI = re.compile(r"data:(?P<type>[^;,]*)(?P<params>(?:;[^;,]*)*),", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def _not_base64(where: str) -> ApiError:
    return bad_request(f"'{where}' is not valid base64: send the image's bytes ({FORMATS}) base64-encoded.",
                       param=where, code="invalid_image")


def decode_base64(text: Any, where: str) -> bytes:
    """The bytes of a base64 text (line breaks allowed, as MIME wraps it); a 400 naming ``where`` otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise bad_request(f"'{where}' is empty: send the image's bytes base64-encoded.", param=where,
                          code="invalid_image")
    try:
        return base64.b64decode(_WHITESPACE.sub("", text), validate=True)
    except (binascii.Error, ValueError):
        raise _not_base64(where) from None


def refuse_remote(url: str, where: str) -> ApiError:
    """The 400 for an image given by its address instead of its bytes."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    article = {"http": "an http", "https": "an https", "ftp": "an ftp", "file": "a file"}
    shown = f"{article[scheme]} URL" if scheme in article else "not a data: URI"
    return bad_request(
        f"'{where}' is {shown} ({clip(url, 60)}): Hearth never fetches anything from the network on a request's "
        f"behalf. Send the image itself as a data: URI (data:image/png;base64,...) with its {FORMATS} bytes.",
        param=where, code="image_url_not_supported")


def decode_data_uri(url: str, where: str) -> bytes:
    """The image bytes of a ``data:`` URI; remote URLs and anything else are refused with a 400."""
    match = _DATA_URI.match(url)
    if match is None:
        raise refuse_remote(url, where)
    mime = match.group("type").strip().lower()
    params = [p.strip().lower() for p in match.group("params").split(";") if p.strip()]
    if "base64" not in params:
        raise bad_request(f"'{where}' is a data: URI without ';base64': send the image base64-encoded "
                          "(data:image/png;base64,...).", param=where, code="invalid_image")
    if mime and not mime.startswith("image/") and mime != "application/octet-stream":
        raise bad_request(f"'{where}' is a data: URI of type '{clip(mime, 40)}', not an image: send a {FORMATS} "
                          "image (data:image/png;base64,...).", param=where, code="invalid_image")
    check_media_type(mime, where)
    return decode_base64(url[match.end():], where)


def check_media_type(mime: str, where: str) -> None:
    """Refuse the image types a client may declare that Hearth does not read (GIF: animated, not in llama.cpp)."""
    if mime.lower() == "image/gif":
        raise bad_request(f"'{where}' is a GIF image, which Hearth does not read: convert it to {FORMATS} and "
                          "send that.", param=where, code="unsupported_image_format")


def only_in_user_messages(role: str, where: str) -> None:
    """Images belong to the user's messages (as OpenAI and Anthropic require): elsewhere, a 400."""
    if role != "user":
        raise bad_request(f"'{where}' is an image in a '{clip(role, 20)}' message: images can only be sent in "
                          "user messages.", param=where, code="invalid_image")


class RequestImages:
    """The images of one request, in order, each with its parameter path, until they are checked.

    The routes call ``part()`` while they turn the request into engine messages (cheap: the base64 is
    decoded), then ``await prepare()`` once before the answer starts: it refuses images for a model without
    a projector and checks and scales every image on a thread, filling in the parts' ``data``.
    """

    def __init__(self, model: ServedModel) -> None:
        self.model = model
        self._parts: list[tuple[str, dict[str, Any]]] = []

    def __len__(self) -> int:
        return len(self._parts)

    @property
    def first_path(self) -> str | None:
        return self._parts[0][0] if self._parts else None

    def part(self, data: bytes, where: str) -> dict[str, Any]:
        """The engine's image part for ``data`` (its bytes replaced by the checked image in ``prepare``)."""
        if len(self._parts) >= MAX_IMAGES:
            raise bad_request(f"The request has more than {MAX_IMAGES} images (at '{where}'): send at most "
                              f"{MAX_IMAGES} per request.", param=where, code="too_many_images")
        part: dict[str, Any] = {"type": "image", "data": data}
        self._parts.append((where, part))
        return part

    def from_base64(self, text: Any, where: str) -> dict[str, Any]:
        return self.part(decode_base64(text, where), where)

    def from_url(self, url: str, where: str) -> dict[str, Any]:
        return self.part(decode_data_uri(url, where), where)

    async def prepare(self) -> None:
        """Refuse the images if the model cannot read them; else check and scale each (on a thread)."""
        if not self._parts:
            return
        if not self.model.vision:
            raise no_vision(self.model.name, self.first_path)
        await asyncio.to_thread(self._prepare_all)

    def _prepare_all(self) -> None:
        from core.errors import ImageError
        from core.media import prepare_image

        for where, part in self._parts:
            try:
                prepared = prepare_image(part["data"], name=f"'{where}'")
            except ImageError as exc:  # its sentence starts with the name given: the parameter path
                raise bad_request(str(exc), param=where, code="invalid_image") from None
            part["data"] = prepared.data
