"""Errors a user can cause. Each message says what is wrong and what to do about it.

The CLI prints ``str(error)`` on one line and exits non-zero; the GUI shows it in place.
Anything that is not a ``HearthError`` is a bug and keeps its traceback.
"""

from __future__ import annotations


class HearthError(Exception):
    """Base of every user-facing error."""

    exit_code = 1


class NotFoundError(HearthError):
    """A model, adapter, chat or file the user named does not exist."""


class InvalidModelError(HearthError):
    """A file is not a usable GGUF model (missing, truncated, wrong format, corrupt)."""

    reason = ""  # llama.cpp's own words for a failed load, without the sentence's advice (Engine.load sets it)


class UnsupportedArchitectureError(InvalidModelError):
    """The GGUF names an architecture this build of llama.cpp cannot run."""


class AlreadyExistsError(HearthError):
    """A name is already taken in the library."""


class EngineError(HearthError):
    """The chat engine could not do what was asked (load failed, bad request)."""


class EngineCrashedError(EngineError):
    """The engine's worker process died (native crash, out of memory, killed)."""


class WorkerError(HearthError):
    """Another machine (a ``hearth rpc-worker``) cannot be used: bad address, does not answer, busy."""


class WorkerLostError(EngineCrashedError):
    """A worker machine went away during a request; ``endpoints`` names the ones that stopped answering."""

    def __init__(self, message: str, endpoints: list[str] | None = None) -> None:
        super().__init__(message)
        self.endpoints: list[str] = list(endpoints or [])


class EngineInternalError(EngineError):
    """A request failed on a bug in the engine; the engine keeps serving (details in its log)."""


class ContextOverflowError(EngineError):
    """The conversation cannot fit in the model's context window even after dropping old turns."""


class NoVisionError(EngineError):
    """A message has images but the loaded model has no vision projector (mmproj) to read them."""

    MESSAGE = (
        "This model cannot read images: it has no vision projector (mmproj) loaded. Pull the model's mmproj file "
        "or import one with `hearth import --mmproj`."
    )

    def __init__(self, message: str = MESSAGE) -> None:
        super().__init__(message)


class NetworkError(HearthError):
    """The Hub could not be reached or answered with an error."""


class OfflineError(NetworkError):
    """Hearth is in offline mode (or the Hub is unreachable)."""


class DiskFullError(HearthError):
    """Not enough free disk space for what was asked."""


class VerificationError(HearthError):
    """A downloaded file did not match the checksum the Hub lists for it."""


class CancelledError(HearthError):
    """The user cancelled a long-running operation."""


class DatasetError(HearthError):
    """A dataset or document set cannot be used for training."""


class TrainingError(HearthError):
    """A fine-tuning job cannot start or failed."""


class ExportError(HearthError):
    """An adapter or model cannot be exported, merged or quantized as asked."""


class ImageError(HearthError):
    """An image the user attached cannot be used (not an image, unsupported format, corrupt, far too large)."""
