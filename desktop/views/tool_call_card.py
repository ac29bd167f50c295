"""A tool call in the transcript: the tool, its arguments, Allow / Always allow / Deny, then the result.

Arguments and results are data from the model and from the tool's server: they are shown as plain
text only (``QTextEdit.setPlainText``, ``QLabel`` with ``Qt.TextFormat.PlainText``), never as HTML or
Markdown, so a result that contains markup or links shows it literally and cannot act on the window.
"""

from __future__ import annotations

import json

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QFontDatabase, QResizeEvent, QTextOption
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from desktop.theme import LIGHT, Palette
from desktop.views.widgets import button, flat_button

# What the badge says in each state of a call.
STATUS_WORDS = {
    "waiting": "Waiting for you",
    "running": "Running…",
    "ok": "Done",
    "error": "Failed",
    "denied": "Denied",
    "not_run": "Not run",
}
ALWAYS_TIP = "Run this tool without asking until Hearth closes"


def pretty_arguments(arguments: str) -> str:
    """The model's JSON arguments indented for reading; anything that is not JSON as it was written."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return arguments
    return json.dumps(value, indent=2, ensure_ascii=False)


def plain_label(text: str = "", name: str = "") -> QLabel:
    """A label that never interprets its text as rich text (QLabel guesses HTML by default)."""
    label = QLabel()
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    if name:
        label.setObjectName(name)
    label.setText(text)
    return label


class PlainBlock(QTextEdit):
    """Read-only monospace plain text that grows with its text up to ``max_height``, then scrolls."""

    def __init__(self, text: str = "", max_height: int = 220, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("toolText")
        self.setReadOnly(True)
        self.setAcceptRichText(False)
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        # Long unbroken JSON strings wrap anywhere rather than widening the transcript.
        self.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.document().setDocumentMargin(4)
        self.max_height = max_height
        self.set_text(text)

    def set_text(self, text: str) -> None:
        self.setPlainText(text)
        self._fit()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        self.document().setTextWidth(max(50, self.viewport().width()))
        wanted = int(self.document().size().height()) + 2 * self.frameWidth() + 2
        height = min(wanted, self.max_height)
        self.setVerticalScrollBarPolicy(
            Qt.ScrollBarPolicy.ScrollBarAsNeeded if wanted > self.max_height else Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        if self.height() != height:
            self.setFixedHeight(height)

    def sizeHint(self) -> QSize:
        return QSize(300, min(self.max_height, int(self.document().size().height()) + 6))


class ToolCallCard(QFrame):
    """One call: waiting for the user's answer, running, or finished with its result.

    ``decided`` carries (call id, "once" | "always" | "deny"); the window passes it to the chat
    controller, which releases the engine thread waiting in the session's approval.
    """

    decided = Signal(str, str)

    def __init__(
        self, call_id: str, tool: str, arguments: str, palette: Palette = LIGHT, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("toolCard")
        self.call_id = call_id
        self.tool = tool
        self.arguments_text = arguments
        self.palette_ = palette
        self.status = "waiting"
        self.result_text = ""
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 10, 14, 10)
        layout.setSpacing(6)

        head = QHBoxLayout()
        head.setSpacing(8)
        self.title = plain_label(f"Tool call · {tool}", "sectionTitle")
        self.title.setWordWrap(True)
        head.addWidget(self.title, 1)
        self.badge = QLabel()
        self.badge.setObjectName("badge")
        head.addWidget(self.badge, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(head)

        self.arguments = PlainBlock(pretty_arguments(arguments), max_height=180)
        self.arguments.setToolTip("The arguments the model wrote for this tool")
        layout.addWidget(self.arguments)

        # One sentence: what is asked of the user, or why the call failed (dead server, timeout).
        self.note = plain_label("", "muted")
        layout.addWidget(self.note)

        self.buttons = QWidget()
        row = QHBoxLayout(self.buttons)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(6)
        self.allow_button = button("Allow once", lambda: self._decide("once"), kind="primary",
                                   tip="Run this call now")
        self.always_button = button("Always allow this tool", lambda: self._decide("always"), tip=ALWAYS_TIP)
        self.deny_button = button("Deny", lambda: self._decide("deny"), kind="danger",
                                  tip="Do not run it: the model is told the call was refused")
        row.addWidget(self.allow_button)
        row.addWidget(self.always_button)
        row.addWidget(self.deny_button)
        row.addStretch(1)
        layout.addWidget(self.buttons)

        result_row = QHBoxLayout()
        result_row.setContentsMargins(0, 0, 0, 0)
        self.result_toggle = flat_button("Show result", self.toggle_result, "Show or hide what the tool returned")
        result_row.addWidget(self.result_toggle)
        result_row.addStretch(1)
        layout.addLayout(result_row)
        self.result = PlainBlock("", max_height=260)
        self.result.setToolTip("What the tool returned, as plain text")
        layout.addWidget(self.result)
        self.result.hide()
        self.result_toggle.hide()
        self.set_waiting()

    # -- states --------------------------------------------------------------------------------
    def set_waiting(self) -> None:
        """Ask the user: the engine thread waits for one of the three buttons."""
        self._set_status("waiting")
        self.note.setText("The model wants to run this tool. Nothing runs until you allow it.")
        self.note.setObjectName("muted")
        self.buttons.show()

    def set_running(self, always: bool = False) -> None:
        self._set_status("running")
        self.buttons.hide()
        self.note.setText("Allowed for the rest of this session." if always else "")
        self.note.setVisible(bool(self.note.text()))

    def set_result(self, text: str, status: str) -> None:
        """Show how the call ended: ``status`` is "ok", "error", "denied" or "not_run"."""
        self.result_text = text
        self._set_status(status)
        self.buttons.hide()
        self.result.set_text(text)
        if status == "error":
            # The one sentence (dead server, timeout) is the result: shown at once, in red.
            self._set_note(text.strip().splitlines()[0] if text.strip() else "The tool failed.", error=True)
            self.result_toggle.setVisible(len(text.strip().splitlines()) > 1)
        elif status == "denied":
            self._set_note("Not run: the model was told the call was refused.", error=False)
            self.result_toggle.hide()
        elif status == "not_run":
            self._set_note("This call was never answered (the reply was stopped).", error=False)
            self.result_toggle.hide()
        else:
            lines = text.count("\n") + 1 if text else 0
            self._set_note("", error=False)
            self.result_toggle.setVisible(True)
            self.result_toggle.setToolTip(f"Show what the tool returned ({lines} line{'s' if lines != 1 else ''})")
        self.result.hide()
        self.result_toggle.setText("Show result")

    def toggle_result(self) -> None:
        shown = self.result.isHidden()
        self.result.setVisible(shown)
        self.result_toggle.setText("Hide result" if shown else "Show result")

    def set_palette(self, palette: Palette) -> None:
        self.palette_ = palette
        self._set_status(self.status)

    # -- inside --------------------------------------------------------------------------------
    def _decide(self, decision: str) -> None:
        if self.status != "waiting":
            return
        if decision == "deny":
            self._set_status("denied")
            self.buttons.hide()
            self.note.setText("")
        else:
            self.set_running(always=decision == "always")
        self.decided.emit(self.call_id, decision)

    def _set_note(self, text: str, *, error: bool) -> None:
        self.note.setObjectName("errorText" if error else "muted")
        self.note.setStyleSheet(f"color: {self.palette_.danger};" if error else "")
        self.note.setText(text)
        self.note.setVisible(bool(text))

    def _set_status(self, status: str) -> None:
        self.status = status
        p = self.palette_
        colour = {"waiting": p.warn, "ok": p.ok, "error": p.danger}.get(status, p.muted)
        self.badge.setText(STATUS_WORDS.get(status, status))
        self.badge.setStyleSheet(f"color: {colour}; border: 1px solid {colour};")
        self.setStyleSheet(
            f"QFrame#toolCard {{ background: {p.surface}; border: 1px solid "
            f"{p.warn if status == 'waiting' else p.border}; border-radius: 10px; }}"
            f"QTextEdit#toolText {{ background: {p.code_bg}; border: none; border-radius: 6px; }}")
