"""Conversations and their messages, kept in one SQLite database (WAL mode)."""

from __future__ import annotations

from core.chats.store import ChatStore, Conversation, Message

__all__ = ["ChatSession", "ChatStore", "Conversation", "Message"]


def __getattr__(name: str) -> object:
    # ChatSession pulls in the engine client; keep plain store users light.
    if name == "ChatSession":
        from core.chats.session import ChatSession

        return ChatSession
    raise AttributeError(name)
