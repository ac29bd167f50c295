"""A conversation driven by the engine and saved in the chat store, message by message.

The user's message is committed before the answer starts; the answer is committed the moment it
is complete (a cancelled answer is kept with what was generated, marked ``cancelled``). If the
engine crashes, everything already committed stays.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from core.chats.store import ChatStore, Conversation, Message
from core.engine import Completion, Engine, SamplingParams, TextChunk
from core.errors import HearthError

StreamItem = TextChunk | Completion


class ChatSession:
    """Send, regenerate and edit-and-rerun in one saved conversation."""

    def __init__(self, store: ChatStore, engine: Engine, conversation_id: int) -> None:
        self.store = store
        self.engine = engine
        self.conversation_id = conversation_id

    @classmethod
    def start(
        cls, store: ChatStore, engine: Engine, *, model: str, system_prompt: str = "",
        params: SamplingParams | None = None, title: str = "",
    ) -> ChatSession:
        conv = store.create(title=title, model=model, system_prompt=system_prompt,
                            params=asdict(params) if params else {})
        return cls(store, engine, conv.id)

    @property
    def conversation(self) -> Conversation:
        return self.store.get(self.conversation_id)

    def prompt_messages(self) -> list[dict[str, str]]:
        """The conversation as the engine sees it: system prompt, then each message."""
        conv = self.conversation
        messages = [{"role": "system", "content": conv.system_prompt}] if conv.system_prompt else []
        messages += [{"role": m.role, "content": m.content} for m in self.store.messages(self.conversation_id)]
        return messages

    def send(self, text: str, params: SamplingParams | None = None) -> Iterator[StreamItem]:
        """Commit the user's message, then stream and commit the answer."""
        if not text.strip():
            raise HearthError("The message is empty: type something to send.")
        conv = self.conversation
        self.store.add_message(self.conversation_id, Message(role="user", content=text))
        if not conv.title:
            self.store.rename(self.conversation_id, _title_from(text))
        return self._answer(params)

    def regenerate(self, params: SamplingParams | None = None) -> Iterator[StreamItem]:
        """Replace the last answer with a new one."""
        messages = self.store.messages(self.conversation_id)
        if not messages or not any(m.role == "user" for m in messages):
            raise HearthError("There is no message to answer again yet.")
        if messages[-1].role == "assistant" and messages[-1].id is not None:
            self.store.truncate_from(self.conversation_id, messages[-1].id)
        return self._answer(params)

    def edit_and_rerun(self, message_id: int, text: str, params: SamplingParams | None = None) -> Iterator[StreamItem]:
        """Change one of the user's messages, drop everything after it, and answer again."""
        messages = {m.id: m for m in self.store.messages(self.conversation_id)}
        target = messages.get(message_id)
        if target is None or target.role != "user":
            raise HearthError("Only your own messages in this conversation can be edited.")
        self.store.truncate_from(self.conversation_id, message_id)
        return self.send(text, params)

    def _answer(self, params: SamplingParams | None) -> Iterator[StreamItem]:
        params = params or SamplingParams.from_dict(self.conversation.params)
        started = time.time()
        completion: Completion | None = None
        pieces: list[str] = []
        try:
            for item in self.engine.stream_chat(self.prompt_messages(), params):
                if isinstance(item, Completion):
                    completion = item
                else:
                    pieces.append(item.text)
                yield item
        finally:
            if completion is None and pieces:
                # The stream broke off (engine crash, caller stopped): keep what was said.
                self._commit("".join(pieces), "interrupted", started, None)
        if completion is not None:
            self._commit(completion.text, completion.finish_reason, started, completion)

    def _commit(self, text: str, finish: str, started: float, completion: Completion | None) -> None:
        meta: dict[str, Any] = {}
        stats = completion.stats if completion else None
        if stats:
            meta = {"context_used": stats.context_used, "n_ctx": stats.n_ctx,
                    "dropped_messages": stats.dropped_messages, "cached_tokens": stats.cached_tokens,
                    "time_to_first_token": stats.time_to_first_token}
        status = self.engine.status
        self.store.add_message(
            self.conversation_id,
            Message(
                role="assistant",
                content=text,
                created_at=started,
                prompt_tokens=stats.prompt_tokens if stats else None,
                completion_tokens=stats.completion_tokens if stats else None,
                tokens_per_second=stats.tokens_per_second if stats else None,
                finish_reason=finish,
                model=status.path if status else None,
                meta=meta,
            ),
        )


def _title_from(text: str, limit: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
