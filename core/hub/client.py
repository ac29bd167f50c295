"""Reaching the Hugging Face Hub: endpoint, token, offline mode, and Hub errors as Hearth errors.

``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` are read on every call (huggingface_hub reads
them once at import), so a test or a settings change takes effect without a restart.

No network is not a stall: huggingface_hub retries a refused connection or a name that does not
resolve five times over about 25 s, logging each retry to the terminal. Inside ``hub_errors`` such a
connection is tried once more after a moment and then fails at once, and the library's retry lines
are not shown; timeouts and HTTP 429/5xx keep the library's backoff. File downloads do not go
through huggingface_hub (``core.hub.transfer``) and keep their own patient retry and resume.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from core.errors import HearthError, NetworkError, NotFoundError, OfflineError

if TYPE_CHECKING:
    from huggingface_hub import HfApi

DEFAULT_ENDPOINT = "https://huggingface.co"
CONNECT_RETRY_DELAY = 0.25  # seconds before the one retry of a refused or unresolvable connection
_TRUE = {"1", "on", "yes", "true"}
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def token() -> str | None:
    """``HF_TOKEN`` when set, else the token saved by ``hf auth login`` (None when logged out)."""
    value = os.environ.get("HF_TOKEN")
    if value:
        return value
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # a broken token file must not stop public downloads
        return None


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def ensure_online(action: str) -> None:
    """Raise ``OfflineError`` when offline mode is on."""
    if is_offline():
        raise OfflineError(
            f"Cannot {action}: Hearth is in offline mode (HF_HUB_OFFLINE=1). Models already in the library "
            "still work; unset HF_HUB_OFFLINE to reach the Hugging Face Hub."
        )


def api() -> HfApi:
    from huggingface_hub import HfApi

    _install_quick_failure()
    return HfApi(endpoint=endpoint(), token=token() or False, library_name="hearth")


class HubUnreachableError(OSError):
    """No connection to the Hub could be made (refused, unreachable, or its name does not resolve)."""


# True while a Hearth call to the Hub runs (``hub_errors``): only those calls fail fast.
_QUICK = contextvars.ContextVar("hearth_hub_quick_failure", default=False)
_install_lock = threading.Lock()
_installed = False


class _QuickFailureTransport:
    """Wraps huggingface_hub's HTTP transport: inside ``hub_errors`` a failed connection is retried once.

    A connection error that is not a timeout (``httpx2.ConnectError``: refused, no route, no such
    host) says the network or the Hub is not there; waiting 25 s will not change that.
    """

    def __init__(self, inner: Any, connect_error: type[Exception]) -> None:
        self.inner = inner
        self.connect_error = connect_error

    def handle_request(self, request: Any) -> Any:
        if not _QUICK.get():
            return self.inner.handle_request(request)
        try:
            return self.inner.handle_request(request)
        except self.connect_error:
            time.sleep(CONNECT_RETRY_DELAY)
        try:
            return self.inner.handle_request(request)
        except self.connect_error as exc:
            raise HubUnreachableError(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> _QuickFailureTransport:
        self.inner.__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        self.inner.__exit__(*args)


class _HideRetryLog(logging.Filter):
    """Drops huggingface_hub's retry warnings while a Hearth call runs: the caller reports the outcome."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _QUICK.get()


def _install_quick_failure() -> None:
    """Once per process: wrap the transports of huggingface_hub's HTTP client and filter its retry log."""
    global _installed
    with _install_lock:
        if _installed:
            return
        _installed = True
        # The retry lines are logged by huggingface_hub.utils._http (``_http_backoff_base``).
        logging.getLogger("huggingface_hub.utils._http").addFilter(_HideRetryLog())
        try:
            import httpx2
            from huggingface_hub import set_client_factory
            from huggingface_hub.utils import _http as hf_http
        except ImportError:  # another HTTP stack: the retry log is hidden, the retries stay
            return
        default_factory = getattr(hf_http, "default_client_factory", None)
        if default_factory is None:
            return

        def client_factory() -> Any:
            client = default_factory()
            # httpx2 keeps the transport and the proxy mounts in these attributes (httpx2/_client.py).
            if hasattr(client, "_transport") and hasattr(client, "_mounts"):
                client._transport = _QuickFailureTransport(client._transport, httpx2.ConnectError)
                client._mounts = {pattern: None if t is None else _QuickFailureTransport(t, httpx2.ConnectError)
                                  for pattern, t in client._mounts.items()}
            return client

        set_client_factory(client_factory)


