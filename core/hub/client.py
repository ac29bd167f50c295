"""Reaching the Hugging Face Hub: endpoint, token, offline mode, and Hub errors as Hearth errors.

``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` are read on every call (huggingface_hub reads
them once at import), so a test or a settings change takes effect without a restart.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from core.errors import HearthError, NetworkError, NotFoundError, OfflineError

if TYPE_CHECKING:
    from huggingface_hub import HfApi

DEFAULT_ENDPOINT = "https://huggingface.co"
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

    return HfApi(endpoint=endpoint(), token=token() or False, library_name="hearth")


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
    """Turn huggingface_hub and network exceptions raised inside into Hearth errors that say what to do."""
    from huggingface_hub import errors as hf_errors

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
