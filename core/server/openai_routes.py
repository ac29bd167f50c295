"""The OpenAI-compatible API under /v1: models, chat completions, completions, embeddings."""

from __future__ import annotations

import base64
import secrets
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from core.engine import Completion, TextChunk
from core.server import generate
from core.server.body import JsonRoute
from core.server.errors import ApiError, bad_request, from_exception
from core.server.grammar import json_object_grammar, json_schema_grammar
from core.server.host import ModelHost, ServedModel
from core.server.images import RequestImages, only_in_user_messages
from core.server.openai_types import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    ContentPart,
    EmbeddingRequest,
    ImageUrl,
)
from core.server.runner import Job
from core.server.tools import ToolCall, ToolCallStream, parse_tool_calls


def router(host: ModelHost) -> APIRouter:
    api = APIRouter(prefix="/v1", route_class=JsonRoute)

    @api.get("/models")
    def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(m) for m in host.models()]}

    @api.get("/models/{name:path}")
    def get_model(name: str) -> dict[str, Any]:
        return _model_card(host.resolve(name))

    @api.post("/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await _chat(host, body, request)

    @api.post("/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await _complete(host, body, request)

    @api.post("/embeddings")
    async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
        return await _embed(host, body, request)

    return api


def _model_card(model: ServedModel) -> dict[str, Any]:
    return {"id": model.name, "object": "model", "created": model.created, "owned_by": "hearth"}


# -- chat -------------------------------------------------------------------------------------

def _engine_message(images: RequestImages, message: ChatMessage, index: int) -> dict[str, Any]:
    content: Any = message.content
    if isinstance(content, list):
        parts: list[dict[str, Any]] = []
        for j, part in enumerate(content):
            where = f"messages.{index}.content.{j}"
            if part.type in ("image_url", "input_image"):
                parts.append(_image_part(images, message.role, part, where))
            elif part.type == "text":
                parts.append({"type": "text", "text": part.text or ""})
            else:
                raise bad_request(f"messages[{index}] has a '{part.type}' part: only text and image_url parts are "
                                  "supported.", param=where)
        # With images: text and images in their order, as the engine places them.
        content = parts if any(p["type"] == "image" for p in parts) else "".join(p["text"] for p in parts)
    out: dict[str, Any] = {"role": "system" if message.role == "developer" else message.role, "content": content}
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [c.model_dump(exclude_none=True) for c in message.tool_calls]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def _image_part(images: RequestImages, role: str, part: ContentPart, where: str) -> dict[str, Any]:
    """An image_url part (``{"url": ...}``) or an input_image one (the URL itself), as an engine image part."""
    where = f"{where}.image_url"
    url = part.image_url.url if isinstance(part.image_url, ImageUrl) else part.image_url
    if not url:
        raise bad_request(f"'{where}' is missing: send the image as a data: URI (data:image/png;base64,...).",
                          param=where, code="invalid_image")
    only_in_user_messages(role, where)
    return images.from_url(url, where)


def _grammar(body: ChatCompletionRequest) -> str | None:
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return json_object_grammar()
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise bad_request("response_format json_schema needs 'json_schema': {'name': ..., 'schema': {...}}.",
                          param="response_format.json_schema")
    return json_schema_grammar(fmt.json_schema.schema_, "response_format.json_schema.schema")


async def _chat(host: ModelHost, body: ChatCompletionRequest, request: Request) -> Response:
    model = host.resolve(body.model)
    generate.record(request, model.name)
    if body.top_logprobs and not body.logprobs:
        raise bad_request("'top_logprobs' needs 'logprobs': true.", param="top_logprobs")
    max_tokens = body.max_completion_tokens or body.max_tokens
    params = generate.sampling(
        host, model, max_tokens=max_tokens,
        max_param="max_completion_tokens" if body.max_completion_tokens else "max_tokens", stop=body.stop,
        temperature=body.temperature, top_p=body.top_p, top_k=body.top_k, min_p=body.min_p,
        repeat_penalty=body.repeat_penalty, seed=body.seed, presence_penalty=body.presence_penalty,
        ignore_eos=body.ignore_eos,
        frequency_penalty=body.frequency_penalty, grammar=_grammar(body), logprobs=body.logprobs or None,
        top_logprobs=body.top_logprobs if body.logprobs else None,
    )
    images = RequestImages(model)
    messages = [_engine_message(images, m, i) for i, m in enumerate(body.messages)]
    await images.prepare()
    tools = [t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None
    use_tools = bool(tools) and body.tool_choice != "none"
    gen = generate.Generation(model, params, messages=messages, tools=tools,
                              check=generate.check_tools(model) if tools else None, image_param=images.first_path)
    job = generate.start(host, request, gen)
    ident, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())
    if not body.stream:
        items = await generate.wait_unless_gone(job, request)
        completion = generate.completion_of(items)
        generate.record(request, model.name, completion)
        content, calls = parse_tool_calls(completion.text) if use_tools else (completion.text, [])
        message: dict[str, Any] = {"role": "assistant", "content": content if content or not calls else None}
        if calls:
            message["tool_calls"] = [c.openai() for c in calls]
        choice = {"index": 0, "message": message,
                  "logprobs": {"content": completion.logprobs or []} if body.logprobs else None,
                  "finish_reason": "tool_calls" if calls else generate.FINISH_REASONS[completion.finish_reason]}
        return JSONResponse({"id": ident, "object": "chat.completion", "created": created, "model": model.name,
                             "system_fingerprint": "hearth", "choices": [choice], "usage": _usage(completion)})
    first = await generate.first(job)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> str:
        data: dict[str, Any] = {
            "id": ident, "object": "chat.completion.chunk", "created": created, "model": model.name,
            "system_fingerprint": "hearth",
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        }
        if include_usage:
            data["usage"] = None
        return _sse(data)

    async def events() -> AsyncIterator[str]:
        tool_stream = ToolCallStream() if use_tools else None
        try:
            yield chunk({"role": "assistant", "content": ""})
            completion: Completion | None = None
            async for item in generate.after(first, job):
                if isinstance(item, TextChunk):
                    text = tool_stream.feed(item.text) if tool_stream else item.text
                    lp = {"content": item.logprobs or []} if body.logprobs else None
                    if text or lp:
                        yield chunk({"content": text}, logprobs=lp)
                elif isinstance(item, Completion):
                    completion = item
            if completion is None:
                return
            generate.record(request, model.name, completion)
            calls: list[ToolCall] = []
            if tool_stream:
                rest, calls = tool_stream.finish()
                if rest:
                    yield chunk({"content": rest})
                if calls:
                    yield chunk({"tool_calls": [c.openai(i) for i, c in enumerate(calls)]})
            finish = "tool_calls" if calls else generate.FINISH_REASONS[completion.finish_reason]
            yield chunk({}, finish)
            if include_usage:
                yield _sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": model.name,
                            "system_fingerprint": "hearth", "choices": [], "usage": _usage(completion)})
            yield "data: [DONE]\n\n"
        except Exception as exc:  # after the headers went out, an error is an event
            yield _sse(from_exception(exc).openai_body())
            yield "data: [DONE]\n\n"
        finally:
            job.cancel()

    return generate.event_stream(events())


