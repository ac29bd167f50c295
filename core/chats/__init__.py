"""Conversations and their messages, kept in one SQLite database (WAL mode)."""

from __future__ import annotations

from core.chats.store import ChatStore, Conversation, Message

__all__ = ["ChatStore", "Conversation", "Message"]
