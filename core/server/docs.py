"""Tune + retrieval over the API: ``BASE+ADAPTER`` looks up the collection the adapter was taught with.

A documents fine-tune indexes its documents into a Knowledge collection and names it in the adapter's
manifest (``core.finetune.indexing``). A chat request to ``BASE+ADAPTER`` then gets the passages that
match its last user message put before it, as ``hearth chat --lora ADAPTER`` and the window's "Chat with it"
do (``core.docs.context.prepare_question``: numbered passages within a token budget). Keywords only
(BM25): the server's engine holds the chat model, not an embedding model.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.engine import Engine
    from core.server.host import ServedModel

log = logging.getLogger("hearth.server")

K = 5  # passages per question, as the chat's default
BUDGET_TOKENS = 1024  # the chat's default passage budget


def adapter_collection(model: ServedModel) -> str | None:
    """The collection of the served adapter's manifest, when it still exists."""
    if model.adapter is None:
        return None
    from core.finetune.indexing import adapter_collection as named

    return named(model.adapter)


def with_adapter_docs(model: ServedModel, messages: list[dict[str, Any]], engine: Engine,
                      answer_tokens: int) -> list[dict[str, Any]]:
    """``messages`` with the adapter's collection's passages before the last user message's text (unchanged
    when the model has no collection, the last message is not the user's, or it holds no text)."""
    name = adapter_collection(model)
    if name is None or not messages or messages[-1].get("role") != "user":
        return messages
    last = messages[-1]
    content = last.get("content")
    question = content if isinstance(content, str) else _text_of(content)
    if not question.strip():
        return messages
    from core.docs.context import prepare_question
    from core.docs.store import DocsLibrary
    from core.errors import HearthError

    status = engine.status
    n_ctx = status.n_ctx if status is not None else 4096
    try:
        with DocsLibrary().open(name) as collection:
            turn = prepare_question(collection, question, count_tokens=lambda t: len(engine.tokenize(t)),
                                    n_ctx=n_ctx, k=K, budget_tokens=BUDGET_TOKENS, answer_tokens=answer_tokens)
    except HearthError as exc:  # the collection being rebuilt, or made by another version: answer without it
        log.warning("%s: the collection '%s' could not be searched (%s); answering without it", model.name, name, exc)
        return messages
    log.info("%s: %d passages of '%s' put before the question", model.name, len(turn.context.passages), name)
    if isinstance(content, str):
        return [*messages[:-1], {**last, "content": turn.message}]
    # Parts (text and images): the text parts become one, with the passages; the other parts stay as they are.
    parts = [p for p in content or [] if not (isinstance(p, dict) and p.get("type") == "text")]
    return [*messages[:-1], {**last, "content": [{"type": "text", "text": turn.message}, *parts]}]


def _text_of(content: Any) -> str:
    if not isinstance(content, list):
        return ""
    return "\n".join(str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text")
