"""Pictures attached to the next message: the thumbnails above the text box, and how pictures get there.

A picture comes from the attach button's file dialog, a drop (on the text box or the transcript) or a
paste. Each is checked and scaled by ``core.media`` (``load_image_file`` / ``prepare_image``) on a
thread of its own, since a large photo takes a moment to decode; a file that is not a usable picture
is said in the chat page's banner in one sentence, and nothing else changes (the typed text stays).
When the chat's model has no vision projector, the attach button is greyed with the reason and drops
and pastes of pictures show that reason instead of attaching.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QBuffer, QByteArray, QEvent, QIODevice, QMimeData, QObject, Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent, QImage
from PySide6.QtWidgets import QFileDialog, QFrame, QHBoxLayout, QLabel, QToolButton, QWidget

from core.errors import HearthError
from desktop.ops import Executor, Op, error_text
from desktop.theme import Palette, icon_path
from desktop.views.image_view import ImageThumb
from desktop.views.widgets import Banner, muted

if TYPE_CHECKING:
    from core.chats import ChatStore
    from core.engine import ModelStatus
    from core.library import ModelEntry
    from core.media import PreparedImage
    from desktop.views.composer import Composer

NO_VISION = ("This model can't read images: it has no vision projector (mmproj). "
             "Pick a vision model, or add its projector in My Models.")
ATTACH_TIP = "Attach a picture (PNG, JPEG or WebP); you can also drop or paste one"
FILE_FILTER = "Pictures (*.png *.jpg *.jpeg *.webp);;All files (*)"
CHIP_THUMB = 56  # a thumbnail's longest side in the composer

_executor: Executor | None = None


def _image_thread() -> Executor:
    """The one thread that checks and scales attached pictures (made on first use: start-up stays light)."""
    global _executor
    if _executor is None:
        _executor = Executor(1, "hearth-images")
    return _executor


@dataclass
class ImageOffer:
    """Pictures the user dropped or pasted: local files, or images straight from the clipboard."""

    files: list[str] = field(default_factory=list)
    pictures: list[QImage] = field(default_factory=list)


def offer_from_mime(mime: QMimeData | None) -> ImageOffer | None:
    """The pictures in a drop or paste, or None when it is text (or models, which the window imports).

    Every local file counts (``core.media`` then says which ones are not pictures); a .gguf is left to
    the main window's drag-and-drop import, remote URLs stay text.
    """
    if mime is None:
        return None
    if mime.hasUrls():
        files = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]
        files = [f for f in files if f and not f.lower().endswith(".gguf")]
        if files:
            return ImageOffer(files=files)
    if mime.hasImage():
        image = mime.imageData()
        if isinstance(image, QImage) and not image.isNull():
            return ImageOffer(pictures=[image])
    return None


def _png_bytes(image: QImage) -> bytes:
    """A clipboard image as PNG bytes (QImage is safe to use off the GUI thread)."""
    array = QByteArray()
    buffer = QBuffer(array)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")  # type: ignore[call-overload]  # PySide6 takes a str here (its stub says bytes)
    buffer.close()
    return bytes(array.data())


class AttachmentChip(QFrame):
    """One attached picture (or a placeholder while it is being read) with its remove button."""

    def __init__(self, name: str, on_remove: Callable[[AttachmentChip], None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("attachment")
        self.name = name
        self.image: PreparedImage | None = None
        self.setFixedSize(CHIP_THUMB + 8, CHIP_THUMB + 8)
        self.setToolTip(name)
        self.body: QLabel = muted("Reading…")
        self.body.setParent(self)
        self.body.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.body.setGeometry(4, 4, CHIP_THUMB, CHIP_THUMB)
        self.remove_button = QToolButton(self)
        self.remove_button.setObjectName("removeAttachment")
        self.remove_button.setText("✕")
        self.remove_button.setToolTip(f"Remove {name}")
        self.remove_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.remove_button.setFixedSize(18, 18)
        self.remove_button.move(self.width() - 20, 2)
        self.remove_button.clicked.connect(lambda _=False: on_remove(self))
        self.remove_button.hide()  # a picture still being read has nothing to remove yet

    def set_image(self, image: PreparedImage) -> None:
        self.image = image
        self.body.deleteLater()
        self.body = ImageThumb(image.data, CHIP_THUMB, key=image.sha256, title=self.name, parent=self)
        self.body.move((self.width() - self.body.width()) // 2, (self.height() - self.body.height()) // 2)
        self.body.show()
        self.setToolTip(f"{self.name} · {image.width} × {image.height}")
        self.remove_button.show()
        self.remove_button.raise_()


class AttachmentStrip(QWidget):
    """The pictures that go with the next message, as small removable thumbnails; hidden when there are none."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("attachments")
        self._row = QHBoxLayout(self)
        self._row.setContentsMargins(2, 2, 2, 2)
        self._row.setSpacing(6)
        self._row.addStretch(1)
        self.chips: list[AttachmentChip] = []
        self.hide()

    def images(self) -> list[PreparedImage]:
        """The attached pictures, in the order they were added (ones still being read are left out)."""
        return [c.image for c in self.chips if c.image is not None]

    @property
    def pending(self) -> int:
        """How many pictures are still being read."""
        return sum(1 for c in self.chips if c.image is None)

    def add_pending(self, name: str) -> AttachmentChip:
        chip = AttachmentChip(name, self.remove)
        self._row.insertWidget(len(self.chips), chip)
        self.chips.append(chip)
        self.show()
        self.changed.emit()
        return chip

    def add(self, image: PreparedImage, name: str) -> AttachmentChip:
        chip = self.add_pending(name)
        self.fill(chip, image)
        return chip

    def fill(self, chip: AttachmentChip, image: PreparedImage) -> None:
        if chip in self.chips:  # it may have been cleared meanwhile (sent, or a new chat)
            chip.set_image(image)
            self.changed.emit()

    def remove(self, chip: AttachmentChip) -> None:
        if chip in self.chips:
            self.chips.remove(chip)
            self._row.removeWidget(chip)
            chip.hide()
            chip.deleteLater()
        self.setVisible(bool(self.chips))
        self.changed.emit()

    def clear(self) -> None:
        for chip in list(self.chips):
            self.remove(chip)

    def set_palette(self, palette: Palette) -> None:
        self.setStyleSheet(
            f"QFrame#attachment {{ border: 1px solid {palette.border}; border-radius: 8px; background: {palette.window}; }}"
            f"QToolButton#removeAttachment {{ border: none; border-radius: 9px; font-size: 8pt; padding: 0px;"
            f" background: {palette.text}; color: {palette.surface}; }}"
            f"QToolButton#removeAttachment:hover {{ background: {palette.danger}; }}")


