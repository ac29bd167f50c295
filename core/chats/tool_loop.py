"""The chat's tool loop: the model calls tools, the user approves each call, the results go back to it.

One answer may take several rounds: the model writes text and tool calls (parsed with
``core.server.tools``, the families llama.cpp's ``common/chat.cpp`` knows), each call is yielded as
a ``ToolCallRequest``, approved by the caller's ``approve`` (window dialog, terminal prompt; without
one every call is denied), run through the ``ToolRegistry``, yielded as a ``ToolCallResult``, and
the model answers again, until it answers without calls or ``max_tool_calls`` is spent.

Stored like OpenAI's messages: the assistant message that made calls carries
``meta["tool_calls"] = [{"id", "tool", "arguments"}]`` and ``finish_reason`` "tool_calls"; each result
is a ``Message(role="tool", content=text, meta={"tool_call_id", "tool", "arguments", "status"})``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.chats.store import Message
from core.engine import Completion, SamplingParams, TextChunk
from core.tools.types import ToolError

if TYPE_CHECKING:
    from core.chats.session import ChatSession
    from core.tools import ToolRegistry

DENIED = "The user denied this tool call."
NOT_RUN = "The call was not run (the answer was stopped before it)."


@dataclass(frozen=True)
class ToolCallRequest:
    """A call the model wrote, yielded before it runs (and before ``approve`` is asked)."""

    id: str
    tool: str
    arguments: str  # the JSON text the model wrote


@dataclass(frozen=True)
class ToolCallResult:
    """How a call ended: ``status`` "ok", "error" (the tool failed or could not run) or "denied"."""

    id: str
    tool: str
    arguments: str
    text: str
    status: str


Approval = Callable[[ToolCallRequest], str]  # "once" | "always" | "deny", asked on the session's thread
ToolStreamItem = TextChunk | Completion | ToolCallRequest | ToolCallResult


def answer_with_tools(
    session: ChatSession, params: SamplingParams, registry: ToolRegistry, approve: Approval | None,
    max_tool_calls: int,
) -> Iterator[ToolStreamItem]:
    """Answer the conversation's last message, running the tool calls the model makes (see module doc)."""
    from core.server.tools import ToolCallStream, parse_tool_calls

    calls_left = max(0, max_tool_calls)
    while True:
        started = time.time()
        tools = registry.openai_tools()
        stream = ToolCallStream()
        completion: Completion | None = None
        pieces: list[str] = []
        try:
            for item in session.engine.stream_chat(session.prompt_messages(), params, tools=tools or None):
                if isinstance(item, Completion):
                    completion = item
                    continue
                pieces.append(item.text)
                shown = stream.feed(item.text)
                if shown:
                    yield TextChunk(shown, item.n_tokens, item.logprobs)
        finally:
            if completion is None and pieces:
                # The stream broke off (engine crash, caller stopped): keep what was said.
                session._commit("".join(pieces), "interrupted", started, None)
        if completion is None:
            return
        rest, calls = stream.finish()
        if completion.finish_reason in ("cancelled", "context"):
            # Stopped by the user or by a full context: a half-written call is not run, nor answered again.
            if rest and not calls:
                yield TextChunk(rest, 0)
            session._commit(completion.text, completion.finish_reason, started, completion)
            yield completion
            return
        content, parsed = parse_tool_calls(completion.text) if calls else (completion.text, [])
        found = [(c.id, c.name, c.arguments, "") for c in parsed]
        if not found:
            unreadable = _unreadable_call(completion.text)
            if unreadable is not None:
                content, found = unreadable[0], [unreadable[1]]
            elif rest:
                yield TextChunk(rest, 0)
        if not found:
            session._commit(completion.text, completion.finish_reason, started, completion)
            yield completion
            return
        if calls_left <= 0:
            note = (f"Stopped after {max_tool_calls} tool call{'s' if max_tool_calls != 1 else ''} in one answer: "
                    "send a message to let the model go on.")
            session._commit(content, completion.finish_reason, started, completion, {"tools_stopped": note})
            yield dataclasses.replace(completion, text=content)
            return
        found = found[:calls_left]
        calls_left -= len(found)
        session._commit(content, "tool_calls", started, completion,
                        {"tool_calls": [{"id": i, "tool": n, "arguments": a} for i, n, a, _ in found]})
        for call_id, name, arguments, problem in found:
            request = ToolCallRequest(call_id, name, arguments)
            yield request
            result = _run_call(session, registry, approve, request, problem)
            session.store.add_message(session.conversation_id, Message(
                role="tool", content=result.text,
                meta={"tool_call_id": call_id, "tool": name, "arguments": arguments, "status": result.status}))
            yield result