def _sse(data: dict[str, Any]) -> str:
    return f"data: {generate.to_json(data)}\n\n"


def _usage(completion: Completion) -> dict[str, int]:
    s = completion.stats
    return {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
            "total_tokens": s.prompt_tokens + s.completion_tokens}


# -- completions --------------------------------------------------------------------------------

async def _complete(host: ModelHost, body: CompletionRequest, request: Request) -> Response:
    model = host.resolve(body.model)
    generate.record(request, model.name)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise bad_request("Send one prompt per request (a list of several is not supported).", param="prompt")
    if body.suffix:
        raise bad_request("'suffix' (fill-in-the-middle) is not supported.", param="suffix")
    params = generate.sampling(
        host, model, max_tokens=body.max_tokens if body.max_tokens is not None else 16, stop=body.stop,
        temperature=body.temperature, top_p=body.top_p, top_k=body.top_k, min_p=body.min_p,
        repeat_penalty=body.repeat_penalty, seed=body.seed, presence_penalty=body.presence_penalty,
        ignore_eos=body.ignore_eos,
        frequency_penalty=body.frequency_penalty, logprobs=True if body.logprobs is not None else None,
        top_logprobs=body.logprobs or None,
    )
    prompt = prompts[0]
    job = generate.start(host, request, generate.Generation(model, params, prompt=prompt))
    ident, created = f"cmpl-{secrets.token_hex(12)}", int(time.time())
    echo = prompt if body.echo else ""

    def choice(text: str, finish: str | None, logprobs: list[dict[str, Any]] | None) -> dict[str, Any]:
        return {"text": text, "index": 0, "logprobs": _legacy_logprobs(logprobs) if body.logprobs is not None else None,
                "finish_reason": finish}

    if not body.stream:
        completion = generate.completion_of(await generate.wait_unless_gone(job, request))
        generate.record(request, model.name, completion)
        return JSONResponse({
            "id": ident, "object": "text_completion", "created": created, "model": model.name,
            "system_fingerprint": "hearth",
            "choices": [choice(echo + completion.text, generate.FINISH_REASONS[completion.finish_reason],
                               completion.logprobs)],
            "usage": _usage(completion),
        })
    first = await generate.first(job)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(c: dict[str, Any] | None, usage: dict[str, int] | None = None) -> str:
        data: dict[str, Any] = {"id": ident, "object": "text_completion", "created": created, "model": model.name,
                                "system_fingerprint": "hearth", "choices": [c] if c else []}
        if include_usage:
            data["usage"] = usage
        return _sse(data)

    async def events() -> AsyncIterator[str]:
        try:
            if echo:
                yield chunk(choice(echo, None, None))
            async for item in generate.after(first, job):
                if isinstance(item, TextChunk):
                    yield chunk(choice(item.text, None, item.logprobs))
                elif isinstance(item, Completion):
                    generate.record(request, model.name, item)
                    yield chunk(choice("", generate.FINISH_REASONS[item.finish_reason], None))
                    if include_usage:
                        yield chunk(None, _usage(item))
            yield "data: [DONE]\n\n"
        except Exception as exc:
            yield _sse(from_exception(exc).openai_body())
            yield "data: [DONE]\n\n"
        finally:
            job.cancel()

    return generate.event_stream(events())


