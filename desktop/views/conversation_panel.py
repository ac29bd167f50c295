"""The list of conversations: new, search (titles and text), rename in place, delete."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QPoint, Qt, Signal
from PySide6.QtWidgets import QFrame, QLineEdit, QListView, QMenu, QVBoxLayout, QWidget

from core.chats import ChatStore
from core.chats.compare import delete_compare, one_row_per_comparison, rename_compare
from desktop.models.conversations import ID_ROLE, ConversationListModel
from desktop.views.widgets import button, confirm


class EditableConversations(ConversationListModel):
    """Conversation titles editable in place; an edit is handed to ``rename`` (the store does it)."""

    renamed = Signal(int, str)

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        return super().flags(index) | Qt.ItemFlag.ItemIsEditable

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.EditRole and index.isValid():
            return self.conversation(index.row()).title
        return super().data(index, role)

    def setData(self, index: QModelIndex | QPersistentModelIndex, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if role != Qt.ItemDataRole.EditRole or not index.isValid() or not str(value).strip():
            return False
        self.renamed.emit(self.conversation(index.row()).id, str(value).strip())
        return True


class ConversationPanel(QFrame):
    """Emits ``selected(id)`` when the user opens a conversation and ``new_chat`` for a fresh one."""

    selected = Signal(int)
    new_chat = Signal()
    deleted = Signal(int)

    def __init__(self, store: ChatStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("convPanel")
        self.store = store
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 12, 4, 10)
        layout.setSpacing(8)
        self.new_button = button("+  New chat", self.new_chat.emit, kind="primary", tip="Start a new conversation (Ctrl+N)")
        layout.addWidget(self.new_button)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search chats…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(lambda _t: self.refresh())
        layout.addWidget(self.search)
        self.model = EditableConversations()
        self.model.renamed.connect(self._rename)
        self.view = QListView()
        self.view.setObjectName("convList")
        self.view.setModel(self.model)
        self.view.setEditTriggers(QListView.EditTrigger.EditKeyPressed)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._menu)
        self.view.clicked.connect(self._clicked)
        self.view.setUniformItemSizes(True)
        self.view.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # long titles are elided
        layout.addWidget(self.view, 1)
        self.current_id: int | None = None

    def refresh(self) -> None:
        # A comparison (two linked conversations, core.chats.compare) is one row: its left side's.
        self.model.set_conversations(one_row_per_comparison(self.store, self.store.list(search=self.search.text().strip())))
        self.select(self.current_id, emit=False)

    def select(self, conversation_id: int | None, *, emit: bool = True) -> None:
        self.current_id = conversation_id
        row = self.model.row_of(conversation_id) if conversation_id is not None else -1
        if row >= 0:
            self.view.setCurrentIndex(self.model.index(row))
        else:
            self.view.clearSelection()
        if emit and conversation_id is not None:
            self.selected.emit(conversation_id)

    def _clicked(self, index: QModelIndex) -> None:
        self.select(int(index.data(ID_ROLE)))

    def rename(self, conversation_id: int) -> None:
        """Start editing a conversation's title in place."""
        row = self.model.row_of(conversation_id)
        if row >= 0:
            self.view.edit(self.model.index(row))

    def _rename(self, conversation_id: int, title: str) -> None:
        if (group := self.store.get(conversation_id).compare_group):
            rename_compare(self.store, group, title)  # both sides keep one title
        else:
            self.store.rename(conversation_id, title)
        self.refresh()

    def delete(self, conversation_id: int) -> None:
        conv = self.store.get(conversation_id)

        def really() -> None:
            if conv.compare_group:
                delete_compare(self.store, conv.compare_group)  # both sides
            else:
                self.store.delete(conversation_id)
            if self.current_id == conversation_id:
                self.current_id = None
            self.refresh()
            self.deleted.emit(conversation_id)

        confirm(self, f"Delete “{conv.title or 'New chat'}”?", "Its messages are deleted too. This cannot be undone.", really)

    def _menu(self, pos: QPoint) -> None:
        index = self.view.indexAt(pos)
        if not index.isValid():
            return
        conv_id = int(index.data(ID_ROLE))
        menu = QMenu(self)
        menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        menu.addAction("Rename", lambda: self.rename(conv_id))
        menu.addAction("Delete…", lambda: self.delete(conv_id))
        menu.popup(self.view.viewport().mapToGlobal(pos))
