"""The Fine-tune form's restatement writer: a chat model of the library rewrites each fact in other words.

With a chat (instruct) model in the library, one tick turns it on; without one, one click downloads the
writer recommended for this machine (``core.hub.writer``) through the window's download queue, and
the row offers it, ticked, once it is in the library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QVBoxLayout, QWidget

from desktop.models.library import LibraryTableModel
from desktop.ops import Executor, Op, error_text
from desktop.views.widgets import button, muted

if TYPE_CHECKING:
    from core.hub.pull import PullPlan
    from core.hub.writer import WriterChoice

WHAT_IT_DOES = ("Each fact is also written in other words, so the model knows it however it is asked. A rewrite "
                "is kept only if it keeps every name, number and date.")


class WriterRow(QWidget):
    """Whether a writer model restates the documents' facts, and which; ``writer()`` is its library name."""

    changed = Signal()
    download_requested = Signal(str, object)  # repo id, QuantGroup (MainWindow.start_download)

    def __init__(self, library: LibraryTableModel, pool: Executor, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from core.hub.writer import recommend_writer

        self.library = library
        self.pool = pool
        self.choice: WriterChoice = recommend_writer()
        self._awaiting = False  # the recommended writer is downloading: tick it when it arrives
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(4)
        row = QHBoxLayout()
        row.setSpacing(8)
        self.check = QCheckBox("Write restatements with")
        self.check.setToolTip(WHAT_IT_DOES)
        self.check.toggled.connect(lambda _b: self._changed())
        self.combo = QComboBox()
        self.combo.setMinimumWidth(240)
        self.combo.currentIndexChanged.connect(lambda _i: self._changed())
        self.get_button = button(f"Get a writer: {self.choice.label}", self.download,
                                 tip=f"Downloads {self.choice.repo_id} ({self.choice.filename}) into your library")
        row.addWidget(self.check)
        row.addWidget(self.combo)
        row.addWidget(self.get_button)
        row.addStretch(1)
        col.addLayout(row)
        self.note = muted("")
        self.note.setWordWrap(True)
        col.addWidget(self.note)
        library.modelReset.connect(self.refresh)
        self.refresh()

    def writers(self) -> list[str]:
        """The library's chat models: a base model without a chat template cannot be asked to rewrite."""
        return [e.name for e in self.library.entries() if e.has_chat_template and e.exists]

    def refresh(self) -> None:
        current = self.combo.currentText()
        names = self.writers()
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItems(names)
        arrived = next((e.name for e in self.library.entries() if e.repo == self.choice.repo_id and e.name in names),
                       None)
        if self._awaiting and arrived:
            self._awaiting = False
            self.combo.setCurrentText(arrived)
            self.check.setChecked(True)
        elif current in names:
            self.combo.setCurrentText(current)
        self.combo.blockSignals(False)
        self._show()

    def _show(self) -> None:
        have = self.combo.count() > 0
        self.check.setVisible(have)
        self.combo.setVisible(have)
        self.get_button.setVisible(not have and not self._awaiting)
        if not self.note.property("error"):
            if self._awaiting:
                self.note.setText(f"Downloading {self.choice.title}: it is offered here when it is in your library.")
            elif have:
                self.note.setText(WHAT_IT_DOES if self.check.isChecked() else "")
            else:
                self.note.setText("No chat model in your library yet to rewrite your documents' facts in other "
                                  "words; the rules do it alone.")
        self.note.setVisible(bool(self.note.text()))

    def _changed(self) -> None:
        self.combo.setEnabled(self.check.isChecked())
        self._show()
        self.changed.emit()

    def writer(self) -> str | None:
        """The library name of the chosen writer, or None when no writer is used."""
        return self.combo.currentText() or None if self.check.isChecked() and self.combo.count() else None

    def download(self) -> None:
        """Find the recommended writer's file on the Hub and hand it to the download queue."""
        from core.hub import plan_pull

        name = self.choice.pull_name
        self.get_button.setEnabled(False)
        self.get_button.setText("Finding the file…")
        self.note.setProperty("error", False)
        Op(lambda: plan_pull(name)).on_success(self._planned).on_failure(self._failed).run(self.pool)

    def _planned(self, plan: PullPlan) -> None:
        self._awaiting = True
        self._restore_button()
        self.download_requested.emit(plan.repo_id, plan.group)
        self._show()

    def _failed(self, exc: BaseException) -> None:
        self._restore_button()
        self.note.setProperty("error", True)
        self.note.setText(error_text(exc))
        self._show()
        self.note.setProperty("error", False)  # the next change of state replaces it

    def _restore_button(self) -> None:
        self.get_button.setEnabled(True)
        self.get_button.setText(f"Get a writer: {self.choice.label}")
