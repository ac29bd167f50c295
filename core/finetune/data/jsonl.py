"""Reading training data from JSON Lines in the shapes people already have.

One reader per shape, tried in order on each row (the registry below); a row no reader accepts is an
error naming its line. Shapes:

- chat: ``{"messages": [{"role": "user", "content": ...}, ...]}`` (OpenAI / Hugging Face chat)
- ShareGPT: ``{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}``
- Alpaca: ``{"instruction": ..., "input": ..., "output": ...}``
- text: ``{"text": ...}`` (continued pre-training)
- preference: ``{"prompt": ..., "chosen": ..., "rejected": ...}`` (DPO); prompt may be a string or messages
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import DatasetError

Message = dict[str, str]


@dataclass(frozen=True)
class Conversation:
    messages: list[Message]


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Preference:
    prompt: list[Message]
    chosen: str
    rejected: str


Example = Conversation | Text | Preference


@dataclass
class Dataset:
    examples: list[Example]
    kinds: dict[str, int] = field(default_factory=dict)  # shape name -> row count
    skipped: list[str] = field(default_factory=list)


class RowError(ValueError):
    """A row has a recognised shape but bad content."""


_ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
          "model": "assistant", "bot": "assistant"}


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RowError(f"'{what}' must be a string, not {type(value).__name__}")
    return value


def _messages(items: Any, role_key: str, content_key: str, what: str) -> list[Message]:
    if not isinstance(items, list) or not items:
        raise RowError(f"'{what}' must be a non-empty list of messages")
    out: list[Message] = []
    for n, item in enumerate(items):
        if not isinstance(item, dict) or role_key not in item or content_key not in item:
            raise RowError(f"message {n + 1} of '{what}' needs '{role_key}' and '{content_key}'")
        role = _ROLES.get(str(item[role_key]).lower())
        if role is None:
            raise RowError(f"message {n + 1} has unknown role {item[role_key]!r} (use system, user or assistant)")
        content = item[content_key]
        if isinstance(content, list):  # multi-part content: keep the text parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        out.append({"role": role, "content": _text(content, f"{what}[{n}].{content_key}")})
    if not any(m["role"] == "assistant" and m["content"].strip() for m in out):
        raise RowError("the conversation has no assistant answer to learn")
    return out


def read_chat(row: dict[str, Any]) -> Example | None:
    if "messages" not in row:
        return None
    return Conversation(_messages(row["messages"], "role", "content", "messages"))


def read_sharegpt(row: dict[str, Any]) -> Example | None:
    if "conversations" not in row:
        return None
    return Conversation(_messages(row["conversations"], "from", "value", "conversations"))


def read_alpaca(row: dict[str, Any]) -> Example | None:
    if "instruction" not in row or "output" not in row:
        return None
    instruction = _text(row["instruction"], "instruction")
    extra = _text(row.get("input") or "", "input")
    output = _text(row["output"], "output")
    if not output.strip():
        raise RowError("'output' is empty")
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages: list[Message] = []
    if isinstance(row.get("system"), str) and row["system"].strip():
        messages.append({"role": "system", "content": row["system"]})
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    return Conversation(messages)


def read_preference(row: dict[str, Any]) -> Example | None:
    if "chosen" not in row or "rejected" not in row:
        return None
    prompt_value = row.get("prompt", "")
    if isinstance(prompt_value, list):
        prompt = [
            {"role": _ROLES.get(str(m.get("role", "")).lower(), "user"), "content": _text(m.get("content"), "prompt")}
            for m in prompt_value if isinstance(m, dict)
        ]
    else:
        prompt = [{"role": "user", "content": _text(prompt_value, "prompt")}]
    chosen, rejected = row["chosen"], row["rejected"]
    # Some sets give chosen/rejected as whole conversations: keep the last assistant turn.
    if isinstance(chosen, list) and isinstance(rejected, list):
        chosen = chosen[-1].get("content") if chosen and isinstance(chosen[-1], dict) else None
        rejected = rejected[-1].get("content") if rejected and isinstance(rejected[-1], dict) else None
    chosen_text, rejected_text = _text(chosen, "chosen"), _text(rejected, "rejected")
    if not chosen_text.strip() or not rejected_text.strip():
        raise RowError("'chosen' and 'rejected' must both be non-empty")
    if chosen_text == rejected_text:
        raise RowError("'chosen' and 'rejected' are the same text")
    if not any(m["content"].strip() for m in prompt):
        raise RowError("'prompt' is empty")
    return Preference(prompt, chosen_text, rejected_text)


def read_text(row: dict[str, Any]) -> Example | None:
    if "text" not in row:
        return None
    text = _text(row["text"], "text")
    if not text.strip():
        raise RowError("'text' is empty")
    return Text(text)


# The row readers, tried in this order (preference before text: a DPO row may carry extra keys).
READERS: list[tuple[str, Callable[[dict[str, Any]], Example | None]]] = [
    ("chat", read_chat),
    ("sharegpt", read_sharegpt),
    ("preference", read_preference),
    ("alpaca", read_alpaca),
    ("text", read_text),
]


def read_jsonl(path: str | Path) -> Dataset:
    """Every row of a JSONL file as an ``Example``; ``DatasetError`` naming the first bad line."""
    source = Path(path).expanduser()
    if not source.is_file():
        raise DatasetError(f"{source} does not exist: give a .jsonl file (one JSON object per line).")
    dataset = Dataset([])
    try:
        lines = source.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{source.name} is not UTF-8 text: save it as UTF-8 JSON Lines.") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{source.name} line {number}: not valid JSON ({exc.msg}). Fix or remove that line.") from exc
        if not isinstance(row, dict):
            raise DatasetError(f"{source.name} line {number}: expected a JSON object, got {type(row).__name__}.")
        example = None
        for kind, reader in READERS:
            try:
                example = reader(row)
            except RowError as exc:
                raise DatasetError(f"{source.name} line {number}: {exc}.") from exc
            if example is not None:
                dataset.kinds[kind] = dataset.kinds.get(kind, 0) + 1
                break
        if example is None:
            keys = ", ".join(list(row)[:6]) or "none"
            raise DatasetError(
                f"{source.name} line {number}: unknown row shape (keys: {keys}). Use 'messages', "
                "'conversations', 'instruction'/'output', 'text', or 'prompt'/'chosen'/'rejected'."
            )
        dataset.examples.append(example)
    if not dataset.examples:
        raise DatasetError(f"{source.name} has no rows: add one JSON object per line.")
    return dataset
