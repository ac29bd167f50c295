"""What the OpenAI, Ollama and Anthropic routes share: sampling settings from a request, a generation job
and reading its results (the first one before any answer goes out, then the rest), tool checks and SSE."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from core.engine import Completion, Engine, SamplingParams, TextChunk
from core.server.docs import with_adapter_docs
from core.server.errors import ApiError, bad_request, no_vision
from core.server.host import ModelHost, ServedModel
from core.server.runner import END, Failure, Job

FINISH_REASONS = {"stop": "stop", "length": "length", "context": "length", "cancelled": "stop"}


def context_length(host: ModelHost, model: ServedModel) -> int:
    """The context the model gets when the server loads it (the user's setting, within the model's own)."""
    wanted = host.load_options(model).n_ctx
    own = model.base.context_length or 0
    if wanted > 0 and own > 0:
        return min(wanted, own)
    return wanted or own or 4096


def sampling(host: ModelHost, model: ServedModel, *, max_tokens: int | None, max_param: str = "max_tokens",
             stop: str | list[str] | None = None, **given: Any) -> SamplingParams:
    """The user's sampling preset for the model, overridden by what the request sets (None: not set)."""
    from core.settings import load_settings

    params = load_settings().parameters_for(model.base.name).sampling()
    n_ctx = context_length(host, model)
    if max_tokens is not None and max_tokens > n_ctx:
        raise bad_request(
            f"'{max_param}' is {max_tokens}, more than the model's {n_ctx}-token context: ask for at most {n_ctx}.",
            param=max_param, code="max_tokens_too_large",
        )
    changes = {k: v for k, v in given.items() if v is not None}
    if isinstance(stop, str):
        changes["stop"] = [stop]
    elif stop:
        changes["stop"] = [s for s in stop if s]
    if len(changes.get("stop", [])) > 16:
        raise bad_request("At most 16 stop sequences are allowed.", param="stop")
    # No max_tokens: answer until the model ends its turn or the context is full, as OpenAI does.
    changes["max_tokens"] = max_tokens if max_tokens is not None else n_ctx
    return replace(params, **changes)


@dataclass
class Generation:
    """One answer to produce: a chat (``messages``) or a raw continuation (``prompt``)."""

    model: ServedModel
    params: SamplingParams
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    tools: list[dict[str, Any]] | None = None
    check: Callable[[Any], None] | None = None  # called with the engine's status once the model is loaded
    extra: dict[str, Any] = field(default_factory=dict)
    # Stop sequences the server finds itself instead of the engine, for APIs that must say which one ended
    # the answer (Anthropic's ``stop_sequence``); the one found is put in ``stopped_by``.
    watch_stop: list[str] = field(default_factory=list)
    stopped_by: str | None = None
    # Where the request's first image is (its parameter path); None: no images, the projector is not needed.
    image_param: str | None = None


def holder(request: Request) -> str:
    client = request.client.host if request.client else "?"
    return f"server: {client}"


def start(host: ModelHost, request: Request, gen: Generation) -> Job:
    """Start the generation on its own thread (it waits for the engine first)."""

    def work(job: Job) -> None:
        with host.use(gen.model, holder(request), vision=gen.image_param is not None) as engine:
            if job.cancelled.is_set():
                return
            if gen.image_param is not None and not (engine.status is not None and engine.status.vision):
                raise no_vision(gen.model.name, gen.image_param)
            if gen.check is not None:
                gen.check(engine.status)
            if gen.prompt is not None:
                stream = engine.stream_complete(gen.prompt, gen.params)
            else:
                # BASE+ADAPTER of a documents fine-tune: its collection's passages go with the question.
                messages = with_adapter_docs(gen.model, gen.messages or [], engine, gen.params.max_tokens)
                stream = engine.stream_chat(messages, gen.params, tools=gen.tools)
            if gen.watch_stop:
                stream = _watched(gen, engine, stream)
            for item in job.stream(engine, stream):
                job.put(item)

    return Job(work).start()


