"""Downloads: the queue with a progress bar per model, speed, time left, pause/resume/cancel."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect, Qt, Signal, SignalInstance
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QWidget,
)

from desktop.models.downloads import PROGRESS_ROLE, TASK_ID_ROLE, DownloadQueueModel
from desktop.views.widgets import button, muted, page, title


class ProgressDelegate(QStyledItemDelegate):
    """Draws the Progress column as a thin rounded bar with the byte counts beside it."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.track = QColor("#dfe2e7")
        self.fill = QColor("#d9692b")

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> None:
        super().paint(painter, option, QModelIndex())  # selection background only
        rect: QRect = option.rect  # type: ignore[attr-defined]
        fraction = index.data(PROGRESS_ROLE)
        text = str(index.data(Qt.ItemDataRole.DisplayRole))
        if fraction is not None and fraction >= 0:
            text += f"  ·  {fraction * 100:.0f}%"
        text_width = min(rect.width() // 2, 215)
        bar = QRect(rect.left() + 6, rect.center().y() - 3, rect.width() - text_width - 18, 6)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(self.track)
        painter.drawRoundedRect(bar, 3, 3)
        if fraction is not None and fraction > 0:
            done = QRect(bar.left(), bar.top(), max(6, int(bar.width() * min(1.0, fraction))), bar.height())
            painter.setBrush(self.fill)
            painter.drawRoundedRect(done, 3, 3)
        painter.setPen(option.palette.color(QPalette.ColorRole.Text))  # type: ignore[attr-defined]
        text_rect = QRect(bar.right() + 12, rect.top(), text_width, rect.height())
        painter.drawText(text_rect, int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft), text)
        painter.restore()


class DownloadsPage(QWidget):
    pause_requested = Signal(int)
    resume_requested = Signal(int)
    cancel_requested = Signal(int)

    def __init__(self, queue: DownloadQueueModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.queue = queue
        body, layout = page()
        outer = QHBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(body)
        head = QHBoxLayout()
        head.addWidget(title("Downloads"))
        head.addStretch(1)
        self.pause_button = button("Pause", lambda: self._act(self.pause_requested))
        self.resume_button = button("Resume", lambda: self._act(self.resume_requested))
        self.cancel_button = button("Cancel", lambda: self._act(self.cancel_requested), kind="danger")
        for b in (self.pause_button, self.resume_button, self.cancel_button):
            head.addWidget(b)
        layout.addLayout(head)
        layout.addWidget(muted("Models land in My Models once every file has arrived and matches its checksum."))
        self.table = QTableView()
        self.table.setModel(queue)
        self.progress_delegate = ProgressDelegate(self.table)
        self.table.setItemDelegateForColumn(1, self.progress_delegate)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(36)
        self.table.setShowGrid(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        # The progress bar takes the room that is left: a fixed 430 px pushed Status out of sight at the
        # window's smallest size.
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setStretchLastSection(False)
        for column in range(2, self.table.model().columnCount()):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setWordWrap(True)
        layout.addWidget(self.table, 1)
        self.empty = muted("No downloads yet: find a model in Discover.")
        layout.addWidget(self.empty)
        queue.rowsInserted.connect(lambda *_: self._changed())
        queue.dataChanged.connect(lambda *_: self._changed())
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._changed())
        self._changed()

    def set_palette(self, track: str, fill: str) -> None:
        self.progress_delegate.track = QColor(track)
        self.progress_delegate.fill = QColor(fill)
        self.table.viewport().update()

    def selected_task(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows and self.queue.rowCount() == 1:
            return int(self.queue.index(0, 0).data(TASK_ID_ROLE))
        return int(rows[0].data(TASK_ID_ROLE)) if rows else None

    def _act(self, signal: SignalInstance) -> None:
        task_id = self.selected_task()
        if task_id is not None:
            signal.emit(task_id)

    def _changed(self) -> None:
        self.empty.setVisible(self.queue.rowCount() == 0)
        task_id = self.selected_task()
        state = None
        for row in range(self.queue.rowCount()):
            p = self.queue.progress(row)
            if p.task_id == task_id:
                state = p.state
        active = state in ("queued", "downloading", "paused")
        self.pause_button.setEnabled(state in ("queued", "downloading"))
        self.resume_button.setEnabled(state == "paused")
        self.cancel_button.setEnabled(active)