def _legacy_logprobs(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The completions API's older logprobs shape (tokens, token_logprobs, top_logprobs, text_offset)."""
    items = items or []
    offsets, at = [], 0
    for item in items:
        offsets.append(at)
        at += len(item["token"])
    return {"tokens": [i["token"] for i in items], "token_logprobs": [i["logprob"] for i in items],
            "top_logprobs": [{t["token"]: t["logprob"] for t in i.get("top_logprobs", [])} for i in items],
            "text_offset": offsets}


# -- embeddings ---------------------------------------------------------------------------------

async def _embed(host: ModelHost, body: EmbeddingRequest, request: Request) -> Response:
    model = host.resolve(body.model)
    generate.record(request, model.name)
    texts = embed_inputs(body.input)
    vectors, prompt_tokens = await embed(host, model, texts, request)
    generate.record(request, model.name, prompt_tokens=prompt_tokens)
    if body.dimensions is not None:
        if vectors and body.dimensions > len(vectors[0]):
            raise bad_request(f"'dimensions' is {body.dimensions}, more than the model's {len(vectors[0])}.",
                              param="dimensions")
        vectors = [_normalised(v[: body.dimensions]) for v in vectors]
    data = [{"object": "embedding", "index": i,
             "embedding": _base64(v) if body.encoding_format == "base64" else v} for i, v in enumerate(vectors)]
    return JSONResponse({"object": "list", "data": data, "model": model.name,
                         "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}})


def embed_inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not value:
        raise bad_request("'input' is empty: send a string or a list of strings.", param="input")
    if not all(isinstance(v, str) for v in value):
        raise bad_request("'input' must be text (a string or a list of strings); token ids are not supported.",
                          param="input")
    if len(value) > 2048:
        raise bad_request("'input' has more than 2048 texts: send them in several requests.", param="input")
    return list(value)


async def embed(host: ModelHost, model: ServedModel, texts: list[str], request: Request) -> tuple[list[list[float]], int]:
    """Embed texts with the model loaded for embeddings; returns the vectors and the tokens they took."""

    def work(job: Job) -> None:
        with host.use(model, generate.holder(request), embedding=True) as engine:
            if job.cancelled.is_set():
                return
            result = engine.embed(texts)
            job.put(result)

    items = await generate.wait_unless_gone(Job(work).start(), request)
    if not items:
        raise ApiError(499, "The request was cancelled.", code="cancelled")
    return items[0].vectors, items[0].prompt_tokens


def _normalised(vector: list[float]) -> list[float]:
    norm = sum(x * x for x in vector) ** 0.5
    return [x / norm for x in vector] if norm > 0 else vector


def _base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
