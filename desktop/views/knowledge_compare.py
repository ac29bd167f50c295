""""Which helps here?": base, retrieval, fine-tune and both scored on one collection, as a table and bars.

The scoring is ``core.docs.compare.compare_collection``; this view picks the base model (and an
adapter trained on it), runs it in the background with progress and Cancel, and shows the result.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.docs.compare import compare_collection
from core.finetune.adapters import find_base, list_adapters
from core.library import ModelEntry
from desktop.models.library import LibraryTableModel
from desktop.ops import Executor, Op, error_text
from desktop.theme import LIGHT, Palette
from desktop.views.widgets import Banner, button, flat_button, muted


class ComparisonView(QWidget):
    """Pick a model, run the comparison, read the table, the bars and the one-sentence advice."""

    # (CompareSide, CompareSide): read the set-ups' answers side by side in Chat's Compare mode
    side_by_side_requested = Signal(object, object)

    def __init__(self, library: LibraryTableModel, pool: Executor, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.library = library
        self.pool = pool
        self.collection = ""
        self.result: Any = None
        self._cancel: threading.Event | None = None
        self.palette_: Palette = LIGHT
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 10, 0, 0)
        col.setSpacing(8)
        col.addWidget(muted(
            "Hearth makes fill-in-the-blank questions from sentences of these documents and asks them four ways: "
            "the model alone, the model with retrieved passages, the tuned adapter, and the adapter with passages. "
            "The scores say whether retrieval, fine-tuning or both answer your documents best."))
        row = QHBoxLayout()
        self.base_picker = QComboBox()
        self.base_picker.setMinimumWidth(220)
        self.base_picker.setToolTip("The model to answer the questions (a chat model from your library)")
        self.base_picker.activated.connect(lambda _i: self.refresh_adapters())
        self.adapter_picker = QComboBox()
        self.adapter_picker.setMinimumWidth(170)
        self.adapter_picker.setToolTip("An adapter trained on this model: adds the fine-tuned set-ups")
        self.run_button = button("Run comparison", self.run, kind="primary")
        self.cancel_button = button("Cancel", self.cancel)
        self.cancel_button.hide()
        row.addWidget(QLabel("Model"))
        row.addWidget(self.base_picker)
        row.addWidget(self.adapter_picker)
        row.addStretch(1)
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        col.addLayout(row)
        progress_row = QHBoxLayout()
        self.bar = QProgressBar()
        self.bar.setFixedWidth(180)
        self.bar.hide()
        self.progress_label = muted("")
        progress_row.addWidget(self.bar)
        progress_row.addWidget(self.progress_label, 1)
        col.addLayout(progress_row)
        self.banner = Banner()
        col.addWidget(self.banner)
        self.recommendation = QLabel("")
        self.recommendation.setObjectName("sectionTitle")
        self.recommendation.setWordWrap(True)
        self.recommendation.hide()
        col.addWidget(self.recommendation)
        self.side_by_side = flat_button("⇆  Open side by side in Chat", self.open_side_by_side,
                                        "Ask your own questions with two of these set-ups answering side by side")
        self.side_by_side.hide()
        col.addWidget(self.side_by_side, 0, Qt.AlignmentFlag.AlignLeft)
        results = QHBoxLayout()
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Set-up", "Right", "Share"])
        self.table.verticalHeader().hide()
        self.table.setShowGrid(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.setMaximumWidth(380)
        # The chart is made with the first result: pyqtgraph's plot makes parentless context menus.
        self.chart: Any = None
        self.bars: Any = None
        results.addWidget(self.table, 2)
        self._results_row = results
        self.results = QWidget()
        self.results.setLayout(results)
        self.results.hide()
        col.addWidget(self.results, 1)
        col.addStretch(0)
        library.modelReset.connect(self.refresh_models)
        self.refresh_models()
        self.set_palette(LIGHT)

    # -- choices ---------------------------------------------------------------------------------
    def set_collection(self, name: str) -> None:
        if name != self.collection:
            self.collection = name
            self.result = None
            self.results.hide()
            self.recommendation.hide()
            self.side_by_side.hide()
            self.banner.hide()

    def refresh_models(self) -> None:
        chosen = self.base_picker.currentText()
        self.base_picker.clear()
        for entry in self.library.entries():
            self.base_picker.addItem(entry.name)
        if chosen:
            self.base_picker.setCurrentIndex(max(0, self.base_picker.findText(chosen)))
        self.refresh_adapters()

    def refresh_adapters(self) -> None:
        base = self.base_picker.currentText()
        models = self.library.entries()
        mine = [a.name for a in list_adapters() if (b := find_base(a, models)) is not None and b.name == base]
        self.adapter_picker.clear()
        self.adapter_picker.addItem("No adapter", "")
        for name in mine:
            self.adapter_picker.addItem(name, name)
        self.adapter_picker.setVisible(bool(mine))

    def _entry(self) -> ModelEntry | None:
        row = self.library.row_of(self.base_picker.currentText())
        return self.library.entry(row) if row >= 0 else None

    # -- running ---------------------------------------------------------------------------------
    def run(self) -> None:
        entry = self._entry()
        if not self.collection or self._cancel is not None:
            return
        if entry is None:
            self.banner.show_message("Pick a model to answer the questions (import one in My Models).")
            return
        adapter = str(self.adapter_picker.currentData() or "") or None
        name = self.collection
        cancel = threading.Event()
        self._cancel = cancel
        self.banner.hide()
        self.run_button.hide()
        self.cancel_button.show()
        self.cancel_button.setEnabled(True)
        self.bar.setRange(0, 0)
        self.bar.show()
        self.progress_label.setText(f"Loading {entry.name} and writing questions from the documents…")

        def work(report: Callable[[Any], None]) -> Any:
            # compare_collection reports progress(message, fraction).
            return compare_collection(name, entry.name, adapter=adapter, cancel=cancel,
                                      progress=lambda message, fraction: report((str(message), float(fraction))))

        Op(work).on_progress(self._progress).on_success(self._done).on_failure(self._failed).run(self.pool)

    def open_side_by_side(self) -> None:
        """The comparison's set-ups in Chat's Compare mode: with an adapter, retrieval (the model with the
        collection's passages) vs fine-tuning (the adapter); without, the model alone vs with the passages."""
        from core.chats.compare import CompareSide

        entry = self._entry()
        if entry is None or not self.collection:
            return
        adapter = str(self.adapter_picker.currentData() or "")
        left = CompareSide(entry.name, docs=self.collection)
        right = CompareSide(entry.name, adapter=adapter) if adapter else CompareSide(entry.name)
        if adapter:
            self.side_by_side_requested.emit(left, right)
        else:
            self.side_by_side_requested.emit(right, left)

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self.cancel_button.setEnabled(False)
            self.progress_label.setText("Stopping after the current question…")

    def _progress(self, p: Any) -> None:
        if isinstance(p, tuple):
            message, fraction = p
            self.bar.setRange(0, 1000)
            self.bar.setValue(round(fraction * 1000))
            self.progress_label.setText(f"{message} ({fraction:.0%})")
            return
        fraction = getattr(p, "fraction", None)
        if fraction is not None:
            self.bar.setRange(0, 1000)
            self.bar.setValue(round(fraction * 1000))
        message = getattr(p, "message", "") or ""
        done, total = getattr(p, "done", None), getattr(p, "total", None)
        if total:
            self.progress_label.setText(f"Question {int(done or 0)} of {int(total)}" + (f" · {message}" if message else ""))
        elif message:
            self.progress_label.setText(message)

    def _finish(self) -> None:
        self._cancel = None
        self.bar.hide()
        self.cancel_button.hide()
        self.run_button.show()

    def _done(self, result: Any) -> None:
        self._finish()
        self.progress_label.setText("")
        self.show_result(result)

    def _failed(self, exc: BaseException) -> None:
        cancelled = self._cancel is not None and self._cancel.is_set()
        self._finish()
        if cancelled:
            self.progress_label.setText("Comparison cancelled.")
        else:
            self.progress_label.setText("")
            self.banner.show_message(error_text(exc))

    # -- showing ---------------------------------------------------------------------------------
    def show_result(self, result: Any) -> None:
        self.result = result
        setups = list(result.setups)
        self.table.setRowCount(len(setups))
        for i, s in enumerate(setups):
            share = s.right / s.total if s.total else 0.0
            cells = [s.label, f"{s.right}/{s.total}", f"{share:.0%}"]
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if j:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        self.recommendation.setText(str(result.recommendation))
        self.recommendation.show()
        self.side_by_side.show()
        self._draw()
        self.results.show()

    def ensure_chart(self) -> Any:
        if self.chart is None:
            import pyqtgraph as pg

            self.chart = pg.PlotWidget()
            self.chart.setMenuEnabled(False)
            self.chart.setMouseEnabled(x=False, y=False)
            self.chart.hideButtons()
            self.chart.setLabel("left", "answered right (%)")
            self.chart.setYRange(0, 100)
            self.chart.setMinimumHeight(220)
            self._results_row.addWidget(self.chart, 3)
            self._style_chart()
        return self.chart

    def _draw(self) -> None:
        if self.result is None:
            return
        import pyqtgraph as pg

        self.ensure_chart()
        setups = list(self.result.setups)
        if self.bars is not None:
            self.chart.removeItem(self.bars)
        heights = [100.0 * s.right / s.total if s.total else 0.0 for s in setups]
        best = max(heights, default=0.0)
        brushes = [pg.mkBrush(self.palette_.accent if h == best and best > 0 else self.palette_.border)
                   for h in heights]
        self.bars = pg.BarGraphItem(x=list(range(len(setups))), height=heights, width=0.6, brushes=brushes,
                                    pen=pg.mkPen(None))
        self.chart.addItem(self.bars)
        self.chart.getAxis("bottom").setTicks([[(i, s.label) for i, s in enumerate(setups)]])
        self.chart.setXRange(-0.6, len(setups) - 0.4, padding=0)

    def set_palette(self, p: Palette) -> None:
        self.palette_ = p
        if self.chart is not None:
            self._style_chart()
        self._draw()

    def _style_chart(self) -> None:
        import pyqtgraph as pg

        p = self.palette_
        self.chart.setBackground(p.surface)
        for name in ("bottom", "left"):
            axis = self.chart.getAxis(name)
            axis.setPen(pg.mkPen(p.muted))
            axis.setTextPen(pg.mkPen(p.muted))

    def shutdown(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
