"""Tokens and prompts: tokenizing, token pieces, end-of-generation ids, chat prompts that fit the context."""

from __future__ import annotations

import ctypes
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import llama_cpp as L

from core.engine.ops.base import RequestError
from core.engine.templates import render

if TYPE_CHECKING:
    from core.engine.worker import Worker

P = TypeVar("P")


def tokenize(w: Worker, text: str, add_bos: bool) -> list[int]:
    data = text.encode("utf-8")
    size = len(data) + 16
    buf = (L.llama_token * size)()
    n = L.llama_tokenize(w.vocab, data, len(data), buf, size, add_bos, True)
    if n < 0:
        size = -n
        buf = (L.llama_token * size)()
        n = L.llama_tokenize(w.vocab, data, len(data), buf, size, add_bos, True)
    return list(buf[:n])


def piece(w: Worker, token: int, special: bool = False) -> bytes:
    """The bytes ``token`` stands for (special tokens as text only with ``special``)."""
    n = L.llama_token_to_piece(w.vocab, token, w.piece_buf, 256, 0, special)
    if n < 0:
        big = ctypes.create_string_buffer(-n)
        n = L.llama_token_to_piece(w.vocab, token, big, -n, 0, special)
        return big.raw[:n]
    return w.piece_buf.raw[:n]


def token_text(w: Worker, token: int) -> str:
    return piece(w, token, special=True).decode("utf-8", errors="replace") if token >= 0 else ""


def is_special_token(w: Worker, text: str) -> bool:
    tokens = tokenize(w, text, add_bos=False)
    return len(tokens) == 1 and bool(L.llama_vocab_is_control(w.vocab, tokens[0]))


def eog_ids(w: Worker) -> list[int]:
    """Every end-of-generation token of the vocabulary (computed once per model)."""
    if w.eog_cache is None:
        n = int(L.llama_vocab_n_tokens(w.vocab))
        w.eog_cache = [t for t in range(n) if L.llama_vocab_is_eog(w.vocab, t)]
    return w.eog_cache


def op_tokenize(w: Worker, request: dict[str, Any]) -> None:
    w.require_model()
    w.conn.send({"type": "tokens", "tokens": tokenize(w, request["text"], request.get("add_bos", False))})


def prompt_tokens(w: Worker, text: str) -> list[int]:
    # A template that writes the BOS token itself must not get a second one from the tokenizer.
    add_bos = bool(L.llama_vocab_get_add_bos(w.vocab)) and not (w.bos_text and text.startswith(w.bos_text))
    return tokenize(w, text, add_bos)


def chat_prompt(
    w: Worker, messages: list[dict[str, Any]], reserve: int, tools: list[dict[str, Any]] | None = None
) -> tuple[list[int], int]:
    """Prompt tokens for ``messages``, dropping the oldest turns until ``reserve`` tokens fit after it."""

    def build(kept: list[dict[str, Any]]) -> tuple[list[int], int]:
        tokens = prompt_tokens(w, render(w.fmt, kept, bos_token=w.bos_text, eos_token=w.eos_text, tools=tools))
        return tokens, len(tokens)

    return fit_messages(w, messages, reserve, build)


def fit_messages(
    w: Worker,
    messages: list[dict[str, Any]],
    reserve: int,
    build: Callable[[list[dict[str, Any]]], tuple[P, int]],
    release: Callable[[P], None] = lambda _prompt: None,
) -> tuple[P, int]:
    """The prompt ``build`` makes of ``messages`` (it returns the prompt and its length in tokens), dropping
    the oldest turns until ``reserve`` tokens fit after it; returns it and how many messages were dropped.

    Rule: the system prompt and the newest user message are always kept; older messages are
    dropped oldest first, a user message together with the answer that followed it. ``release``
    gets each prompt built and not used.
    """
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system) :]
    dropped = 0
    while True:
        prompt, n_tokens = build(system + turns)
        if n_tokens + reserve <= w.n_ctx:
            return prompt, dropped
        release(prompt)
        if len(turns) <= 1:
            raise RequestError(
                "context_overflow",
                f"The message needs {n_tokens} tokens plus {reserve} for the answer, more than the "
                f"{w.n_ctx}-token context: shorten it, lower max tokens, or reload with a larger context.",
            )
        cut = 1
        while cut < len(turns) - 1 and turns[cut]["role"] != "user":
            cut += 1
        dropped += cut
        turns = turns[cut:]


def template_message(message: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-style message as chat templates read it: tool-call arguments as a dict, not JSON text."""
    calls = message.get("tool_calls")
    if not calls:
        return message
    fixed = []
    for call in calls:
        call = dict(call)
        function = call.get("function")
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            try:
                arguments = json.loads(function["arguments"] or "{}")
            except json.JSONDecodeError:
                arguments = function["arguments"]  # not JSON: the template gets the text as it is
            call["function"] = {**function, "arguments": arguments}
        fixed.append(call)
    return {**message, "tool_calls": fixed}
