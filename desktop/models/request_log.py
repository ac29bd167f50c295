"""The API server's recent requests as a table, newest first (Settings > Server's live log)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QModelIndex, Qt

from desktop.models.table import ColumnsTableModel, Index

if TYPE_CHECKING:
    from core.server import RequestRecord

MAX_ROWS = 500  # enough to see what an app did; a busy client must not grow the window's memory forever


class RequestLogModel(ColumnsTableModel):
    COLUMNS = ("Time", "Client", "Request", "Model", "Tokens", "Tokens/s", "Status")

    def __init__(self) -> None:
        super().__init__()
        self._rows: list[RequestRecord] = []

    def add(self, record: RequestRecord) -> None:
        self.beginInsertRows(QModelIndex(), 0, 0)
        self._rows.insert(0, record)
        self.endInsertRows()
        if len(self._rows) > MAX_ROWS:
            self.beginRemoveRows(QModelIndex(), MAX_ROWS, len(self._rows) - 1)
            del self._rows[MAX_ROWS:]
            self.endRemoveRows()

    def clear(self) -> None:
        self.beginResetModel()
        self._rows.clear()
        self.endResetModel()

    def record(self, row: int) -> RequestRecord:
        return self._rows[row]

    def row_total(self) -> int:
        return len(self._rows)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        r = self._rows[index.row()]
        column = self.COLUMNS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return _cell(r, column)
        if role == Qt.ItemDataRole.ToolTipRole and column in ("Request", "Status"):
            return f"{r.method} {r.path} → {r.status} in {r.seconds:.2f} s"
        if role == Qt.ItemDataRole.TextAlignmentRole and column in ("Tokens", "Tokens/s", "Status"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


def _cell(r: RequestRecord, column: str) -> str:
    if column == "Time":
        return time.strftime("%H:%M:%S", time.localtime(r.time))
    if column == "Client":
        return r.client
    if column == "Request":
        return f"{r.method} {r.path}"
    if column == "Model":
        return r.model or "—"
    if column == "Tokens":
        if not r.prompt_tokens and not r.completion_tokens:
            return "—"
        return f"{r.prompt_tokens:,} → {r.completion_tokens:,}"
    if column == "Tokens/s":
        return f"{r.tokens_per_second:.1f}" if r.completion_tokens else "—"
    return str(r.status)
