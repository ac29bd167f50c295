"""The Ollama-compatible API under /api: tags, show, chat, generate, embed, version, ps.

Shapes follow Ollama's ``api/types.go`` and ``docs/api.md``: NDJSON streaming (on by default),
durations in nanoseconds, ``done_reason``, the sampling settings under ``options``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from core.engine import Completion, SamplingParams, TextChunk
from core.server import generate
from core.server.body import JsonRoute
from core.server.errors import bad_request, from_exception
from core.server.grammar import json_object_grammar, json_schema_grammar
from core.server.host import ModelHost, ServedModel
from core.server.images import RequestImages, only_in_user_messages
from core.server.openai_routes import embed, embed_inputs
from core.server.tools import ToolCallStream, parse_tool_calls

# The Ollama API version reported to clients that check it (the shapes here match it).
OLLAMA_VERSION = "0.11.0"


class Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class Options(Lenient):
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repeat_penalty: float | None = Field(default=None, gt=0)
    repeat_last_n: int | None = Field(default=None, ge=0)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)  # Go's int
    num_predict: int | None = None
    stop: list[str] | str | None = None


class OllamaMessage(Lenient):
    role: str
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: str | None = None


class ChatBody(Lenient):
    model: str = Field(min_length=1)
    messages: list[OllamaMessage] = Field(default_factory=list)
    stream: bool = True
    format: str | dict[str, Any] | None = None
    options: Options | None = None
    tools: list[dict[str, Any]] | None = None


class GenerateBody(Lenient):
    model: str = Field(min_length=1)
    prompt: str = ""
    system: str | None = None
    suffix: str | None = None
    raw: bool = False
    stream: bool = True
    format: str | dict[str, Any] | None = None
    options: Options | None = None
    images: list[str] | None = None


class EmbedBody(Lenient):
    model: str = Field(min_length=1)
    input: str | list[str]


class LegacyEmbedBody(Lenient):
    model: str = Field(min_length=1)
    prompt: str


class ShowBody(Lenient):
    model: str | None = None
    name: str | None = None


def router(host: ModelHost) -> APIRouter:
    api = APIRouter(prefix="/api", route_class=JsonRoute)

    @api.get("/version")
    def version() -> dict[str, str]:
        return {"version": OLLAMA_VERSION}

    @api.get("/tags")
    def tags() -> dict[str, Any]:
        return {"models": [_tag(m) for m in host.models()]}

    @api.get("/ps")
    def ps() -> dict[str, Any]:
        status = host.engine.status if host.engine.alive else None
        loaded = [m for m in host.models() if status is not None and _holds(status, m)]
        return {"models": [{**_tag(m), "expires_at": _iso(time.time() + host.idle_unload_s), "size_vram": 0}
                           for m in loaded[:1]]}

    @api.post("/show")
    def show(body: ShowBody) -> dict[str, Any]:
        name = body.model or body.name
        if not name:
            raise bad_request("'model' is required: the name of the model to describe.", param="model")
        return _show(host.resolve(name))

    @api.post("/chat")
    async def chat(body: ChatBody, request: Request) -> Response:
        return await _chat(host, body, request)

    @api.post("/generate")
    async def generate_(body: GenerateBody, request: Request) -> Response:
        return await _generate(host, body, request)

    @api.post("/embed")
    async def embed_(body: EmbedBody, request: Request) -> Response:
        model = host.resolve(body.model)
        generate.record(request, model.name)
        started = time.perf_counter()
        vectors, tokens = await embed(host, model, embed_inputs(body.input), request)
        generate.record(request, model.name, prompt_tokens=tokens)
        return JSONResponse({"model": model.name, "embeddings": vectors, "prompt_eval_count": tokens,
                             "total_duration": int((time.perf_counter() - started) * 1e9), "load_duration": 0})

    @api.post("/embeddings")
    async def embeddings(body: LegacyEmbedBody, request: Request) -> Response:
        model = host.resolve(body.model)
        generate.record(request, model.name)
        vectors, tokens = await embed(host, model, embed_inputs(body.prompt), request)
        generate.record(request, model.name, prompt_tokens=tokens)
        return JSONResponse({"embedding": vectors[0]})

    return api


def _holds(status: Any, model: ServedModel) -> bool:
    from core.server.host import _same_path

    loras = [str(p) for p, _ in status.loras]
    return _same_path(status.path, model.base.path) and (bool(loras) == (model.adapter is not None))


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat().replace("+00:00", "Z")


def _details(model: ServedModel) -> dict[str, Any]:
    from core.units import human_count

    entry = model.base
    # Ollama lists a model with a vision projector as of two families, its own and "clip" (llava: ["llama", "clip"]).
    families = [entry.architecture, "clip"] if model.vision else [entry.architecture]
    return {"parent_model": entry.name if model.adapter else "", "format": "gguf", "family": entry.architecture,
            "families": families, "parameter_size": human_count(entry.parameters) if entry.parameters
            else "", "quantization_level": entry.file_type or ""}


def _tag(model: ServedModel) -> dict[str, Any]:
    return {"name": model.name, "model": model.name, "modified_at": _iso(model.created),
            "size": model.size_bytes, "digest": model.base.sha256 or "", "details": _details(model)}


def _show(model: ServedModel) -> dict[str, Any]:
    from core.library import read_gguf_info

    info = read_gguf_info(model.base.path)
    template = info.chat_template or ""
    arch = model.base.architecture
    capabilities = ["completion"]
    if "tools" in template:
        capabilities.append("tools")
    shown: dict[str, Any] = {
        "modelfile": f"FROM {model.name}\n", "parameters": "", "template": template, "details": _details(model),
        "model_info": {"general.architecture": arch, "general.parameter_count": model.base.parameters,
                       f"{arch}.context_length": model.base.context_length or 0},
        "capabilities": capabilities, "modified_at": _iso(model.created),
    }
    if model.mmproj is not None:  # Ollama's capability names (types/model/capability.go) and projector_info
        capabilities.append("vision")
        shown["projector_info"] = _projector_info(model.mmproj)
    return shown


def _projector_info(path: str) -> dict[str, Any]:
    """The projector's scalar metadata (``clip.*``, ``general.*``), as Ollama's show lists it."""
    from core.errors import HearthError
    from core.library import read_gguf_info

    try:
        metadata = read_gguf_info(path, check_architecture=False).metadata
    except (HearthError, OSError, ValueError):
        return {"general.architecture": "clip"}
    return {k: v for k, v in metadata.items() if isinstance(v, str | int | float | bool)
            and (k.startswith("clip.") or k in ("general.architecture", "general.name", "general.file_type"))}


def _sampling(host: ModelHost, model: ServedModel, options: Options | None, fmt: Any) -> SamplingParams:
    o = options or Options()
    num_predict = o.num_predict if o.num_predict is not None and o.num_predict > 0 else None
    grammar = None
    if fmt == "json":
        grammar = json_object_grammar()
    elif isinstance(fmt, dict):
        grammar = json_schema_grammar(fmt, "format")
    elif fmt not in (None, ""):
        raise bad_request("'format' must be \"json\" or a JSON Schema object.", param="format")
    return generate.sampling(
        host, model, max_tokens=num_predict, max_param="options.num_predict", stop=o.stop,
        temperature=o.temperature, top_p=o.top_p, top_k=o.top_k, min_p=o.min_p, repeat_penalty=o.repeat_penalty,
        repeat_last_n=o.repeat_last_n, seed=o.seed, presence_penalty=o.presence_penalty,
        frequency_penalty=o.frequency_penalty, grammar=grammar,
    )


async def _load_only(host: ModelHost, model: ServedModel, request: Request) -> None:
    def load() -> None:
        with host.use(model, generate.holder(request)):
            pass

    await asyncio.to_thread(load)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _final(model: str, completion: Completion, started: float) -> dict[str, Any]:
    s = completion.stats
    return {"model": model, "created_at": _iso(time.time()), "done": True,
            "done_reason": generate.FINISH_REASONS[completion.finish_reason],
            "total_duration": _ns(time.perf_counter() - started), "load_duration": 0,
            "prompt_eval_count": s.prompt_tokens, "prompt_eval_duration": _ns(s.prompt_seconds),
            "eval_count": s.completion_tokens, "eval_duration": _ns(s.generation_seconds)}


def _ndjson(lines: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(lines, media_type="application/x-ndjson")


def _line(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False) + "\n"


def _content(images: RequestImages, role: str, text: str, given: list[str] | None, where: str) -> Any:
    """The text alone, or (with images) the images and then the text, where Ollama puts them: it writes
    each image's ``[img-N]`` tag before the message's text (``server/prompt.go``, ``chatPrompt``)."""
    if not given:
        return text
    parts = []
    for j, data in enumerate(given):
        only_in_user_messages(role, f"{where}.{j}")
        parts.append(images.from_base64(data, f"{where}.{j}"))
    return [*parts, {"type": "text", "text": text}] if text else parts


def _message(images: RequestImages, message: OllamaMessage, index: int) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role,
                           "content": _content(images, message.role, message.content, message.images,
                                               f"messages.{index}.images")}
    if message.tool_calls:
        out["tool_calls"] = message.tool_calls
    if message.tool_name:
        out["name"] = message.tool_name
    return out


async def _chat(host: ModelHost, body: ChatBody, request: Request) -> Response:
    model = host.resolve(body.model)
    generate.record(request, model.name)
    started = time.perf_counter()
    if not body.messages:  # Ollama: an empty conversation just loads the model
        await _load_only(host, model, request)
        return JSONResponse({"model": model.name, "created_at": _iso(time.time()),
                             "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "load"})
    params = _sampling(host, model, body.options, body.format)
    tools = body.tools or None
    images = RequestImages(model)
    messages = [_message(images, m, i) for i, m in enumerate(body.messages)]
    await images.prepare()
    gen = generate.Generation(model, params, messages=messages, tools=tools,
                              check=generate.check_tools(model) if tools else None, image_param=images.first_path)
    job = generate.start(host, request, gen)
    if not body.stream:
        completion = generate.completion_of(await generate.wait_unless_gone(job, request))
        generate.record(request, model.name, completion)
        content, calls = parse_tool_calls(completion.text) if tools else (completion.text, [])
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = [c.ollama() for c in calls]
        return JSONResponse({**_final(model.name, completion, started), "message": message})
    first = await generate.first(job)

    async def lines() -> AsyncIterator[str]:
        tool_stream = ToolCallStream() if tools else None
        try:
            async for item in generate.after(first, job):
                if isinstance(item, TextChunk):
                    text = tool_stream.feed(item.text) if tool_stream else item.text
                    if text:
                        yield _line({"model": model.name, "created_at": _iso(time.time()),
                                     "message": {"role": "assistant", "content": text}, "done": False})
                elif isinstance(item, Completion):
                    generate.record(request, model.name, item)
                    message: dict[str, Any] = {"role": "assistant", "content": ""}
                    if tool_stream:
                        rest, calls = tool_stream.finish()
                        message["content"] = rest
                        if calls:
                            message["tool_calls"] = [c.ollama() for c in calls]
                    yield _line({**_final(model.name, item, started), "message": message})
        except Exception as exc:
            yield _line(from_exception(exc).ollama_body())
        finally:
            job.cancel()

    return _ndjson(lines())


async def _generate(host: ModelHost, body: GenerateBody, request: Request) -> Response:
    model = host.resolve(body.model)
    generate.record(request, model.name)
    started = time.perf_counter()
    if body.suffix:
        raise bad_request("'suffix' (fill-in-the-middle) is not supported.", param="suffix")
    if not body.prompt and not body.images:  # Ollama: an empty prompt just loads the model
        await _load_only(host, model, request)
        return JSONResponse({"model": model.name, "created_at": _iso(time.time()), "response": "", "done": True,
                             "done_reason": "load"})
    params = _sampling(host, model, body.options, body.format)
    if body.raw and body.images:
        raise bad_request("'images' cannot be used with 'raw': true (a raw prompt has no place for them): leave "
                          "'raw' out so that the model's chat template places the images.", param="images")
    if body.raw:
        gen = generate.Generation(model, params, prompt=body.prompt)
    else:
        images = RequestImages(model)
        messages = ([{"role": "system", "content": body.system}] if body.system else []) + [
            {"role": "user", "content": _content(images, "user", body.prompt, body.images, "images")}]
        await images.prepare()
        gen = generate.Generation(model, params, messages=messages, image_param=images.first_path)
    job = generate.start(host, request, gen)
    if not body.stream:
        completion = generate.completion_of(await generate.wait_unless_gone(job, request))
        generate.record(request, model.name, completion)
        return JSONResponse({**_final(model.name, completion, started), "response": completion.text})
    first = await generate.first(job)

    async def lines() -> AsyncIterator[str]:
        try:
            async for item in generate.after(first, job):
                if isinstance(item, TextChunk):
                    yield _line({"model": model.name, "created_at": _iso(time.time()), "response": item.text,
                                 "done": False})
                elif isinstance(item, Completion):
                    generate.record(request, model.name, item)
                    yield _line({**_final(model.name, item, started), "response": ""})
        except Exception as exc:
            yield _line(from_exception(exc).ollama_body())
        finally:
            job.cancel()

    return _ndjson(lines())
