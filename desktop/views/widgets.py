"""Small widgets the pages share: an in-place error banner, titles, a confirmation box."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)


class Banner(QFrame):
    """A dismissable message shown in place (errors from the engine, the Hub, imports)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(12, 8, 8, 8)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton()
        close.setObjectName("flat")
        close.setText("✕")
        close.setToolTip("Dismiss")
        close.clicked.connect(self.hide)
        layout.addWidget(self.label, 1)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_message(self, text: str) -> None:
        self.label.setText(text)
        self.show()

    @property
    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""


def title(text: str, name: str = "pageTitle") -> QLabel:
    label = QLabel(text)
    label.setObjectName(name)
    return label


def muted(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setObjectName("muted")
    label.setWordWrap(True)
    return label


def button(text: str, on_click: Callable[[], None] | None = None, *, kind: str = "", tip: str = "") -> QPushButton:
    b = QPushButton(text)
    if kind:
        b.setObjectName(kind)
    if tip:
        b.setToolTip(tip)
    if on_click is not None:
        b.clicked.connect(lambda _=False: on_click())
    b.setCursor(Qt.CursorShape.PointingHandCursor)
    return b


def flat_button(text: str, on_click: Callable[[], None], tip: str = "") -> QToolButton:
    b = QToolButton()
    b.setObjectName("flat")
    b.setText(text)
    b.setToolTip(tip)
    b.setCursor(Qt.CursorShape.PointingHandCursor)
    b.clicked.connect(lambda _=False: on_click())
    return b


def page(parent: QWidget | None = None) -> tuple[QWidget, QVBoxLayout]:
    w = QWidget(parent)
    w.setObjectName("page")
    layout = QVBoxLayout(w)
    layout.setContentsMargins(24, 20, 24, 20)
    layout.setSpacing(12)
    return w, layout


def confirm(parent: QWidget, text: str, detail: str, on_yes: Callable[[], None], yes_text: str = "Delete") -> QMessageBox:
    """Ask before something that cannot be undone; window-modal and non-blocking (``open``)."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("Hearth")
    box.setText(text)
    box.setInformativeText(detail)
    yes = box.addButton(yes_text, QMessageBox.ButtonRole.DestructiveRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)

    def done(_result: int) -> None:
        if box.clickedButton() is yes:
            on_yes()

    box.finished.connect(done)
    box.open()
    return box
