"""Request bodies read as strict JSON, for every route of the three APIs.

FastAPI hands a body to ``json.loads``, which accepts what no JSON peer sends and what the engine
cannot use: text that is not UTF-8, a lone UTF-16 surrogate escape (``"\\ud800"``, a string Python
holds but cannot encode, so the engine failed with a UnicodeEncodeError and the client got a 500),
``NaN``/``Infinity``, and nesting deep enough to exhaust the stack. RFC 8259 (sections 8.1 and 8.2)
requires UTF-8 and leaves unpaired surrogates undefined; llama.cpp's server (nlohmann::json) and
serde_json reject them, and so does Hearth: a 400 that says where, rather than silently replacing
the text the client sent. ``JsonRoute`` reads every body through ``parse_json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from core.server.errors import ApiError

MAX_DEPTH = 64  # objects/arrays inside each other; real requests (tool schemas included) stay far below
# A \u escape in the surrogate range D800–DFFF: only then can a decoded string hold a lone surrogate
# (strict UTF-8 decoding already refuses surrogates written as raw bytes).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class BodyError(HTTPException):
    """A body that is not acceptable JSON; carries the ``ApiError`` to answer (in the route's API shape).

    An ``HTTPException`` because FastAPI passes those on from body parsing, where it turns anything
    else into its own generic 400."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.status, error.message)
        self.error = error


def _invalid(message: str, code: str = "invalid_json", param: str | None = None) -> BodyError:
    return BodyError(ApiError(400, message, param=param, code=code))


def _no_constant(name: str) -> Any:
    raise _invalid(f"The request body is not valid JSON ({name} is not a JSON number): send a finite number.")


def parse_json(body: bytes) -> Any:
    """The JSON value of ``body``; raises ``BodyError`` (a 400 saying what is wrong) for anything else."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(f"The request body is not valid UTF-8 (byte 0x{body[exc.start]:02x} at position "
                       f"{exc.start}): send JSON text encoded as UTF-8.", code="invalid_encoding") from None
    text = text.removeprefix("\ufeff")
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise _invalid(f"The request body is not valid JSON ({exc.msg} at line {exc.lineno} column "
                       f"{exc.colno}): send a JSON object.") from None
    except RecursionError:
        raise _invalid(f"The request body nests objects or arrays too deeply: at most {MAX_DEPTH} levels "
                       "are allowed.", code="too_deep") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise _invalid(f"The request body is not valid JSON ({exc}): send a JSON object.") from None
    surrogates = _SURROGATE_ESCAPE.search(text) is not None
    if surrogates or text.count("[") + text.count("{") > MAX_DEPTH:
        _check(value, [], 0, surrogates)
    return value


def _check(value: Any, path: list[str], depth: int, surrogates: bool) -> None:
    """Walk the value for nesting beyond MAX_DEPTH and (if any escape may make one) lone surrogates."""
    if isinstance(value, dict | list):
        if depth >= MAX_DEPTH:
            raise _invalid(f"The request body nests objects or arrays more than {MAX_DEPTH} levels deep "
                           f"(at '{_where(path)}'): send a flatter request.", code="too_deep",
                           param=_where(path) or None)
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if surrogates and isinstance(key, str):
                _check_text(key, path)
            path.append(str(key))
            _check(item, path, depth + 1, surrogates)
            path.pop()
    elif surrogates and isinstance(value, str):
        _check_text(value, path)


def _check_text(text: str, path: list[str]) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        where = _where(path)
        raise _invalid(
            f"The text at '{where or 'the top'}' holds a lone UTF-16 surrogate (\\u{ord(text[exc.start]):04x}), "
            "which is not a Unicode character: send valid text (a surrogate escape must be half of a pair).",
            code="invalid_unicode", param=where or None) from None


def _where(path: list[str]) -> str:
    return ".".join(p[:40] for p in path[:12])


class StrictJsonRequest(Request):
    """A request whose ``json()`` is ``parse_json`` (read once, kept)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class JsonRoute(APIRoute):
    """The route class of every router: bodies are parsed by ``parse_json`` (see the module's docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict
