"""The library as a table: one row per model (``core.library.ModelEntry``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt

from core.library import ModelEntry
from core.units import human_count, human_size
from desktop.models.table import ColumnsTableModel, Index

ENTRY_ROLE = Qt.ItemDataRole.UserRole + 1


class LibraryTableModel(ColumnsTableModel):
    """Library models with the columns of My Models; column 0 doubles as the model picker's list."""

    COLUMNS = ("Name", "Architecture", "Parameters", "Quant", "Size", "Context", "Location")

    def __init__(self) -> None:
        super().__init__()
        self._entries: list[ModelEntry] = []

    def set_entries(self, entries: list[ModelEntry]) -> None:
        self.beginResetModel()
        self._entries = list(entries)
        self.endResetModel()

    def entries(self) -> list[ModelEntry]:
        return list(self._entries)

    def entry(self, row: int) -> ModelEntry:
        return self._entries[row]

    def row_of(self, name: str) -> int:
        return next((i for i, e in enumerate(self._entries) if e.name == name), -1)

    def row_total(self) -> int:
        return len(self._entries)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        e = self._entries[index.row()]
        if role == ENTRY_ROLE:
            return e
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(e, index.column())
        if role == Qt.ItemDataRole.ToolTipRole:
            return e.path if index.column() == 6 else (e.general_name or e.name)
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() in (2, 4, 5):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    @staticmethod
    def _display(e: ModelEntry, column: int) -> str:
        if column == 0:
            return e.name
        if column == 1:
            return e.architecture
        if column == 2:
            return human_count(e.parameters)
        if column == 3:
            return e.file_type or "-"
        if column == 4:
            return human_size(e.size_bytes)
        if column == 5:
            return f"{e.context_length:,}" if e.context_length else "-"
        where = {"hf-cache": "Hugging Face cache", "link": "linked in place"}.get(e.source)
        return where or str(Path(e.path).parent)
