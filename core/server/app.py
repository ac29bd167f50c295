"""The ASGI application: the /v1 (OpenAI), /v1/messages (Anthropic) and /api (Ollama) routers behind the
server's guard.

The guard (one plain ASGI middleware, so it also sees streamed answers to their end) checks, in
order: the Host header on a loopback server (a web page cannot reach it through DNS rebinding),
the API key (``Authorization: Bearer KEY`` or Anthropic's ``x-api-key: KEY``, compared in constant
time), the body size; then it times the request and hands a ``RequestRecord`` to ``on_request``.
Bodies are parsed as strict JSON by the routers' ``JsonRoute`` (``body.py``).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import HearthError
from core.server import anthropic_routes, ollama_routes, openai_routes
from core.server.body import BodyError
from core.server.config import RequestRecord, ServerConfig, clip, is_loopback
from core.server.errors import ApiError, ModelNotFound, from_exception
from core.server.host import ModelHost

log = logging.getLogger("hearth.server")


def create_app(config: ServerConfig, host: ModelHost,
               on_request: Callable[[RequestRecord], None] | None = None) -> FastAPI:
    from core import __version__

    app = FastAPI(title="Hearth local API", version=__version__,
                  description="OpenAI-compatible (/v1), Anthropic-compatible (/v1/messages) and "
                  "Ollama-compatible (/api) access to Hearth's models.")
    app.include_router(anthropic_routes.router(host))
    app.include_router(openai_routes.router(host))
    app.include_router(ollama_routes.router(host))

    @app.get("/", include_in_schema=False)
    def root() -> Any:
        # Ollama clients probe "GET /" and expect this text.
        from fastapi.responses import PlainTextResponse

        return PlainTextResponse("Ollama is running (Hearth)")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        if isinstance(exc, ModelNotFound):
            request.state.model = exc.name  # the log shows which name the other app asked for
        return error_response(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request.url.path, validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc, BodyError):
            return error_response(request.url.path, exc.error)
        path = clip(request.url.path)  # the client chose it: the answer does not echo it whole
        message = {404: f"There is no {path} endpoint: see /docs for the API.",
                   405: f"{clip(request.method, 20)} is not allowed on {path}."}.get(exc.status_code, str(exc.detail))
        return error_response(request.url.path, ApiError(exc.status_code, message))

    @app.exception_handler(HearthError)
    async def hearth_error(request: Request, exc: HearthError) -> JSONResponse:
        return error_response(request.url.path, from_exception(exc))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return error_response(request.url.path, from_exception(exc))

    app.add_middleware(Guard, config=config, on_request=on_request)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["*"],
                           allow_headers=["*"], max_age=600)
    return app


def error_response(path: str, error: ApiError) -> JSONResponse:
    """The error in the shape of the API that ``path`` belongs to."""
    if path.startswith("/api/"):
        body = error.ollama_body()
    elif path == anthropic_routes.PREFIX or path.startswith(anthropic_routes.PREFIX + "/"):
        body = error.anthropic_body()
    else:
        body = error.openai_body()
    return JSONResponse(body, status_code=error.status)


def _field_path(loc: tuple[Any, ...], body: Any, missing: bool) -> list[str]:
    """Pydantic's error location as the fields of the body it names. Steps that do not index into the body
    (the tags pydantic gives the members of a union, such as 'str', 'list[ContentPart]' or a block's type)
    are left out; a missing field, the last step, is kept."""
    steps = loc[1:] if loc and loc[0] == "body" else loc
    path: list[str] = []
    at = body
    for i, step in enumerate(steps):
        if ((isinstance(at, dict) and step in at)
                or (isinstance(at, list) and isinstance(step, int) and 0 <= step < len(at))):
            at = at[step]
        elif not (missing and i == len(steps) - 1):
            continue
        path.append(str(step))
    return path


def validation_error(exc: RequestValidationError) -> ApiError:
    """Pydantic's first complaint as one sentence that names the field (OpenAI answers these with 400)."""
    body = getattr(exc, "body", None)
    errors: list[dict[str, Any]] = [dict(e) for e in exc.errors()]
    located = [(_field_path(tuple(e.get("loc", ())), body, e.get("type") == "missing"), e) for e in errors]
    # The deepest: for a value that matches no member of a union (content: a string or a list of blocks),
    # pydantic names each member's complaint, and the one that got furthest into the value says most.
    loc, first = max(located, key=lambda pair: len(pair[0])) if located else ([], {})
    param = ".".join(loc) or None
    kind = str(first.get("type", ""))
    if kind == "json_invalid":
        return ApiError(400, "The request body is not valid JSON "
                        f"({first.get('ctx', {}).get('error', 'parse error')}): send a JSON object.", code="invalid_json")
    if kind == "missing":
        if not loc:
            return ApiError(400, "The request has no body: send a JSON object.", code="invalid_json")
        return ApiError(400, f"'{param}' is required.", param=param, code="missing_field")
    if not loc and kind in ("model_attributes_type", "dict_type"):
        return ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    shown = json.dumps(first.get("input"), default=str)[:80]
    what = f"'{param}'" if param else "The request body"
    return ApiError(400, f"{what} is invalid: {first.get('msg', 'wrong value')} (got {shown}).",
                    param=param, code="invalid_value")


class Guard:
    """Host check, API key, body size limit and the request log, around the whole app."""

    def __init__(self, app: ASGIApp, config: ServerConfig,
                 on_request: Callable[[RequestRecord], None] | None) -> None:
        self.app, self.config, self.on_request = app, config, on_request
        self.key = config.api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, arrived = time.perf_counter(), time.time()
        path: str = scope.get("path", "")
        status = {"code": 500, "started": 0}
        scope.setdefault("state", {})

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = int(message["status"]), 1
            await send(message)

        try:
            error = self._refuse(scope)
            if error is None:
                body, error = await self._read_body(receive)
            if error is not None:
                await error_response(path, error)(scope, receive, send_logged)
            else:
                await self.app(scope, _replay(body, receive), send_logged)
        except Exception as exc:
            # Starlette re-raises a bug after answering it with a 500; an error that escaped before any answer
            # still gets one. Either way uvicorn sees a finished request and keeps the connection usable.
            if not status["started"]:
                await error_response(path, from_exception(exc))(scope, receive, send_logged)
        finally:
            self._log(scope, status["code"], arrived, time.perf_counter() - started)

    def _refuse(self, scope: Scope) -> ApiError | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.config.loopback and not self.config.api_key:
            name = headers.get("host", "").rsplit(":", 1)[0].strip("[]").lower()
            if name and not is_loopback(name):
                return ApiError(403, f"Host '{clip(name)}' is not allowed: this server only answers on localhost.",
                                code="host_not_allowed")
        if self.key and scope.get("method") != "OPTIONS":
            scheme, _, bearer = headers.get("authorization", "").partition(" ")
            given = [bearer.strip()] if scheme.lower() == "bearer" else []
            if "x-api-key" in headers:  # Anthropic's clients send the key this way
                given.append(headers["x-api-key"].strip())
            # Both compared (no early exit), each in constant time.
            if not sum(hmac.compare_digest(g.encode("latin-1"), self.key) for g in given):
                return ApiError(401, "Missing or wrong API key: send 'Authorization: Bearer KEY' (or "
                                "'x-api-key: KEY') with the key shown in Hearth's Settings > Server.",
                                type="invalid_request_error", code="invalid_api_key")
        return None

    async def _read_body(self, receive: Receive) -> tuple[bytes, ApiError | None]:
        limit = self.config.max_body_bytes
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", ApiError(499, "The client closed the connection.")
            part = message.get("body", b"")
            size += len(part)
            if size > limit:
                while message.get("more_body", False):  # read the rest so the client gets to see the answer
                    message = await receive()
                return b"", ApiError(413, f"The request body is larger than {limit // 2**20} MB: send less text "
                                     "or fewer and smaller images per request.", code="request_too_large")
            chunks.append(part)
            if not message.get("more_body", False):
                return b"".join(chunks), None

    def _log(self, scope: Scope, status: int, arrived: float, seconds: float) -> None:
        if self.on_request is None:
            return
        state = scope.get("state", {})
        client = scope.get("client")
        record = RequestRecord(
            time=arrived, client=client[0] if client else "", method=str(scope.get("method", "")),
            path=str(scope.get("path", "")), model=state.get("model"), status=status,
            prompt_tokens=int(state.get("prompt_tokens", 0)), completion_tokens=int(state.get("completion_tokens", 0)),
            seconds=seconds,
        )
        try:
            self.on_request(record)
        except Exception:  # a broken listener must not break the server
            log.exception("on_request callback failed")


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
