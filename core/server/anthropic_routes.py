"""The Anthropic-compatible Messages API: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

Shapes follow Anthropic's API reference and the official ``anthropic`` package's ``types/``: a
``message`` with content blocks (``text``, ``tool_use``), ``stop_reason`` (end_turn, max_tokens,
stop_sequence, tool_use), ``usage``; streaming as named server-sent events in Anthropic's order
(``message_start``, then per block ``content_block_start`` / ``content_block_delta`` /
``content_block_stop`` with a ``ping`` after the first start, then ``message_delta`` and
``message_stop``; an ``error`` event if it fails midway). Requests become the same engine requests as
the OpenAI route's (``generate``), tool calls are read back by ``tools.parse_tool_calls``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from core.engine import Completion, TextChunk
from core.server import generate
from core.server.anthropic_types import (
    Base64ImageSource,
    CountTokensRequest,
    DocumentBlock,
    ImageBlock,
    MessageParam,
    MessagesRequest,
    TextBlock,
    ThinkingBlock,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolResultBlock,
    ToolUseBlock,
    UrlImageSource,
)
from core.server.body import JsonRoute
from core.server.errors import bad_request, from_exception
from core.server.host import ModelHost
from core.server.images import RequestImages, check_media_type, only_in_user_messages, refuse_remote
from core.server.tools import ToolCall, ToolCallStream, parse_tool_calls

PREFIX = "/v1/messages"
STOP_REASONS = {"stop": "end_turn", "cancelled": "end_turn", "length": "max_tokens",
                "context": "model_context_window_exceeded"}


def router(host: ModelHost) -> APIRouter:
    api = APIRouter(prefix=PREFIX, route_class=JsonRoute)

    @api.post("")
    async def messages(body: MessagesRequest, request: Request) -> Response:
        return await _messages(host, body, request)

    @api.post("/count_tokens")
    async def count_tokens(body: CountTokensRequest, request: Request) -> Response:
        return await _count_tokens(host, body, request)

    return api


# -- requests into engine messages ----------------------------------------------------------------

def _joined(blocks: list[TextBlock]) -> str:
    return "\n\n".join(b.text for b in blocks)


def _image(images: RequestImages, role: str, block: ImageBlock, where: str) -> dict[str, Any]:
    """An image block as the engine's image part: base64 sources only (a URL is never fetched)."""
    source = block.source
    only_in_user_messages(role, where)
    if isinstance(source, UrlImageSource):
        raise refuse_remote(source.url, f"{where}.source.url")
    if not isinstance(source, Base64ImageSource):
        raise bad_request(f"'{where}.source' is a file reference, and Hearth has no Files API: send the image "
                          "itself as a base64 source ({\"type\": \"base64\", \"media_type\": \"image/png\", "
                          "\"data\": ...}).", param=f"{where}.source", code="invalid_image")
    check_media_type(source.media_type, f"{where}.source.media_type")
    return images.from_base64(source.data, f"{where}.source.data")


def _tool_result(images: RequestImages, block: ToolResultBlock, where: str) -> str:
    if isinstance(block.content, str):
        text = block.content
    else:
        for j, part in enumerate(block.content):
            if isinstance(part, ImageBlock):
                at = f"{where}.content.{j}"
                _image(images, "user", part, at)  # a malformed image says so first
                raise bad_request(f"'{at}' is an image in a tool result, which Hearth does not pass to the model: "
                                  "send the image in the user message's own content.", param=at,
                                  code="invalid_image")
        text = _joined([p for p in block.content if isinstance(p, TextBlock)])
    return f"Error: {text}" if block.is_error else text


def engine_messages(images: RequestImages, body: CountTokensRequest) -> list[dict[str, Any]]:
    """The request's system prompt and messages as the engine's OpenAI-style messages; the images found go
    into ``images`` (to be checked with ``images.prepare()`` before the engine reads them).

    A user turn's ``tool_result`` blocks become ``tool`` messages (before its text, as Anthropic places
    them); an assistant turn's ``tool_use`` blocks become its ``tool_calls``.
    """
    out: list[dict[str, Any]] = []
    system = body.system if isinstance(body.system, str) else _joined(body.system or [])
    if system:
        out.append({"role": "system", "content": system})
    names: dict[str, str] = {}  # tool_use id -> tool name, for the results that answer them
    for i, message in enumerate(body.messages):
        out.extend(_engine_turn(images, message, i, names))
    return out


def _user_content(texts: list[TextBlock | dict[str, Any]]) -> Any:
    """The text blocks joined as before; with images, parts in their order (neighbouring texts joined)."""
    if all(isinstance(t, TextBlock) for t in texts):
        return _joined([t for t in texts if isinstance(t, TextBlock)])
    parts: list[dict[str, Any]] = []
    run: list[TextBlock] = []
    for item in [*texts, None]:
        if isinstance(item, TextBlock):
            run.append(item)
            continue
        if run:
            parts.append({"type": "text", "text": _joined(run)})
            run = []
        if item is not None:
            parts.append(item)
    return parts


