"""The download queue as a table, updated from ``DownloadProgress`` reports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QModelIndex, Qt

from core.units import human_duration, human_size, human_speed
from desktop.models.table import ColumnsTableModel, Index

if TYPE_CHECKING:
    from core.hub import DownloadProgress

PROGRESS_ROLE = Qt.ItemDataRole.UserRole + 1  # fraction 0..1, or -1 when unknown
TASK_ID_ROLE = Qt.ItemDataRole.UserRole + 2

STATE_WORDS = {
    "queued": "Queued", "downloading": "Downloading", "paused": "Paused", "verifying": "Verifying",
    "done": "Done", "failed": "Failed", "cancelled": "Cancelled",
}


class DownloadQueueModel(ColumnsTableModel):
    COLUMNS = ("Model", "Progress", "Speed", "Time left", "Status")

    def __init__(self) -> None:
        super().__init__()
        self._rows: list[DownloadProgress] = []
        self._labels: dict[int, str] = {}

    def add_task(self, progress: DownloadProgress, label: str) -> None:
        """Name a task; its first report may already be here (reports come from other threads)."""
        self._labels[progress.task_id] = label
        for row, old in enumerate(self._rows):
            if old.task_id == progress.task_id:
                self.dataChanged.emit(self.index(row, 0), self.index(row, 0))
                return
        self.update(progress)

    def update(self, progress: DownloadProgress) -> None:
        for row, old in enumerate(self._rows):
            if old.task_id == progress.task_id:
                self._rows[row] = progress
                self.dataChanged.emit(self.index(row, 0), self.index(row, len(self.COLUMNS) - 1))
                return
        self.beginInsertRows(QModelIndex(), len(self._rows), len(self._rows))
        self._rows.append(progress)
        self.endInsertRows()

    def progress(self, row: int) -> DownloadProgress:
        return self._rows[row]

    def row_total(self) -> int:
        return len(self._rows)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        p = self._rows[index.row()]
        col = index.column()
        if role == TASK_ID_ROLE:
            return p.task_id
        if role == PROGRESS_ROLE:
            return p.fraction if p.fraction is not None else -1.0
        if role == Qt.ItemDataRole.ToolTipRole:
            return p.message or STATE_WORDS.get(p.state, p.state)
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if col == 0:
            return self._labels.get(p.task_id, p.repo)
        if col == 1:
            return f"{human_size(p.done)} of {human_size(p.total)}"
        if col == 2:
            return human_speed(p.speed) if p.state == "downloading" else "-"
        if col == 3:
            return human_duration(p.eta) if p.state == "downloading" else "-"
        word = STATE_WORDS.get(p.state, p.state)
        if p.state in ("failed", "cancelled") or (p.message and p.message.startswith("Retrying")):
            return f"{word}: {p.message}" if p.message else word
        return word
