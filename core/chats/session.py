"""A conversation driven by the engine and saved in the chat store, message by message.

The user's message (with its images) is committed before the answer starts; the answer is committed
the moment it is complete (a cancelled answer is kept with what was generated, marked ``cancelled``).
If the engine crashes or refuses the request (a model without a vision projector given an image),
everything already committed stays, and ``regenerate`` answers the last message later.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from core.chats.store import ChatStore, Conversation, Message
from core.chats.tool_loop import (
    Approval,
    ToolCallRequest,
    ToolCallResult,
    ToolStreamItem,
    answer_with_tools,
    openai_messages,
    plain_messages,
)
from core.engine import Completion, Engine, SamplingParams, TextChunk
from core.errors import HearthError
from core.media.images import PreparedImage

if TYPE_CHECKING:
    from core.tools import ToolRegistry

StreamItem = TextChunk | Completion
__all__ = ["Approval", "ChatSession", "StreamItem", "ToolCallRequest", "ToolCallResult", "ToolStreamItem"]


class ChatSession:
    """Send, regenerate and edit-and-rerun in one saved conversation."""

    def __init__(self, store: ChatStore, engine: Engine, conversation_id: int) -> None:
        self.store = store
        self.engine = engine
        self.conversation_id = conversation_id
        # Tools the user answered "always" for, per registry, for as long as this session lives.
        self._always_allowed: weakref.WeakKeyDictionary[ToolRegistry, set[str]] = weakref.WeakKeyDictionary()
        self._images: dict[str, bytes] = {}  # sha256 -> encoded image, read from the store once per session

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

    def prompt_messages(self) -> list[dict[str, Any]]:
        """The conversation as the engine sees it: system prompt, then each message.

        Tool calls and results come back as OpenAI-style messages (``tool_calls``, role "tool"); for a
        loaded model without tool support they are folded into the answers' text instead. A message
        with images has a list of parts as its content: ``{"type": "image", "data": bytes}`` for each
        image, in order, then ``{"type": "text", "text": ...}`` (the engine's contract for image prompts).
        """
        conv = self.conversation
        messages: list[dict[str, Any]] = [{"role": "system", "content": conv.system_prompt}] if conv.system_prompt else []
        stored = self.store.messages(self.conversation_id)
        if any(m.role == "tool" or m.meta.get("tool_calls") for m in stored):
            status = self.engine.status
            messages += openai_messages(stored) if status is None or status.supports_tools else plain_messages(stored)
        else:
            messages += [{"role": m.role, "content": m.content} for m in stored]
        return self._with_images(messages, stored)

    def _with_images(self, messages: list[dict[str, Any]], stored: list[Message]) -> list[dict[str, Any]]:
        """Give the user messages that have images their content parts.

        Both ways of building the prompt keep the user's messages one for one and in order (only tool
        results and answers are added or folded), so the n-th user message is the n-th stored one.
        With a model loaded that reads no images, earlier messages' images become an "[image]" line, so
        a chat that had pictures goes on with a text model; the last message keeps its parts, and the
        engine's NoVisionError says why a picture just sent cannot be read.
        """
        users = [m for m in stored if m.role == "user"]
        if not any(m.images for m in users):
            return messages
        status = self.engine.status
        blind = status is not None and not getattr(status, "vision", False)
        out: list[dict[str, Any]] = []
        for message in messages:
            if message["role"] == "user":
                source = users.pop(0)
                if source.images and blind and users:  # an earlier message, and a model that cannot see it
                    lines = ["[image]"] * len(source.images) + ([message["content"]] if message["content"] else [])
                    message = {**message, "content": "\n".join(lines)}
                elif source.images:
                    parts: list[dict[str, Any]] = [{"type": "image", "data": self._image_data(sha)}
                                                   for sha in source.images]
                    if message["content"]:
                        parts.append({"type": "text", "text": message["content"]})
                    message = {**message, "content": parts}
            out.append(message)
        return out

    def _image_data(self, sha256: str) -> bytes:
        data = self._images.get(sha256)
        if data is None:
            data = self._images[sha256] = self.store.image(sha256).data
        return data

    def images_of(self, message: Message) -> list[PreparedImage]:
        """The images attached to one of this conversation's messages, as stored."""
        return [self.store.image(sha) for sha in message.images]

    def always_allowed_tools(self, registry: ToolRegistry) -> set[str]:
        """The tools of ``registry`` that run without asking in this session (answered "always")."""
        return self._always_allowed.setdefault(registry, set())

    def send(
        self, text: str, params: SamplingParams | None = None, *, images: Sequence[PreparedImage] = (),
        tools: ToolRegistry | None = None, approve: Approval | None = None, max_tool_calls: int = 8,
    ) -> Iterator[ToolStreamItem]:
        """Commit the user's message (with ``images``, from ``core.media.prepare_image``), then stream and commit the answer.

        A model without a vision projector refuses a prompt with images (``NoVisionError``, raised when
        the stream is read): the message stays saved with its images, and ``regenerate`` answers it once
        a model that reads images is loaded. With ``tools`` and a model whose template supports them, the model may call tools: each call
        is yielded as a ``ToolCallRequest``, run once ``approve`` says "once" or "always" (without
        ``approve`` it is denied), and yielded as a ``ToolCallResult``; at most ``max_tool_calls`` per answer.
        """
        if not text.strip() and not images:
            raise HearthError("The message is empty: type something to send.")
        conv = self.conversation
        self.store.add_message(self.conversation_id, Message(role="user", content=text), images=images)
        if not conv.title:
            self.store.rename(self.conversation_id, _title_from(text) or _image_title(images))
        return self._answer_maybe_with_tools(params, tools, approve, max_tool_calls)

    def regenerate(
        self, params: SamplingParams | None = None, *, tools: ToolRegistry | None = None,
        approve: Approval | None = None, max_tool_calls: int = 8,
    ) -> Iterator[ToolStreamItem]:
        """Replace the last answer (with its tool calls and results) with a new one."""
        messages = self.store.messages(self.conversation_id)
        if not messages or not any(m.role == "user" for m in messages):
            raise HearthError("There is no message to answer again yet.")
        last_user = max(i for i, m in enumerate(messages) if m.role == "user")
        answer = messages[last_user + 1:]
        if answer and answer[0].id is not None:
            self.store.truncate_from(self.conversation_id, answer[0].id)
        return self._answer_maybe_with_tools(params, tools, approve, max_tool_calls)

    def edit_and_rerun(
        self, message_id: int, text: str, params: SamplingParams | None = None, *,
        images: Sequence[PreparedImage] | None = None, tools: ToolRegistry | None = None,
        approve: Approval | None = None, max_tool_calls: int = 8,
    ) -> Iterator[ToolStreamItem]:
        """Change one of the user's messages, drop everything after it, and answer again.

        The message keeps its images unless ``images`` replaces them (``[]`` removes them).
        """
        messages = {m.id: m for m in self.store.messages(self.conversation_id)}
        target = messages.get(message_id)
        if target is None or target.role != "user":
            raise HearthError("Only your own messages in this conversation can be edited.")
        kept = self.images_of(target) if images is None else list(images)  # read before truncating frees them
        if not text.strip() and not kept:
            raise HearthError("The message is empty: type something to send.")  # before anything is dropped
        self.store.truncate_from(self.conversation_id, message_id)
        return self.send(text, params, images=kept, tools=tools, approve=approve, max_tool_calls=max_tool_calls)

    def _answer_maybe_with_tools(
        self, params: SamplingParams | None, tools: ToolRegistry | None, approve: Approval | None, max_tool_calls: int,
    ) -> Iterator[ToolStreamItem]:
        status = self.engine.status
        if tools is None or status is None or not status.supports_tools:
            return self._answer(params)  # tools are not sent to a model whose template cannot use them
        params = params or SamplingParams.from_dict(self.conversation.params)
        return answer_with_tools(self, params, tools, approve, max_tool_calls)

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

    def _commit(self, text: str, finish: str, started: float, completion: Completion | None,
                extra: dict[str, Any] | None = None) -> None:
        meta: dict[str, Any] = {}
        stats = completion.stats if completion else None
        if stats:
            meta = {"context_used": stats.context_used, "n_ctx": stats.n_ctx,
                    "dropped_messages": stats.dropped_messages, "cached_tokens": stats.cached_tokens,
                    "time_to_first_token": stats.time_to_first_token}
            if stats.drafted_tokens:  # speculative decoding ran (SamplingParams.draft)
                meta.update(drafted_tokens=stats.drafted_tokens, accepted_tokens=stats.accepted_tokens)
        meta.update(extra or {})  # the tool loop's keys: tool_calls, tools_stopped
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


def _image_title(images: Sequence[PreparedImage]) -> str:
    return "Image" if len(images) == 1 else f"{len(images)} images"


def _title_from(text: str, limit: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