def _engine_turn(images: RequestImages, message: MessageParam, index: int,
                 names: dict[str, str]) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    texts: list[TextBlock | dict[str, Any]] = []  # text blocks and image parts, in order
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for j, block in enumerate(message.content):
        where = f"messages.{index}.content.{j}"
        if isinstance(block, TextBlock):
            texts.append(block)
        elif isinstance(block, ImageBlock):
            texts.append(_image(images, message.role, block, where))
        elif isinstance(block, ToolUseBlock):
            if message.role != "assistant":
                raise bad_request(f"'{where}' is a tool_use block in a user message: tool_use blocks belong to "
                                  "the assistant's messages.", param=where)
            names[block.id] = block.name
            calls.append({"id": block.id, "type": "function",
                          "function": {"name": block.name, "arguments": json.dumps(block.input, ensure_ascii=False)}})
        elif isinstance(block, ToolResultBlock):
            if message.role != "user":
                raise bad_request(f"'{where}' is a tool_result block in an assistant message: tool results "
                                  "belong to the user's messages.", param=where)
            result: dict[str, Any] = {"role": "tool", "tool_call_id": block.tool_use_id,
                                      "content": _tool_result(images, block, where)}
            if block.tool_use_id in names:
                result["name"] = names[block.tool_use_id]
            results.append(result)
        elif isinstance(block, DocumentBlock):
            raise bad_request(f"'{where}' is a document block, which Hearth does not read: send the document's "
                              "text in a text block.", param=where, code="documents_not_supported")
        elif isinstance(block, ThinkingBlock):
            continue  # a previous answer's reasoning is not part of the prompt
    if message.role == "assistant":
        turn: dict[str, Any] = {"role": "assistant", "content": _user_content(texts)}
        if calls:
            turn["tool_calls"] = calls
        return [turn]
    if texts or not results:
        results.append({"role": "user", "content": _user_content(texts)})
    return results


def _engine_tools(body: CountTokensRequest) -> list[dict[str, Any]] | None:
    """The request's tools in the OpenAI function shape the chat templates read (none with tool_choice none)."""
    if not body.tools or isinstance(body.tool_choice, ToolChoiceNone):
        return None
    if isinstance(body.tool_choice, ToolChoiceTool) and body.tool_choice.name not in {t.name for t in body.tools}:
        raise bad_request(f"'tool_choice.name' is '{body.tool_choice.name[:64]}', which is not one of 'tools'.",
                          param="tool_choice.name")
    return [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                              "parameters": t.input_schema.model_dump(exclude_none=True)}}
            for t in body.tools]


# -- answers ----------------------------------------------------------------------------------------

