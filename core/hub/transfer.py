"""Fetching one file over HTTP into a ``.partial`` file: range requests, resume, retry, SHA-256.

The file is written to ``<partial>`` beside a small JSON note naming what it is a part of (URL,
size, SHA-256). A later attempt (after a dropped connection, a pause, or the app being killed)
continues with ``Range: bytes=<size of partial>-`` instead of starting over (RFC 9110 §14).
The SHA-256 is computed while the bytes arrive, in a second thread, so verifying costs no extra
pass over the file.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import queue
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from core.errors import DiskFullError, HearthError, NetworkError, NotFoundError, OfflineError

CHUNK = 1 << 20
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: failures in a row without new bytes before giving up, and the waits between."""

    attempts: int = 8
    base_delay: float = 1.0
    max_delay: float = 30.0
    timeout: float = 30.0  # seconds without a byte (connect or read) before the attempt counts as failed

    def delay(self, failure: int) -> float:
        return float(min(self.max_delay, self.base_delay * (2 ** max(0, failure - 1))))


class TransferControl(Protocol):
    """What a transfer asks its owner: whether to stop, and where new bytes are counted."""

    def stop_reason(self) -> str | None:
        """``'pause'`` or ``'cancel'`` when the transfer should stop now, else None."""

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, returning early when asked to stop."""

    def add_bytes(self, n: int) -> None: ...


class TransferStopped(Exception):
    """The owner asked the transfer to stop (pause or cancel); the ``.partial`` file is kept."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _RetryableError(Exception):
    pass


class _AuthAwareRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, dropping the Hub token when the redirect leaves the Hub's host (a CDN)."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            new.headers.pop("Authorization", None)
            new.unredirected_hdrs.pop("Authorization", None)
        return new


_OPENER = urllib.request.build_opener(_AuthAwareRedirects())


def open_url(
    url: str, headers: dict[str, str], timeout: float, method: str = "GET"
) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers=headers, method=method)
    response: http.client.HTTPResponse = _OPENER.open(request, timeout=timeout)
    return response


def _note_path(partial: Path) -> Path:
    return partial.with_name(partial.name + ".json")


def _matching_partial(partial: Path, note: dict[str, Any]) -> int:
    """Bytes of ``partial`` that belong to the same file, or 0 (and the stale partial removed)."""
    try:
        saved = json.loads(_note_path(partial).read_text(encoding="utf-8"))
        size = partial.stat().st_size
    except (OSError, ValueError):
        partial.unlink(missing_ok=True)
        return 0
    if saved != note or size > int(note["size"]):
        partial.unlink(missing_ok=True)
        return 0
    return size


def remove_partial(partial: Path) -> None:
    partial.unlink(missing_ok=True)
    _note_path(partial).unlink(missing_ok=True)