class StopWatch:
    """Finds the first of some stop sequences in streamed text, holding back what may be the start of one
    (as the engine does with the stops it is given: ``core/engine/worker.py``)."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.longest = max((len(s) for s in self.stops), default=0)
        self.text = ""
        self.sent = 0
        self.matched: str | None = None

    def feed(self, piece: str) -> str:
        """The text that can be passed on now ("" once a stop sequence was found)."""
        if self.matched is not None:
            return ""
        start = max(0, self.sent - self.longest)
        self.text += piece
        hits = [(i, s) for s in self.stops if (i := self.text.find(s, start)) >= 0]
        if hits:
            at, self.matched = min(hits)
            self.text = self.text[:at]
            out, self.sent = self.text[self.sent:], at
            return out
        held = max((k for s in self.stops for k in range(min(len(s) - 1, len(self.text)), 0, -1)
                    if self.text.endswith(s[:k])), default=0)
        end = len(self.text) - held
        out, self.sent = self.text[self.sent:end], max(self.sent, end)
        return out

    def finish(self) -> str:
        """What was held back, once the answer ended without a stop sequence."""
        if self.matched is not None:
            return ""
        out, self.sent = self.text[self.sent:], len(self.text)
        return out


def _watched(gen: Generation, engine: Engine,
             stream: Iterator[TextChunk | Completion]) -> Iterator[TextChunk | Completion]:
    """``stream`` cut at the first of ``gen.watch_stop``: the engine is told to stop there, and its final
    ``Completion`` (finished "cancelled", with the text past the stop) becomes a plain "stop" with the
    text before it. Its token counts stay the engine's (they include the stop sequence's tokens)."""
    watch = StopWatch(gen.watch_stop)
    for item in stream:
        if isinstance(item, TextChunk):
            text = watch.feed(item.text)
            if watch.matched is not None and gen.stopped_by is None:
                gen.stopped_by = watch.matched
                engine.cancel()
            if text:
                yield replace(item, text=text)
        else:
            rest = watch.finish()
            if rest:
                yield TextChunk(rest, 0)
            if watch.matched is not None:
                item = replace(item, text=watch.text, finish_reason="stop")
            yield item


def record(request: Request, model: str, completion: Completion | None = None, *, prompt_tokens: int = 0) -> None:
    """What the request log shows about this request (read by the app's logging middleware)."""
    request.state.model = model
    if completion is not None:
        request.state.prompt_tokens = completion.stats.prompt_tokens
        request.state.completion_tokens = completion.stats.completion_tokens
    else:
        request.state.prompt_tokens = prompt_tokens


DISCONNECT_CHECK_S = 0.25  # how often a plain (not streamed) answer looks whether its client is still there


async def first(job: Job) -> Any:
    """The job's first result, so that an error before any text (load, context) is a proper HTTP error."""
    try:
        item = await job.get()
    except BaseException:
        job.cancel()
        raise
    if isinstance(item, Failure):
        raise item.error
    if item is END:
        raise ApiError(499, "The request was cancelled.", code="cancelled")
    return item


async def after(first_item: Any, job: Job) -> AsyncIterator[Any]:
    """``first_item`` and then the rest of the job's results."""
    yield first_item
    async for item in job.items():
        yield item


def completion_of(items: list[Any]) -> Completion:
    """The finished answer among a job's results (none: the request was cancelled)."""
    for item in reversed(items):
        if isinstance(item, Completion):
            return item
    raise ApiError(499, "The request was cancelled.", code="cancelled")


def check_tools(model: ServedModel) -> Callable[[Any], None]:
    """A ``Generation.check`` that refuses tools for a model whose chat template cannot use them."""

    def check(status: Any) -> None:
        if not getattr(status, "supports_tools", False):
            raise bad_request(
                f"The model '{model.name}' cannot use tools: its chat template has no tool support. Pick a model "
                "whose template supports tools (Qwen 2.5+, Llama 3.1+, Hermes, Mistral) or leave 'tools' out.",
                param="tools", code="tools_not_supported",
            )
    return check


def event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    """A server-sent events answer (no caching, no proxy buffering)."""
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def to_json(data: Any) -> str:
    """Compact JSON text as the event streams send it."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


async def wait_unless_gone(job: Job, request: Request) -> list[Any]:
    """Everything the job produces; cancels it if the client disconnects meanwhile."""
    items: list[Any] = []
    getter: asyncio.Task[Any] | None = None
    loop = asyncio.get_running_loop()
    checked = loop.time()
    try:
        while True:
            getter = asyncio.ensure_future(job.get())
            while True:
                done, _ = await asyncio.wait({getter}, timeout=DISCONNECT_CHECK_S)
                # Every DISCONNECT_CHECK_S, whether or not the answer is flowing: a fast model would
                # otherwise never leave the loop above long enough to look.
                if loop.time() - checked >= DISCONNECT_CHECK_S:
                    checked = loop.time()
                    if await request.is_disconnected():
                        job.cancel()
                        raise ApiError(499, "The client closed the connection.", code="client_closed")
                if done:
                    break
            item = getter.result()
            getter = None
            if item is END:
                return items
            if isinstance(item, Failure):
                raise item.error
            items.append(item)
    finally:
        if getter is not None and not getter.done():
            getter.cancel()
        if not job.finished:
            job.cancel()
