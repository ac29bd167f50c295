"""The chat's message box: text, the pictures attached to it, the attach button, Send and Stop."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QBuffer, QByteArray, QEvent, QIODevice, QMimeData, QObject, QSize, Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDragLeaveEvent, QDropEvent, QImageReader, QKeyEvent, QPixmap
from PySide6.QtWidgets import QFrame, QHBoxLayout, QPlainTextEdit, QToolButton, QVBoxLayout, QWidget

from desktop.views.image_attachments import ATTACH_TIP, AttachmentStrip, offer_from_mime
from desktop.views.widgets import button

if TYPE_CHECKING:
    from core.media import PreparedImage


class ComposerEdit(QPlainTextEdit):
    """The text box; a dropped or pasted picture is offered (``images_offered``) instead of typed in as text."""

    images_offered = Signal(object)  # ImageOffer
    drag_hover = Signal(bool)  # pictures are being dragged over the box (True), or no longer (False)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        super().dragEnterEvent(event)
        if offer_from_mime(event.mimeData()) is not None:
            self.drag_hover.emit(True)

    def dragLeaveEvent(self, event: QDragLeaveEvent) -> None:
        super().dragLeaveEvent(event)
        self.drag_hover.emit(False)

    def dropEvent(self, event: QDropEvent) -> None:
        self.drag_hover.emit(False)
        super().dropEvent(event)

    def canInsertFromMimeData(self, source: QMimeData) -> bool:
        return offer_from_mime(source) is not None or super().canInsertFromMimeData(source)

    def insertFromMimeData(self, source: QMimeData) -> None:
        # Qt routes both Ctrl+V and a drop here (QPlainTextEditControl), so one override covers both.
        offer = offer_from_mime(source)
        if offer is not None:
            self.images_offered.emit(offer)
            return
        super().insertFromMimeData(source)


class Composer(QFrame):
    """The message box: Enter sends, Shift+Enter starts a new line; attached pictures show above the text."""

    submitted = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("composer")
        col = QVBoxLayout(self)
        col.setContentsMargins(10, 6, 8, 6)
        col.setSpacing(4)
        self.attachments = AttachmentStrip()
        col.addWidget(self.attachments)
        layout = QHBoxLayout()
        layout.setContentsMargins(0, 0, 0, 0)
        self.attach_button = QToolButton()
        self.attach_button.setObjectName("flat")
        self.attach_button.setIconSize(QSize(20, 20))
        self.attach_button.setText("Image")  # until the window's palette gives it its icon
        self.attach_button.setToolTip(ATTACH_TIP)
        self.attach_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.attach_button.setAccessibleName("Attach a picture")
        self.edit = ComposerEdit()
        self.edit.setObjectName("composerEdit")
        self.edit.setPlaceholderText("Message the model…  (Enter to send, Shift+Enter for a new line)")
        self.edit.setFixedHeight(64)
        self.edit.installEventFilter(self)
        self.send_button = button("Send", self.submitted.emit, kind="primary", tip="Send (Enter)")
        self.stop_button = button("■  Stop", lambda: None, kind="danger", tip="Stop the answer (Esc)")
        self.stop_button.hide()
        layout.addWidget(self.edit, 1)
        layout.addWidget(self.attach_button, 0, Qt.AlignmentFlag.AlignBottom)
        layout.addWidget(self.send_button, 0, Qt.AlignmentFlag.AlignBottom)
        layout.addWidget(self.stop_button, 0, Qt.AlignmentFlag.AlignBottom)
        col.addLayout(layout)

    def set_attach_icon(self, path: str, disabled_colour: str) -> None:
        """The attach button's icon (a recoloured SVG from resources/icons), and a faint one for greyed.

        Qt's own disabled rendering of a dark-theme icon is hardly lighter than the icon itself, so the
        greyed state is drawn from the same SVG in ``disabled_colour`` at half opacity.
        """
        from PySide6.QtGui import QIcon

        if not Path(path).exists():
            return
        svg = Path(path).read_text(encoding="utf-8")
        faint = re.sub(r'stroke="[^"]*"', f'stroke="{disabled_colour}" stroke-opacity="0.5"', svg, count=1)
        icon = QIcon()
        for side in (20, 40):  # 40: a sharp icon on a 2x screen
            icon.addPixmap(_svg_pixmap(svg, side), QIcon.Mode.Normal)
            icon.addPixmap(_svg_pixmap(faint, side), QIcon.Mode.Disabled)
        self.attach_button.setIcon(icon)
        self.attach_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)

    def restore(self, text: str, images: Sequence[PreparedImage]) -> None:
        """Put back a message that could not be sent, unless something new was typed or attached meanwhile."""
        if self.edit.toPlainText().strip() or self.attachments.chips:
            return
        self.edit.setPlainText(text)
        for index, image in enumerate(images):
            self.attachments.add(image, f"Picture {index + 1}")

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.edit and event.type() == QEvent.Type.KeyPress:
            assert isinstance(event, QKeyEvent)
            if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not (
                event.modifiers() & Qt.KeyboardModifier.ShiftModifier
            ):
                self.submitted.emit()
                return True
        return super().eventFilter(watched, event)


def _svg_pixmap(svg: str, side: int) -> QPixmap:
    """An SVG drawn at ``side`` × ``side`` pixels (Qt's svg image plugin, as the window's other icons)."""
    data = QByteArray(svg.encode("utf-8"))
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.ReadOnly)
    reader = QImageReader(buffer, QByteArray(b"svg"))
    reader.setScaledSize(QSize(side, side))
    return QPixmap.fromImage(reader.read())