class _Hasher:
    """SHA-256 of the bytes handed to it, computed in a thread (hashlib releases the GIL)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=64)
        self._thread = threading.Thread(target=self._run, name="hearth-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._hash.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def hexdigest(self) -> str:
        self._queue.put(None)
        self._thread.join()
        return self._hash.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def _hash_prefix(partial: Path, hasher: _Hasher, size: int) -> None:
    with partial.open("rb") as handle:
        remaining = size
        while remaining > 0:
            chunk = handle.read(min(8 * CHUNK, remaining))
            if not chunk:
                break
            hasher.update(chunk)
            remaining -= len(chunk)


def _classify(exc: BaseException, url: str) -> BaseException:
    """A non-retryable Hearth error for final HTTP answers, or ``_RetryableError`` for transient ones."""
    if isinstance(exc, urllib.error.HTTPError):
        code = exc.code
        if code in (408, 425, 429) or code >= 500:
            return _RetryableError(f"HTTP {code}")
        if code == 404:
            return NotFoundError(f"The Hub has no file at {url} (HTTP 404): list the repo's files again.")
        if code in (401, 403):
            return NetworkError(
                f"The Hub refused the download (HTTP {code}): the repo may be gated or private; accept its "
                "licence on the Hub and set HF_TOKEN, then try again."
            )
        return NetworkError(f"The Hub answered HTTP {code} for {url}: try again later.")
    return _RetryableError(f"{type(exc).__name__}: {exc}")


def fetch(
    url: str,
    partial: Path,
    *,
    size: int,
    sha256: str | None,
    control: TransferControl,
    headers: dict[str, str] | None = None,
    policy: RetryPolicy | None = None,
    on_retry: Callable[[str, float], None] | None = None,
) -> str:
    """Download ``url`` into ``partial`` (resuming what is there) and return the SHA-256 of the whole file.

    Raises ``TransferStopped`` when paused or cancelled (the partial file stays), ``NetworkError`` /
    ``OfflineError`` after the retries are spent, ``DiskFullError`` when the disk fills up.
    The SHA-256 is returned, not compared: the caller decides what a mismatch means.
    """
    policy = policy or RetryPolicy()
    note = {"url": url.split("?")[0], "size": size, "sha256": sha256}
    partial.parent.mkdir(parents=True, exist_ok=True)
    offset = _matching_partial(partial, note) if partial.exists() else 0
    if offset == 0:
        _note_path(partial).write_text(json.dumps(note), encoding="utf-8")
        partial.write_bytes(b"")
    hasher = _Hasher()
    try:
        _hash_prefix(partial, hasher, offset)
        failures = 0
        last_error = ""
        while True:
            reason = control.stop_reason()
            if reason:
                raise TransferStopped(reason)
            before = offset
            try:
                offset, restarted = _one_attempt(
                    url, partial, offset, size, headers or {}, policy, control, hasher
                )
                if restarted:  # the server ignored Range: the prefix hashed so far is no use
                    hasher.close()
                    hasher = _Hasher()
                    offset = 0
                    offset, _ = _one_attempt(url, partial, 0, size, headers or {}, policy, control, hasher)
                return hasher.hexdigest()
            except (TransferStopped, HearthError):
                raise
            except _RetryableError as exc:
                last_error = str(exc)
            except urllib.error.HTTPError as exc:
                classified = _classify(exc, url)
                if not isinstance(classified, _RetryableError):
                    raise classified from exc
                last_error = str(classified)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            # Every byte written was also hashed, so the partial file's size is where to go on from.
            offset = partial.stat().st_size
            failures = 1 if offset > before else failures + 1
            if failures > policy.attempts:
                kind = (
                    OfflineError
                    if "URLError" in last_error or "refused" in last_error.lower()
                    else NetworkError
                )
                raise kind(
                    f"Downloading {partial.name.removesuffix('.partial')} failed {failures} times in a row "
                    f"({last_error}); what was fetched is kept, so running the download again resumes it."
                )
            delay = policy.delay(failures)
            if on_retry:
                on_retry(last_error, delay)
            control.wait(delay)
    finally:
        hasher.close()


def _one_attempt(
    url: str,
    partial: Path,
    offset: int,
    size: int,
    headers: dict[str, str],
    policy: RetryPolicy,
    control: TransferControl,
    hasher: _Hasher,
) -> tuple[int, bool]:
    """One request from ``offset``; returns the new offset and whether the server restarted at 0."""
    if 0 < size <= offset:
        return offset, False
    request_headers = {**headers, "Accept-Encoding": "identity"}
    if offset > 0:
        request_headers["Range"] = f"bytes={offset}-"
    try:
        response = open_url(url, request_headers, policy.timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset >= size:
            return offset, False
        raise
    with response:
        if offset > 0 and response.status == 200:
            return 0, True
        if offset > 0:
            match = _CONTENT_RANGE_RE.match(response.headers.get("Content-Range", ""))
            if not match or int(match[1]) != offset:
                return 0, True
        if not partial.exists():
            partial.write_bytes(b"")
        with partial.open("r+b") as out:
            out.seek(offset)
            out.truncate()
            while True:
                if control.stop_reason():
                    break
                chunk = response.read1(CHUNK)  # what has arrived: a stall loses nothing already received
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise DiskFullError(
                            f"The disk filled up while downloading {partial.name.removesuffix('.partial')}: free "
                            "some space and run the download again; it resumes where it stopped."
                        ) from exc
                    raise HearthError(f"Cannot write {partial}: {exc}") from exc
                hasher.update(chunk)
                offset += len(chunk)
                control.add_bytes(len(chunk))
                if offset > size:
                    raise HearthError(
                        f"The server sent more than the {size:,} bytes the Hub listed for "
                        f"{partial.name.removesuffix('.partial')}: the download was stopped; try again later."
                    )
            # No fsync per attempt: a killed app keeps the page cache, and the SHA-256 check before
            # registering catches a file damaged by a power cut.
            out.flush()
    reason = control.stop_reason()
    if reason:
        raise TransferStopped(reason)
    if offset < size:
        raise _RetryableError(f"connection closed after {offset:,} of {size:,} bytes")
    return offset, False


class SleepControl:
    """A ``TransferControl`` that never stops: for plain scripted downloads."""

    def __init__(self) -> None:
        self.done = 0

    def stop_reason(self) -> str | None:
        return None

    def wait(self, seconds: float) -> None:
        time.sleep(seconds)

    def add_bytes(self, n: int) -> None:
        self.done += n
