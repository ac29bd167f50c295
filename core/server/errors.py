"""Errors as HTTP answers: OpenAI's ``{"error": {message, type, param, code}}`` under /v1, Ollama's
``{"error": message}`` under /api, Anthropic's ``{"type": "error", "error": {type, message}}`` under
/v1/messages. Every failure a request can cause becomes one of these; a bug becomes a 500 that says
so, without a traceback (the traceback goes to the log).
"""

from __future__ import annotations

import logging
from typing import Any

from core.errors import (
    ContextOverflowError,
    EngineCrashedError,
    EngineError,
    EngineInternalError,
    HearthError,
    ImageError,
    InvalidModelError,
    NotFoundError,
    NoVisionError,
)
from core.server.config import clip

log = logging.getLogger("hearth.server")

# Anthropic's error types by HTTP status (docs.anthropic.com "Errors"); the SDK raises its exception
# classes from the status (400 BadRequestError, 401 AuthenticationError, 404 NotFoundError...).
ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                   404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                   500: "api_error", 503: "overloaded_error", 529: "overloaded_error"}


class ApiError(Exception):
    """A request that cannot be answered, with the HTTP status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def openai_body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def ollama_body(self) -> dict[str, Any]:
        return {"error": self.message}

    def anthropic_body(self) -> dict[str, Any]:
        kind = ANTHROPIC_TYPES.get(self.status, "api_error" if self.status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": self.message}}


class ModelNotFound(ApiError):  # named as the contract says
    def __init__(self, name: str, available: list[str]) -> None:
        names = ", ".join(available[:20]) or "none"
        super().__init__(
            404, f"The model '{clip(name)}' does not exist: use one of the names GET /v1/models lists ({names}).",
            param="model", code="model_not_found",
        )
        self.name = name  # what the client asked for, for the request log


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def no_vision(model: str, param: str | None) -> ApiError:
    """The answer to an image sent to a model that has no vision projector (mmproj) paired in the library."""
    return ApiError(400, f"The model '{clip(model)}' cannot read images: it has no vision projector (mmproj) "
                    "loaded. Pull the model's mmproj file or import one with `hearth import --mmproj`.",
                    param=param, code="images_not_supported")


def from_exception(exc: BaseException) -> ApiError:
    """The HTTP answer for an error raised while serving a request."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ContextOverflowError):
        return ApiError(400, f"{exc} Send a shorter prompt or fewer messages.", param="messages",
                        code="context_length_exceeded")
    if isinstance(exc, EngineCrashedError):
        return ApiError(500, f"The engine stopped while answering ({exc}). It restarts by itself: send the "
                        "request again.", type="server_error", code="engine_crashed")
    if isinstance(exc, NoVisionError):  # the projector did not load after all (the request's own check passed)
        return ApiError(400, str(exc), code="images_not_supported")
    if isinstance(exc, ImageError):  # an image the engine could not decode
        return ApiError(400, str(exc), code="invalid_image")
    if isinstance(exc, EngineInternalError):
        return ApiError(500, str(exc), type="server_error", code="engine_error")
    if isinstance(exc, NotFoundError):
        return ApiError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, InvalidModelError):
        return ApiError(500, f"The model could not be loaded: {exc}", type="server_error", code="model_load_failed")
    if isinstance(exc, EngineError | HearthError):
        return ApiError(400, str(exc))
    log.exception("Internal error while serving a request", exc_info=exc)
    return ApiError(500, f"Internal server error ({type(exc).__name__}): this is a bug in Hearth; the details are "
                    "in its log. The server keeps running.", type="server_error", code="internal_error")
