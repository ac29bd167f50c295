"""Pictures in the chat: thumbnails (in the composer and in messages) and the larger view a click opens."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QGuiApplication, QKeyEvent, QMouseEvent, QPainter, QPainterPath, QPixmap
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from core.chats import ChatStore
from core.errors import HearthError
from desktop.views.widgets import muted

MESSAGE_THUMB = 132  # longest side of a picture in a message, in pixels
VIEW_FRACTION = 0.8  # the larger view fills at most this much of the screen

# Decoded thumbnails by (key, side): a reload of the transcript (after every answer) redraws every
# message, and decoding each stored picture again each time would make long chats sluggish.
_THUMBS: OrderedDict[tuple[str, int], QPixmap] = OrderedDict()
_THUMBS_KEPT = 64


def decode(data: bytes) -> QPixmap | None:
    """The picture in ``data`` (PNG/JPEG/WebP bytes), or None when Qt cannot read it."""
    pixmap = QPixmap()
    return pixmap if pixmap.loadFromData(data) and not pixmap.isNull() else None


def thumbnail(data: bytes, side: int, key: str = "") -> QPixmap | None:
    """``data`` scaled to fit a ``side``×``side`` box, corners rounded; cached under ``key`` when given."""
    if key and (key, side) in _THUMBS:
        _THUMBS.move_to_end((key, side))
        return _THUMBS[(key, side)]
    full = decode(data)
    if full is None:
        return None
    scaled = full.scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
    rounded = QPixmap(scaled.size())
    rounded.fill(Qt.GlobalColor.transparent)
    painter = QPainter(rounded)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    path = QPainterPath()
    path.addRoundedRect(0, 0, scaled.width(), scaled.height(), 6, 6)
    painter.setClipPath(path)
    painter.drawPixmap(0, 0, scaled)
    painter.end()
    if key:
        _THUMBS[(key, side)] = rounded
        while len(_THUMBS) > _THUMBS_KEPT:
            _THUMBS.popitem(last=False)
    return rounded


class ImageThumb(QLabel):
    """A clickable thumbnail: a click opens the picture larger (``ImageViewer``)."""

    clicked = Signal()

    def __init__(self, data: bytes, side: int, *, key: str = "", title: str = "Image",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("imageThumb")
        self.data = data
        self.title = title
        pixmap = thumbnail(data, side, key)
        if pixmap is None:  # never stored unchecked, but a damaged database should not break the chat
            self.setText("(picture unreadable)")
            self.setObjectName("muted")
        else:
            self.setPixmap(pixmap)
            self.setFixedSize(pixmap.size())
            self.setCursor(Qt.CursorShape.PointingHandCursor)
            self.setToolTip("Click to see it larger")
        self.clicked.connect(self.open_view)
        self.viewer: ImageViewer | None = None

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self.pixmap() is not None and not self.pixmap().isNull():
            self.clicked.emit()
        super().mouseReleaseEvent(event)

    def open_view(self) -> None:
        """Show the picture larger in a dialog of the window (closed by Esc, a click, or its close button)."""
        self.viewer = ImageViewer(self.data, self.title, self.window())
        self.viewer.destroyed.connect(lambda: setattr(self, "viewer", None))
        self.viewer.open()


class ImageViewer(QDialog):
    """The picture at up to 80% of the screen, with its size in pixels under it."""

    def __init__(self, data: bytes, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setObjectName("page")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 8)
        layout.setSpacing(6)
        self.picture = QLabel()
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.picture.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        layout.addWidget(self.picture, 1)
        full = decode(data)
        caption = muted("")
        caption.setAlignment(Qt.AlignmentFlag.AlignCenter)
        if full is None:
            self.picture.setText("This picture cannot be shown.")
        else:
            screen = QGuiApplication.primaryScreen()
            room = screen.availableSize() * VIEW_FRACTION if screen is not None else QSize(1024, 768)
            shown = full if full.width() <= room.width() and full.height() <= room.height() else full.scaled(
                room, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
            self.picture.setPixmap(shown)
            caption.setText(f"{full.width()} × {full.height()} pixels · as sent to the model")
        layout.addWidget(caption)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self.close()
        super().mouseReleaseEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Escape, Qt.Key.Key_Space, Qt.Key.Key_Return):
            self.close()
            return
        super().keyPressEvent(event)


def image_row(images: list[tuple[str, bytes | None]], side: int = MESSAGE_THUMB) -> QWidget:
    """A row of thumbnails for a message's pictures: (sha256, bytes or None when missing from the store)."""
    row = QWidget()
    row.setObjectName("messageImages")
    layout = QHBoxLayout(row)
    layout.setContentsMargins(4, 2, 0, 2)  # the message's text starts a few pixels in: line up with it
    layout.setSpacing(6)
    for index, (sha, data) in enumerate(images):
        if data is None:
            layout.addWidget(muted("(a picture that is no longer stored)"))
            continue
        layout.addWidget(ImageThumb(data, side, key=sha, title=f"Picture {index + 1}"),
                         0, Qt.AlignmentFlag.AlignTop)
    layout.addStretch(1)
    return row


ImageLoader = Callable[[str], "bytes | None"]  # a stored picture's bytes by sha256, None when missing


def stored_image(store: ChatStore, sha256: str) -> bytes | None:
    """A message's picture from the chat database (``ChatStore.image``), None when it is not there."""
    try:
        return store.image(sha256).data
    except (KeyError, LookupError, HearthError):
        return None
