"""A model's shape from a GGUF file on the Hugging Face Hub, reading only its header.

The header is fetched with HTTP range requests (RFC 9110 §14) in chunks of 1 MB growing to 8 MB
as the parser asks for more, so a multi-gigabyte file costs a few megabytes. The file's size comes
from the ``Content-Range`` total (or ``X-Linked-Size``, the Hub's header for LFS files). The URL is
``{HF_ENDPOINT}/{repo}/resolve/{revision}/{filename}`` as ``huggingface_hub.hf_hub_url`` builds it;
``HF_TOKEN`` (or the token saved by ``hf auth login``) is sent for gated and private repos.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from typing import Any

from core.errors import InvalidModelError, NetworkError, NotFoundError, OfflineError
from core.fit.shape import ModelShape, shape_from_header_tensors

FIRST_CHUNK = 1 << 20
MAX_CHUNK = 8 << 20
TIMEOUT = 30.0
_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _token() -> str | None:
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        return token
    try:
        from huggingface_hub import get_token

        return get_token()
    except ImportError:
        return None


def hub_file_url(repo_id: str, filename: str, revision: str | None = None) -> str:
    """The ``resolve`` URL of a file, honouring ``HF_ENDPOINT``."""
    from huggingface_hub import hf_hub_url

    return hf_hub_url(repo_id, filename, revision=revision, endpoint=_endpoint())


class RangeReader:
    """A read-only file over HTTP: ``read(n)`` fetches the next bytes with a range request.

    ``bytes_transferred`` counts body bytes received; ``size`` is the file's size once known.
    """

    def __init__(self, url: str, *, token: str | None = None, timeout: float = TIMEOUT) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout
        self.pos = 0
        self.size: int | None = None
        self.bytes_transferred = 0
        self.requests = 0
        self._chunk = FIRST_CHUNK
        self._stream: Any = None  # a whole-file response when the server ignores Range

    def read(self, n: int = -1, /) -> bytes:
        if n is None or n < 0:
            raise ValueError("RangeReader reads a given number of bytes")
        if self.size is not None and self.pos >= self.size:
            return b""
        if self._stream is not None:
            data: bytes = self._stream.read(n)
            self.pos += len(data)
            self.bytes_transferred += len(data)
            return data
        want = max(n, self._chunk)
        self._chunk = min(self._chunk * 2, MAX_CHUNK)
        end = self.pos + want - 1
        if self.size is not None:
            end = min(end, self.size - 1)
        response = self._open(f"bytes={self.pos}-{end}")
        if response.status == 200:  # Range ignored: read the body as a stream, as far as needed
            self._stream = response
            self.size = self.size or _int_header(response, "Content-Length")
            return self.read(n)
        self._learn_size(response)
        data = response.read()
        response.close()
        self.pos += len(data)
        self.bytes_transferred += len(data)
        return data

    def _learn_size(self, response: Any) -> None:
        match = _RANGE_RE.search(response.headers.get("Content-Range", "") or "")
        if match and match[3] != "*":
            self.size = int(match[3])
        elif self.size is None:
            self.size = _int_header(response, "X-Linked-Size")

    def _open(self, byte_range: str) -> Any:
        request = urllib.request.Request(self.url, headers={"Range": byte_range, "User-Agent": "hearth"})
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        self.requests += 1
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416:  # range past the end: the file ends here
                self.size = self.pos
                return _Empty()
            raise _http_error(exc, self.url) from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NetworkError(
                f"Could not reach the Hub at {_endpoint()} ({reason}): check the connection and try again."
            ) from exc

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


class _Empty:
    """The answer to a range past the end of the file: no bytes."""

    status = 206

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}

    def read(self) -> bytes:
        return b""

    def close(self) -> None:
        pass


def _int_header(response: Any, name: str) -> int | None:
    value = response.headers.get(name)
    return int(value) if value and str(value).isdigit() else None


def _http_error(exc: urllib.error.HTTPError, url: str) -> Exception:
    if exc.code == 404:
        return NotFoundError(f"{url} does not exist on the Hub: check the repository and file name.")
    if exc.code in (401, 403):
        return NetworkError(
            f"The Hub refused access to {url} (HTTP {exc.code}): the repository may be gated or private; "
            "accept its licence on the Hub and set HF_TOKEN to a token that can read it."
        )
    return NetworkError(f"The Hub answered HTTP {exc.code} for {url}: try again later.")


def _split_names(filename: str) -> list[str]:
    from core.library.gguf_meta import SPLIT_RE

    base = filename.rsplit("/", 1)
    folder, name = (base[0] + "/", base[1]) if len(base) == 2 else ("", base[0])
    match = SPLIT_RE.match(name)
    if not match:
        return [filename]
    count = int(match["count"])
    return [f"{folder}{match['stem']}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


def read_remote_header(repo_id: str, filename: str, revision: str | None = None) -> tuple[Any, RangeReader]:
    """The parsed ``GGUFHeader`` of one remote file and the reader (its size and bytes moved)."""
    from core.library.gguf_header import HeaderError, read_header

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise OfflineError("Hearth is offline (HF_HUB_OFFLINE is set): the Hub cannot be asked about models.")
    reader = RangeReader(hub_file_url(repo_id, filename, revision), token=_token())
    try:
        header = read_header(reader)
    except HeaderError as exc:
        raise InvalidModelError(f"{repo_id}/{filename} is not a readable GGUF file ({exc}).") from exc
    finally:
        reader.close()
    return header, reader


def read_remote_shape(repo_id: str, filename: str, revision: str | None = None) -> ModelShape:
    """The shape of a GGUF model on the Hub (every part of a split model), from headers only."""
    metadata: dict[str, Any] | None = None
    tensors: list[Any] = []
    transferred = 0
    file_bytes = 0
    for name in _split_names(filename):
        header, reader = read_remote_header(repo_id, name, revision)
        metadata = metadata if metadata is not None else header.metadata
        tensors.extend(header.tensors)
        transferred += reader.bytes_transferred
        file_bytes += reader.size or 0
    assert metadata is not None
    shape = shape_from_header_tensors(metadata, tensors)
    shape.extras.update(
        {"repo_id": repo_id, "filename": filename, "file_bytes": file_bytes, "bytes_transferred": transferred}
    )
    return shape