def _usage(completion: Completion) -> dict[str, int]:
    """Anthropic's usage: ``input_tokens`` are the prompt tokens not read from the cache (the engine's KV
    prefix reuse), ``cache_read_input_tokens`` those that were; together the whole prompt."""
    s = completion.stats
    return {"input_tokens": s.prompt_tokens - s.cached_tokens, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": s.cached_tokens, "output_tokens": s.completion_tokens}


def _tool_use(call: ToolCall) -> dict[str, Any]:
    try:
        arguments = json.loads(call.arguments)
    except ValueError:
        arguments = {}
    return {"type": "tool_use", "id": "toolu_" + call.id.removeprefix("call_"), "name": call.name, "input": arguments}


def _stop(completion: Completion, gen: generate.Generation, calls: list[ToolCall]) -> tuple[str, str | None]:
    """``(stop_reason, stop_sequence)``."""
    if calls:
        return "tool_use", None
    if gen.stopped_by is not None:
        return "stop_sequence", gen.stopped_by
    return STOP_REASONS.get(completion.finish_reason, "end_turn"), None


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {generate.to_json(data)}\n\n"


class _Blocks:
    """The content blocks of a streamed answer, as events: their indexes, the text block left open while
    text comes, and the one ``ping`` (after the first block's start, where Anthropic sends it)."""

    def __init__(self) -> None:
        self.count = 0
        self.text_open = False
        self.pinged = False

    def _start(self, block: dict[str, Any]) -> str:
        out = _event("content_block_start", {"type": "content_block_start", "index": self.count,
                                             "content_block": block})
        self.count += 1
        if not self.pinged:
            self.pinged = True
            out += _event("ping", {"type": "ping"})
        return out

    def text(self, text: str) -> str:
        out = "" if self.text_open else self._start({"type": "text", "text": ""})
        self.text_open = True
        return out + _event("content_block_delta", {"type": "content_block_delta", "index": self.count - 1,
                                                    "delta": {"type": "text_delta", "text": text}})

    def close_text(self) -> str:
        if not self.text_open:
            return ""
        self.text_open = False
        return _event("content_block_stop", {"type": "content_block_stop", "index": self.count - 1})

    def tool_use(self, use: dict[str, Any]) -> str:
        """A whole tool_use block: its start (input {}), the input as one input_json_delta, its stop."""
        out = self.close_text() + self._start({**use, "input": {}})
        partial = json.dumps(use["input"], ensure_ascii=False)
        return out + _event("content_block_delta", {
            "type": "content_block_delta", "index": self.count - 1,
            "delta": {"type": "input_json_delta", "partial_json": partial},
        }) + _event("content_block_stop", {"type": "content_block_stop", "index": self.count - 1})

    def end(self) -> str:
        """The ping of an answer without blocks (so that every stream has one), before message_delta."""
        out = self.close_text()
        if not self.pinged:
            self.pinged = True
            out += _event("ping", {"type": "ping"})
        return out


async def _messages(host: ModelHost, body: MessagesRequest, request: Request) -> Response:
    model = host.resolve(body.model)
    generate.record(request, model.name)
    params = generate.sampling(host, model, max_tokens=body.max_tokens, temperature=body.temperature,
                               top_p=body.top_p, top_k=body.top_k, ignore_eos=body.ignore_eos)
    tools = _engine_tools(body)
    images = RequestImages(model)
    messages = engine_messages(images, body)
    await images.prepare()
    gen = generate.Generation(model, params, messages=messages, tools=tools,
                              check=generate.check_tools(model) if tools else None,
                              watch_stop=list(body.stop_sequences or []), image_param=images.first_path)
    one_call = bool(body.tool_choice is not None and getattr(body.tool_choice, "disable_parallel_tool_use", False))
    job = generate.start(host, request, gen)
    ident = f"msg_{secrets.token_hex(12)}"
    if not body.stream:
        completion = generate.completion_of(await generate.wait_unless_gone(job, request))
        generate.record(request, model.name, completion)
        text, calls = parse_tool_calls(completion.text) if tools else (completion.text, [])
        calls = calls[:1] if one_call else calls
        content = ([{"type": "text", "text": text}] if text else []) + [_tool_use(c) for c in calls]
        stop_reason, stop_sequence = _stop(completion, gen, calls)
        return JSONResponse({"id": ident, "type": "message", "role": "assistant", "model": model.name,
                             "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence,
                             "usage": _usage(completion)})
    first = await generate.first(job)

    async def events() -> AsyncIterator[str]:
        tool_stream = ToolCallStream() if tools else None
        blocks = _Blocks()
        try:
            yield _event("message_start", {"type": "message_start", "message": {
                "id": ident, "type": "message", "role": "assistant", "model": model.name, "content": [],
                "stop_reason": None, "stop_sequence": None,
                # The prompt's size is known once it has been read: message_delta's usage carries it.
                "usage": {"input_tokens": 0, "output_tokens": 0}}})
            completion: Completion | None = None
            async for item in generate.after(first, job):
                if isinstance(item, TextChunk):
                    text = tool_stream.feed(item.text) if tool_stream else item.text
                    if text:
                        yield blocks.text(text)
                elif isinstance(item, Completion):
                    completion = item
            if completion is None:
                return
            generate.record(request, model.name, completion)
            calls: list[ToolCall] = []
            if tool_stream:
                rest, calls = tool_stream.finish()
                calls = calls[:1] if one_call else calls
                if rest:
                    yield blocks.text(rest)
            tail = "".join(blocks.tool_use(_tool_use(call)) for call in calls)
            stop_reason, stop_sequence = _stop(completion, gen, calls)
            yield tail + blocks.end() + _event("message_delta", {
                "type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": _usage(completion)}) + _event("message_stop", {"type": "message_stop"})
        except Exception as exc:  # after the headers went out, an error is an event
            yield _event("error", from_exception(exc).anthropic_body())
        finally:
            job.cancel()

    return generate.event_stream(events())


async def _count_tokens(host: ModelHost, body: CountTokensRequest, request: Request) -> Response:
    """The prompt's exact token count: the engine reads the prompt (with the model's template and the
    tools) and writes one token. Its KV cache keeps the prompt, so the request that follows with the same
    conversation does not pay for it again."""
    model = host.resolve(body.model)
    generate.record(request, model.name)
    tools = _engine_tools(body)
    params = generate.sampling(host, model, max_tokens=1, temperature=0.0)
    images = RequestImages(model)
    messages = engine_messages(images, body)
    await images.prepare()
    gen = generate.Generation(model, params, messages=messages, tools=tools,
                              check=generate.check_tools(model) if tools else None, image_param=images.first_path)
    completion = generate.completion_of(await generate.wait_unless_gone(generate.start(host, request, gen), request))
    generate.record(request, model.name, prompt_tokens=completion.stats.prompt_tokens)
    return JSONResponse({"input_tokens": completion.stats.prompt_tokens})