def _run_call(session: ChatSession, registry: ToolRegistry, approve: Approval | None, request: ToolCallRequest,
              problem: str) -> ToolCallResult:
    """Ask, run, and say how it went: every way a call ends is a result the model reads."""
    def result(text: str, status: str) -> ToolCallResult:
        return ToolCallResult(request.id, request.tool, request.arguments, text, status)

    if problem:
        return result(problem, "error")
    if request.tool not in {t.name for t in registry.tools()}:
        known = ", ".join(t.name for t in registry.tools()) or "none"
        return result(f"There is no tool named '{request.tool}' (tools: {known}).", "error")
    allowed = session.always_allowed_tools(registry)
    if request.tool not in allowed:
        answer = approve(request) if approve is not None else "deny"
        if answer == "always":
            allowed.add(request.tool)
        elif answer != "once":
            return result(DENIED, "denied")
    try:
        output = registry.call(request.tool, request.arguments)
    except ToolError as exc:
        return result(str(exc), "error")
    return result(output.text, "error" if output.is_error else "ok")


_MARKER = re.compile(r"<tool_call>|\[TOOL_CALLS\]|<\|python_tag\|>")
_NAME = re.compile(r'"name"\s*:\s*"([^"]*)"')


def _unreadable_call(text: str) -> tuple[str, tuple[str, str, str, str]] | None:
    """A tool call the model began but wrote wrongly (arguments that are not JSON): ``(content, call)``."""
    match = _MARKER.search(text)
    if match is None:
        return None
    raw = text[match.end():].replace("</tool_call>", "").strip()
    name = _NAME.search(raw)
    tool = name.group(1) if name else ""
    problem = (f"The call to '{tool}' could not be read: its arguments are not valid JSON. Write the call again "
               "with a JSON object of arguments." if tool else
               "The tool call could not be read: it is not valid JSON. Write the call again.")
    return text[:match.start()].strip(), (_call_id(), tool, raw, problem)


def _call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def openai_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Stored messages as OpenAI-style chat messages, tool calls and results included.

    A call whose result was never stored (the answer was stopped while it waited) gets one saying
    it did not run, so every call the model sees has an answer.
    """
    out: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        out.extend({"role": "tool", "content": NOT_RUN, "tool_call_id": c["id"], "name": c["tool"]} for c in pending)
        pending.clear()

    for m in messages:
        if m.role == "tool":
            call_id = str(m.meta.get("tool_call_id", ""))
            pending[:] = [c for c in pending if c["id"] != call_id]
            out.append({"role": "tool", "content": m.content, "tool_call_id": call_id,
                        "name": str(m.meta.get("tool", ""))})
            continue
        flush()
        calls = m.meta.get("tool_calls") if m.role == "assistant" else None
        if calls:
            valid = [c for c in calls if isinstance(c, dict)]
            out.append({"role": "assistant", "content": m.content, "tool_calls": [
                {"id": str(c.get("id", "")), "type": "function",
                 "function": {"name": str(c.get("tool", "")), "arguments": _arguments(c.get("arguments", ""))}}
                for c in valid]})
            pending[:] = [{"id": str(c.get("id", "")), "tool": str(c.get("tool", ""))} for c in valid]
        else:
            out.append({"role": m.role, "content": m.content})
    flush()
    return out


def plain_messages(messages: list[Message]) -> list[dict[str, str]]:
    """Stored messages for a model without tool support: each tool exchange folded into the answer's text."""
    out: list[dict[str, str]] = []
    results = {str(m.meta.get("tool_call_id", "")): m for m in messages if m.role == "tool"}
    for m in messages:
        if m.role == "tool":
            continue
        content = m.content
        for call in (m.meta.get("tool_calls") or []) if m.role == "assistant" else []:
            if isinstance(call, dict):
                done = results.get(str(call.get("id", "")))
                content += (f"\n[tool {call.get('tool', '')}({_arguments(call.get('arguments', ''))}): "
                            f"{done.content if done is not None else NOT_RUN}]")
        if out and m.role == "assistant" and out[-1]["role"] == "assistant":
            out[-1]["content"] = out[-1]["content"] + "\n" + content  # the rounds of one answer, as one turn
        else:
            out.append({"role": m.role, "content": content})
    return out


def _arguments(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
