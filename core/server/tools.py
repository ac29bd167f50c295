"""Tool calls read back from a model's answer, in the shapes the chat families write them.

Following llama.cpp's ``common/chat.cpp`` parsers:
- Hermes 2 Pro / Qwen 2.5+: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, any number,
  possibly after some text;
- Llama 3.1+: the whole answer is ``{"name": ..., "parameters": {...}}`` (optionally after
  ``<|python_tag|>``; several separated by ``;``);
- Mistral: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`` or, from v11 templates,
  ``[TOOL_CALLS]name[ARGS]{...}``.
The family is recognised from the answer itself, so a model needs no table entry.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

MARKERS = ("<tool_call>", "[TOOL_CALLS]", "<|python_tag|>")
_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # a JSON object as text, as OpenAI sends it
    id: str

    def openai(self, index: int | None = None) -> dict[str, Any]:
        call: dict[str, Any] = {"id": self.id, "type": "function",
                                "function": {"name": self.name, "arguments": self.arguments}}
        return call if index is None else {"index": index, **call}

    def ollama(self) -> dict[str, Any]:
        try:
            arguments = json.loads(self.arguments)
        except ValueError:
            arguments = {}
        return {"function": {"name": self.name, "arguments": arguments}}


def _call(data: Any) -> ToolCall | None:
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(data["name"], json.dumps(arguments, ensure_ascii=False), f"call_{secrets.token_hex(12)}")


def _json_values(text: str) -> list[Any] | None:
    """Consecutive JSON values (separated by whitespace, ``;`` or ``,``), or None when the text is not that."""
    values: list[Any] = []
    i = 0
    while True:
        while i < len(text) and text[i] in " \t\r\n;,":
            i += 1
        if i >= len(text):
            return values
        try:
            value, i = _DECODER.raw_decode(text, i)
        except ValueError:
            return None
        values.append(value)


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """``(content, calls)``: the answer's text outside its tool calls, and the calls (none: ``(text, [])``)."""
    if "<tool_call>" in text:
        calls = [c for m in _HERMES.finditer(text) for c in [_call(_first_json(m.group(1)))] if c]
        if calls:
            return text[: text.index("<tool_call>")].strip(), calls
    if "[TOOL_CALLS]" in text:
        head, _, rest = text.partition("[TOOL_CALLS]")
        calls = _mistral(rest)
        if calls:
            return head.strip(), calls
    body = text.strip()
    if body.startswith("<|python_tag|>"):
        body = body[len("<|python_tag|>"):]
    if body.startswith("{"):
        values = _json_values(body)
        if values:
            calls = [c for v in values if (c := _call(v))]
            if len(calls) == len(values):
                return "", calls
    return text, []


def _first_json(text: str) -> Any:
    try:
        return _DECODER.raw_decode(text.strip())[0]
    except ValueError:
        return None


def _mistral(rest: str) -> list[ToolCall]:
    rest = rest.strip()
    if rest.startswith("["):
        values = _json_values(rest)
        if values and isinstance(values[0], list):
            return [c for v in values[0] if (c := _call(v))]
        return []
    calls = []
    for part in rest.split("[TOOL_CALLS]"):
        name, sep, args = part.partition("[ARGS]")
        if sep and name.strip():
            call = _call({"name": name.strip(), "arguments": _first_json(args)})
            if call:
                calls.append(call)
    return calls


class ToolCallStream:
    """Streams an answer's plain text at once and holds back what may be a tool call until the end."""

    def __init__(self) -> None:
        self.text = ""
        self.sent = 0  # characters already passed on as content
        self.hold_from: int | None = None  # where a (possible) tool call begins

    def feed(self, piece: str) -> str:
        """The content that can be sent now."""
        self.text += piece
        if self.hold_from is not None:
            return ""
        found = [i for m in MARKERS if (i := self.text.find(m, self.sent)) >= 0]
        if found:
            self.hold_from = min(found)
        elif self.sent == 0 and (not self.text.strip() or self.text.lstrip().startswith("{")):
            return ""  # perhaps a Llama 3.1 JSON call: wait and see
        else:
            end = len(self.text)
            for marker in MARKERS:  # keep back a tail that may be the start of a marker
                for k in range(min(len(marker) - 1, end - self.sent), 0, -1):
                    if self.text.endswith(marker[:k]):
                        end = min(end, len(self.text) - k)
                        break
            out, self.sent = self.text[self.sent:end], end
            return out
        out, self.sent = self.text[self.sent:self.hold_from], self.hold_from
        return out

    def finish(self) -> tuple[str, list[ToolCall]]:
        """What is left to send as content, and the tool calls."""
        _, calls = parse_tool_calls(self.text)
        if calls:
            return "", calls
        out, self.sent = self.text[self.sent:], len(self.text)
        return out, []
