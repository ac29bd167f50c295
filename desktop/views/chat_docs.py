"""The chat's documents: the "Use my documents" switch with its collection, and the sources under an answer."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core.docs.context import Source
from desktop.views.widgets import flat_button, muted


class DocsToggle(QWidget):
    """A check box and a collection picker; ``collection()`` is '' while off."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(4, 0, 4, 0)
        row.setSpacing(8)
        self.check = QCheckBox("Use my documents")
        self.check.setToolTip("Answer from the passages of a collection that match the question (Knowledge)")
        self.check.toggled.connect(self._toggled)
        self.picker = QComboBox()
        self.picker.setMinimumWidth(160)
        self.picker.setToolTip("The collection to search")
        self.picker.activated.connect(lambda _i: self.changed.emit())
        self.note = muted("")
        self.note.setWordWrap(False)
        row.addWidget(self.check)
        row.addWidget(self.picker)
        row.addWidget(self.note, 1)
        self.set_collections([])

    def set_collections(self, names: list[str]) -> None:
        chosen = self.picker.currentText()
        self.picker.blockSignals(True)
        self.picker.clear()
        self.picker.addItems(names)
        if chosen in names:
            self.picker.setCurrentText(chosen)
        self.picker.blockSignals(False)
        self.check.setEnabled(bool(names))
        if not names:
            self.check.setChecked(False)
            self.check.setToolTip("Make a collection of your files in Knowledge first")
        self._toggled(self.check.isChecked())

    def collection(self) -> str:
        return self.picker.currentText() if self.check.isChecked() else ""

    def set_collection(self, name: str) -> None:
        """Turn on with ``name`` (when it exists), or off for ''."""
        known = self.picker.findText(name) >= 0 if name else False
        if known:
            self.picker.setCurrentText(name)
        self.check.blockSignals(True)
        self.check.setChecked(known)
        self.check.blockSignals(False)
        self._toggled(known, emit=False)
        if name and not known:
            self.note.setText(f"This chat used the collection {name}, which is no longer there.")

    def _toggled(self, on: bool, emit: bool = True) -> None:
        self.picker.setVisible(on)
        self.note.setText("")
        if emit:
            self.changed.emit()


class SourcesStrip(QFrame):
    """"Sources" and one link per passage the answer was given; a click shows that passage's text below."""

    def __init__(self, sources: list[Source], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("sources")
        self.sources = sources
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 4, 0, 0)
        col.setSpacing(2)
        head = QLabel("Sources")
        head.setObjectName("muted")
        col.addWidget(head)
        self.links: list[QToolButton] = []
        for source in sources:
            link = flat_button(source.label, self._shower(source), "Show the passage")
            link.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            row = QHBoxLayout()
            row.setContentsMargins(0, 0, 0, 0)
            row.addWidget(link)
            row.addStretch(1)
            col.addLayout(row)
            self.links.append(link)
        self.passage = QLabel("")
        self.passage.setObjectName("passage")
        self.passage.setWordWrap(True)
        self.passage.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.passage.hide()
        col.addWidget(self.passage)
        self.shown: Source | None = None

    def _shower(self, source: Source) -> Callable[[], None]:
        return lambda: self.show_source(source)

    def show_source(self, source: Source) -> None:
        """Show ``source``'s passage (a second click on the same one hides it)."""
        if self.shown == source and not self.passage.isHidden():
            self.passage.hide()
            self.shown = None
            return
        self.shown = source
        self.passage.setText(f"{source.label}\n\n{source.text}")
        self.passage.show()
