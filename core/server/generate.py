"""What the OpenAI and Ollama routes share: sampling settings from a request, and a generation job."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import Request

from core.engine import Completion, SamplingParams
from core.server.errors import ApiError, bad_request
from core.server.host import ModelHost, ServedModel
from core.server.runner import Job

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


def holder(request: Request) -> str:
    client = request.client.host if request.client else "?"
    return f"server: {client}"


def start(host: ModelHost, request: Request, gen: Generation) -> Job:
    """Start the generation on its own thread (it waits for the engine first)."""

    def work(job: Job) -> None:
        with host.use(gen.model, holder(request)) as engine:
            if job.cancelled.is_set():
                return
            if gen.check is not None:
                gen.check(engine.status)
            if gen.prompt is not None:
                stream = engine.stream_complete(gen.prompt, gen.params)
            else:
                stream = engine.stream_chat(gen.messages or [], gen.params, tools=gen.tools)
            for item in job.stream(engine, stream):
                job.put(item)

    return Job(work).start()


def record(request: Request, model: str, completion: Completion | None = None, *, prompt_tokens: int = 0) -> None:
    """What the request log shows about this request (read by the app's logging middleware)."""
    request.state.model = model
    if completion is not None:
        request.state.prompt_tokens = completion.stats.prompt_tokens
        request.state.completion_tokens = completion.stats.completion_tokens
    else:
        request.state.prompt_tokens = prompt_tokens


DISCONNECT_CHECK_S = 0.25  # how often a plain (not streamed) answer looks whether its client is still there


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
            from core.server.runner import END, Failure

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