class ChatImages(QObject):
    """The chat page's pictures: what the attach button, drops and pastes do, and whether the model can see.

    ``drop_targets`` (the transcript's viewport) accept dropped pictures too, besides the text box.
    """

    def __init__(self, composer: Composer, banner: Banner, drop_targets: list[QWidget]) -> None:
        super().__init__(composer)
        self.composer = composer
        self.strip = composer.attachments
        self.banner = banner
        self.reason = ""  # why the chat's model cannot read pictures ('' = it can)
        self._last_error = ""
        self._folder = str(Path.home())
        self._then: Callable[[], None] | None = None  # a send asked for while pictures were being read
        self._failed_meanwhile = False
        composer.edit.images_offered.connect(self.offer)
        composer.edit.drag_hover.connect(self._hover)
        composer.attach_button.clicked.connect(lambda _=False: self.pick_files())
        for target in drop_targets:
            target.setAcceptDrops(True)
            target.installEventFilter(self)

    # -- whether pictures can be read ----------------------------------------------------------
    def update_model(self, entry: ModelEntry | None, status: ModelStatus | None) -> None:
        """Follow the chat's model: its library entry has a projector, or the loaded model reads images."""
        loaded_vision = (status is not None and entry is not None and Path(status.path) == Path(entry.path)
                         and bool(getattr(status, "vision", False)))
        can = entry is None or bool(getattr(entry, "mmproj", None)) or loaded_vision
        self.reason = "" if can else NO_VISION
        button = self.composer.attach_button
        button.setEnabled(can)
        # The reason is the greyed button's tooltip, and the banner's sentence when a picture is dropped or
        # pasted: a line always shown under the box would nag every chat with a text-only model.
        button.setToolTip(ATTACH_TIP if can else NO_VISION)

    @property
    def busy(self) -> bool:
        """Pictures are still being read: sending waits for them."""
        return self.strip.pending > 0

    def images(self) -> list[PreparedImage]:
        return self.strip.images()

    def when_ready(self, then: Callable[[], None]) -> None:
        """Call ``then`` (the page's send) once every picture is read, unless one of them fails."""
        self._then = then
        self._failed_meanwhile = False

    def clear(self) -> None:
        self.strip.clear()
        self._then = None

    def show_stored(self, shas: list[str], store: ChatStore) -> None:
        """A message being edited: its stored pictures, to keep or remove before it is sent again."""
        self.strip.clear()
        for index, sha in enumerate(shas):
            with contextlib.suppress(HearthError):  # one deleted meanwhile is simply not offered
                self.strip.add(store.image(sha), f"Picture {index + 1}")

    def set_palette(self, palette: Palette) -> None:
        self.composer.set_attach_icon(icon_path("image", palette), palette.muted)
        self.strip.set_palette(palette)
        # Pictures dragged over the chat: the box they will land in is outlined.
        self.composer.setStyleSheet(f'QFrame#composer[dropping="true"] {{ border: 2px dashed {palette.accent}; '
                                    "border-radius: 12px; }")

    def _hover(self, on: bool) -> None:
        on = on and not self.reason  # no outline where a drop will only be refused
        if bool(self.composer.property("dropping")) != on:
            self.composer.setProperty("dropping", on)
            self.composer.style().unpolish(self.composer)
            self.composer.style().polish(self.composer)

    # -- where pictures come from --------------------------------------------------------------
    def pick_files(self) -> None:
        """The attach button: a file dialog filtered to PNG, JPEG and WebP."""
        if self.reason:
            self._say(self.reason)
            return
        files, _ = QFileDialog.getOpenFileNames(self.composer.window(), "Attach pictures", self._folder, FILE_FILTER)
        if files:
            self._folder = str(Path(files[0]).parent)
            self.offer(ImageOffer(files=files))

    def offer(self, offer: ImageOffer) -> None:
        """Read each offered picture in the background; each becomes a thumbnail, or its one-sentence error."""
        if self.reason:
            self._say(self.reason)
            return
        for path in offer.files:
            self._prepare(self.strip.add_pending(Path(path).name), functools.partial(_load_file, path))
        for picture in offer.pictures:
            self._prepare(self.strip.add_pending("Pasted picture"), functools.partial(_load_pasted, picture.copy()))

    def _prepare(self, chip: AttachmentChip, work: Callable[[], PreparedImage]) -> None:
        def done(image: PreparedImage) -> None:
            self.strip.fill(chip, image)
            if self._last_error and self.banner.text == self._last_error:
                self.banner.hide()  # the last picture's error is no longer the news
            self._last_error = ""
            self._settled()

        def failed(exc: BaseException) -> None:
            self.strip.remove(chip)
            self._say(error_text(exc))
            self._failed_meanwhile = True  # the user sees the error first: a waiting send does not go
            self._settled()

        Op(work).on_success(done).on_failure(failed).run(_image_thread())

    def _settled(self) -> None:
        if self.strip.pending == 0 and self._then is not None:
            then, self._then = self._then, None
            if not self._failed_meanwhile:
                then()

    def _say(self, sentence: str) -> None:
        self._last_error = sentence
        self.banner.show_message(sentence)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        kind = event.type()
        if kind == QEvent.Type.DragLeave:
            self._hover(False)
        elif kind in (QEvent.Type.DragEnter, QEvent.Type.DragMove, QEvent.Type.Drop):
            assert isinstance(event, (QDragEnterEvent, QDragMoveEvent, QDropEvent))
            offer = offer_from_mime(event.mimeData())
            if offer is None:
                return False  # not pictures (a model file, say): the window's own drop handling decides
            event.acceptProposedAction()
            self._hover(kind != QEvent.Type.Drop)
            if kind == QEvent.Type.Drop:
                self.offer(offer)
            return True
        return super().eventFilter(watched, event)


def _load_file(path: str) -> PreparedImage:
    from core.media import load_image_file

    return load_image_file(path)


def _load_pasted(image: QImage) -> PreparedImage:
    from core.media import prepare_image

    return prepare_image(_png_bytes(image), name="the pasted picture")