def check_repo_id(repo_id: str) -> str:
    """A Hub repo id ``owner/name``; anything else is refused before it reaches a URL or a folder name."""
    repo_id = repo_id.strip()
    if not _REPO_RE.match(repo_id) or ".." in repo_id:
        raise HearthError(
            f"'{repo_id}' is not a Hub model id: write it as OWNER/NAME, e.g. bartowski/Llama-3.2-1B-Instruct-GGUF."
        )
    return repo_id


def safe_relative_path(name: str) -> PurePosixPath:
    """A file path from the network made safe to join under a folder, or ``HearthError``.

    Absolute paths, ``..``, backslashes, drive letters and control characters are refused, so a
    name sent by a server can never point outside the folder it is saved in.
    """
    bad = (
        not name
        or name.startswith(("/", "~"))
        or "\\" in name
        or ":" in name
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
    )
    path = PurePosixPath(name)
    if bad or path.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")):
        raise HearthError(
            f"The Hub listed an unsafe file name {name!r}: it was refused so nothing is written outside "
            "the models folder. Report this repository to its owner."
        )
    return path


def describe_http_error(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return f"HTTP {status}" if status else type(exc).__name__


@contextmanager
def hub_errors(what: str, repo_id: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub and network exceptions raised inside into Hearth errors that say what to do.

    Inside, an unreachable Hub fails after one quick retry and the library's retry log stays hidden.
    """
    from huggingface_hub import errors as hf_errors

    quick = _QUICK.set(True)
    try:
        yield
    except HearthError:
        raise
    except hf_errors.OfflineModeIsEnabled as exc:
        raise OfflineError(
            f"Cannot {what}: offline mode is on (HF_HUB_OFFLINE=1); unset it to reach the Hub."
        ) from exc
    except hf_errors.GatedRepoError as exc:
        raise NetworkError(
            f"{repo_id or 'This repository'} is gated: accept its licence on the Hub and set HF_TOKEN "
            "(or run 'hf auth login'), then try again."
        ) from exc
    except hf_errors.RepositoryNotFoundError as exc:
        raise NotFoundError(
            f"No model repository '{repo_id}' on the Hub (or it is private): check the name with 'hearth search'."
        ) from exc
    except hf_errors.RevisionNotFoundError as exc:
        raise NotFoundError(f"{repo_id} has no such revision: check the branch, tag or commit.") from exc
    except hf_errors.EntryNotFoundError as exc:
        raise NotFoundError(
            f"That file is not in {repo_id}: list its files with 'hearth files {repo_id}'."
        ) from exc
    except hf_errors.HfHubHTTPError as exc:
        raise NetworkError(
            f"The Hub answered with an error while trying to {what} ({describe_http_error(exc)}): "
            "try again later."
        ) from exc
    except (OSError, TimeoutError) as exc:
        raise OfflineError(
            f"Cannot {what}: the Hub at {endpoint()} is unreachable ({exc}). Check the connection; "
            "models already in the library still work."
        ) from exc
    except Exception as exc:
        # httpx2 (or httpx/requests in older huggingface_hub) transport errors share no base class
        # with OSError; recognise them by module so the message still says what happened.
        module = type(exc).__module__.split(".")[0]
        if module in {"httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3"}:
            raise OfflineError(
                f"Cannot {what}: the Hub at {endpoint()} is unreachable ({type(exc).__name__}: {exc}). "
                "Check the connection; models already in the library still work."
            ) from exc
        raise
    finally:
        _QUICK.reset(quick)
