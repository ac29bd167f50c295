"""Conversations as a list (``core.chats.Conversation``), most recent first."""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import QAbstractListModel, QModelIndex, Qt

from core.chats import Conversation
from desktop.models.table import Index

ID_ROLE = Qt.ItemDataRole.UserRole + 1


def _when(ts: float) -> str:
    age = time.time() - ts
    if age < 60:
        return "just now"
    if age < 3600:
        return f"{int(age // 60)} min ago"
    if age < 86400:
        return time.strftime("%H:%M", time.localtime(ts))
    return time.strftime("%d %b", time.localtime(ts))


class ConversationListModel(QAbstractListModel):
    def __init__(self) -> None:
        super().__init__()
        self._items: list[Conversation] = []

    def set_conversations(self, items: list[Conversation]) -> None:
        self.beginResetModel()
        self._items = list(items)
        self.endResetModel()

    def conversation(self, row: int) -> Conversation:
        return self._items[row]

    def row_of(self, conversation_id: int) -> int:
        return next((i for i, c in enumerate(self._items) if c.id == conversation_id), -1)

    def rowCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._items)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        c = self._items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return ("⇆  " if c.compare_group else "") + (c.title or "New chat")  # ⇆: a comparison (Compare mode)
        if role == Qt.ItemDataRole.ToolTipRole:
            if c.compare_group:
                return f"{c.title or 'New comparison'}\nTwo set-ups side by side · {_when(c.updated_at)}"
            return f"{c.title or 'New chat'}\n{c.model or 'no model'} · {c.message_count} messages · {_when(c.updated_at)}"
        if role == ID_ROLE:
            return c.id
        return None
