"""Pictures in the window's chat, on the real engine with the tiny vision model and its projector
(tests/fixtures/tiny_vision.py): a dropped picture (a real QDropEvent with file URLs) shows as a thumbnail
in the composer, goes with the message, shows in the message, and is still there in a reopened chat and
for Regenerate; a pasted picture; broken files said in one sentence with the typed text kept; a model
without a projector greys the attach button with the reason and refuses drops and pastes with it."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QColor, QDragEnterEvent, QDragLeaveEvent, QDropEvent, QImage
from PySide6.QtWidgets import QApplication, QWidget

from core.library import Library
from desktop.views.chat_page import ChatPage
from desktop.views.image_attachments import NO_VISION
from desktop.views.image_view import ImageThumb, ImageViewer
from desktop.views.main_window import MainWindow
from tests.desktop.conftest import WindowFactory, use_model, wait_until
from tests.fixtures.tiny_vision import TinyVision, write_test_image

VISION = "tiny-vision"
ANSWER = 120  # bounds for a busy machine, not measurements


@pytest.fixture
def vision_model(tiny_vision: TinyVision, hearth_home: Path) -> str:
    """The tiny vision model in this test's library, paired with its projector."""
    Library(discover_hf_cache=False).import_file(tiny_vision.model, mode="link", name=VISION, mmproj=tiny_vision.mmproj)
    return VISION


def _window(make_window: WindowFactory, qtbot: object) -> MainWindow:
    window = make_window()
    wait_until(qtbot, lambda: window.library_model.rowCount() >= 2, 30, "the tiny vision model in the library")
    window.show_page("chat")
    return window


def _use(page: ChatPage, name: str) -> None:
    use_model(page, name, max_tokens=8, n_ctx=512)


def _drag(widget: QWidget, paths: list[Path]) -> QMimeData:
    """Drag files over ``widget`` (not dropped yet), as a file manager does."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(widget.rect().center(), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    return mime


def _drop(widget: QWidget, paths: list[Path]) -> bool:
    """Drag files over ``widget`` and drop them; True when the drop was taken."""
    mime = _drag(widget, paths)
    centre = widget.rect().center()
    drop = QDropEvent(QPointF(centre), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, drop)
    return drop.isAccepted()


def _attached(qtbot: object, page: ChatPage, count: int) -> None:
    strip = page.composer.attachments
    wait_until(qtbot, lambda: strip.pending == 0 and len(strip.images()) == count, 30, f"{count} attached pictures")


def _idle(qtbot: object, page: ChatPage) -> None:
    wait_until(qtbot, lambda: not page.controller.streaming, ANSWER, "the answer to finish")


def _thumbs(widget: QWidget) -> list[ImageThumb]:
    return widget.findChildren(ImageThumb)


def test_a_dropped_picture_is_sent_shown_in_the_message_and_kept_on_reopen(
    make_window: WindowFactory, qtbot: object, vision_model: str, tmp_path: Path
) -> None:
    window = _window(make_window, qtbot)
    page = window.chat
    _use(page, vision_model)
    assert page.composer.attach_button.isEnabled()
    picture = write_test_image(tmp_path / "grid.png", "png", seed=1, size=(320, 200))
    page.composer.edit.setPlainText("What colours are in this picture?")
    assert _drop(page.composer.edit.viewport(), [picture])
    _attached(qtbot, page, 1)
    strip = page.composer.attachments
    assert strip.isVisibleTo(page) and len(_thumbs(strip)) == 1 and strip.chips[0].name == "grid.png"
    assert page.composer.edit.toPlainText() == "What colours are in this picture?"  # nothing typed in
    sha = strip.images()[0].sha256
    qtbot.keyClick(page.composer.edit, Qt.Key.Key_Return)  # type: ignore[attr-defined]
    _idle(qtbot, page)
    assert not page.banner.text, page.banner.text
    assert not strip.chips and not strip.isVisibleTo(page) and not page.composer.edit.toPlainText()
    conv_id = page.current_id
    assert conv_id is not None
    messages = window.store.messages(conv_id)
    assert [m.role for m in messages] == ["user", "assistant"] and messages[0].images == [sha]
    assert messages[1].finish_reason in ("stop", "length") and messages[1].completion_tokens
    assert page.controller.engine.status is not None and page.controller.engine.status.vision
    assert "reads images" in page.load_label.text()
    bubble = page.transcript.bubbles[0]
    assert bubble.images is not None and len(_thumbs(bubble)) == 1
    assert page.transcript.bubbles[1].text.toPlainText().strip()
    # A click opens the picture larger; Esc closes it.
    thumb = _thumbs(bubble)[0]
    qtbot.mouseClick(thumb, Qt.MouseButton.LeftButton)  # type: ignore[attr-defined]
    viewer = thumb.viewer
    assert isinstance(viewer, ImageViewer) and viewer.isVisible()
    shown = viewer.picture.pixmap()
    assert (shown.width(), shown.height()) == (320, 200)
    qtbot.keyClick(viewer, Qt.Key.Key_Escape)  # type: ignore[attr-defined]
    wait_until(qtbot, lambda: thumb.viewer is None, 10, "the viewer to close")

    # Regenerate still sends the picture (the engine refuses image parts without a projector, so an
    # answer at all means the picture went with the prompt again).
    regenerate = page.transcript.bubbles[-1].regenerate_button
    assert regenerate is not None
    regenerate.click()
    _idle(qtbot, page)
    assert not page.banner.text, page.banner.text
    again = window.store.messages(conv_id)
    assert again[0].images == [sha] and again[1].id != messages[1].id and again[1].completion_tokens

    # Reopened in a new window (the app started again): the thumbnail is still in the message.
    window.close()
    reopened = _window(make_window, qtbot)
    wait_until(qtbot, lambda: reopened.chat.current_id == conv_id, 10, "the last conversation to open")
    first = reopened.chat.transcript.bubbles[0]
    assert first.message.images == [sha] and len(_thumbs(first)) == 1
    assert _thumbs(first)[0].data == reopened.store.image(sha).data


def test_a_pasted_picture_is_attached_and_can_be_removed(
    make_window: WindowFactory, qtbot: object, vision_model: str
) -> None:
    page = _window(make_window, qtbot).chat
    _use(page, vision_model)
    image = QImage(48, 32, QImage.Format.Format_RGB32)
    image.fill(QColor("#3a7bd5"))
    QApplication.clipboard().setImage(image)
    page.composer.edit.setPlainText("Describe it.")
    page.composer.edit.setFocus()
    qtbot.keyClick(page.composer.edit, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)  # type: ignore[attr-defined]
    _attached(qtbot, page, 1)
    prepared = page.composer.attachments.images()[0]
    assert (prepared.width, prepared.height) == (48, 32)
    assert page.composer.edit.toPlainText() == "Describe it."
    # Pasting text still pastes text.
    QApplication.clipboard().setText(" More words.")
    page.composer.edit.moveCursor(page.composer.edit.textCursor().MoveOperation.End)
    page.composer.edit.paste()
    assert page.composer.edit.toPlainText() == "Describe it. More words."
    chip = page.composer.attachments.chips[0]
    qtbot.mouseClick(chip.remove_button, Qt.MouseButton.LeftButton)  # type: ignore[attr-defined]
    assert not page.composer.attachments.chips and not page.composer.attachments.isVisibleTo(page)


def test_editing_a_message_keeps_its_picture_or_drops_it_when_removed(
    make_window: WindowFactory, qtbot: object, vision_model: str, tmp_path: Path
) -> None:
    window = _window(make_window, qtbot)
    page = window.chat
    _use(page, vision_model)
    page.composer.edit.setPlainText("First look.")
    assert _drop(page.transcript.viewport(), [write_test_image(tmp_path / "a.png", "png", seed=7)])
    # Enter before the picture is read (its result comes through the event loop, not run yet): the
    # message waits for it, then goes with it.
    assert page.chat_images.busy
    qtbot.keyClick(page.composer.edit, Qt.Key.Key_Return)  # type: ignore[attr-defined]
    assert not page.controller.streaming and page.composer.edit.toPlainText() == "First look."
    wait_until(qtbot, lambda: page.current_id is not None, 30, "the message to go once the picture is read")
    _idle(qtbot, page)
    conv_id = page.current_id
    assert conv_id is not None
    first = window.store.messages(conv_id)[0]
    assert first.content == "First look." and len(first.images) == 1
    sha = first.images[0]

    def edit(text: str, remove: bool) -> None:
        button = page.transcript.bubbles[0].edit_button
        assert button is not None
        button.click()
        assert [i.sha256 for i in page.composer.attachments.images()] == [sha]  # shown, to keep or remove
        if remove:
            page.composer.attachments.chips[0].remove_button.click()
        page.composer.edit.setPlainText(text)
        qtbot.keyClick(page.composer.edit, Qt.Key.Key_Return)  # type: ignore[attr-defined]
        _idle(qtbot, page)
        assert not page.banner.text, page.banner.text
        assert not page.composer.attachments.chips

    edit("Second look.", remove=False)
    user = window.store.messages(conv_id)[0]
    assert (user.content, user.images) == ("Second look.", [sha])
    assert len(_thumbs(page.transcript.bubbles[0])) == 1
    # Cancelling an edit takes its pictures out of the composer again.
    page.transcript.bubbles[0].edit_button.click()  # type: ignore[union-attr]
    assert len(page.composer.attachments.chips) == 1
    page.cancel_edit()
    assert not page.composer.attachments.chips and not page.composer.edit.toPlainText()
    edit("No picture now.", remove=True)
    user = window.store.messages(conv_id)[0]
    assert (user.content, user.images) == ("No picture now.", [])
    assert page.transcript.bubbles[0].images is None


def _oversized_png(path: Path) -> Path:
    """A small PNG whose header says 20000 x 20000 pixels (400 megapixels): refused before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_broken_files_are_said_in_one_sentence_and_nothing_else_changes(
    make_window: WindowFactory, qtbot: object, vision_model: str, tmp_path: Path
) -> None:
    page = _window(make_window, qtbot).chat
    _use(page, vision_model)
    good = write_test_image(tmp_path / "good.jpg", "jpeg", seed=2)
    cut = tmp_path / "cut.png"
    cut.write_bytes(write_test_image(tmp_path / "whole.png", "png", seed=3, size=(200, 200)).read_bytes()[:300])
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture at all")
    cases = {cut: "cut.png", notes: "notes.txt", _oversized_png(tmp_path / "huge.png"): "far too large"}
    page.composer.edit.setPlainText("Keep this text.")
    assert _drop(page.composer.edit.viewport(), [good])
    _attached(qtbot, page, 1)
    for path, said in cases.items():
        page.banner.hide()
        assert _drop(page.composer.edit.viewport(), [path])
        wait_until(qtbot, lambda: bool(page.banner.text), 30, f"the sentence about {path.name}")
        _attached(qtbot, page, 1)  # the good one stays, the broken one is not attached
        sentence = page.banner.text
        assert said in sentence and sentence.endswith(".") and "Traceback" not in sentence, sentence
        assert "\n" not in sentence and len(sentence) < 200
        assert page.composer.edit.toPlainText() == "Keep this text."
    assert [c.name for c in page.composer.attachments.chips] == ["good.jpg"]
    assert page.current_id is None and not page.transcript.bubbles  # nothing was sent
    # A good picture after an error takes the error away.
    assert _drop(page.transcript.viewport(), [write_test_image(tmp_path / "b.webp", "webp", seed=4)])
    _attached(qtbot, page, 2)
    assert not page.banner.text


def test_a_model_without_a_projector_greys_attach_and_refuses_pictures(
    make_window: WindowFactory, qtbot: object, vision_model: str, tmp_path: Path
) -> None:
    window = _window(make_window, qtbot)
    page = window.chat
    starter = next(window.library_model.entry(r).name for r in range(window.library_model.rowCount())
                   if window.library_model.entry(r).name != vision_model)
    _use(page, vision_model)
    assert page.composer.attach_button.isEnabled()
    _use(page, starter)
    button = page.composer.attach_button
    assert not button.isEnabled() and button.toolTip() == NO_VISION
    page.composer.edit.setPlainText("Look at this.")
    picture = write_test_image(tmp_path / "p.png", "png", seed=5)
    _drop(page.composer.edit.viewport(), [picture])
    assert page.banner.text == NO_VISION
    assert not page.composer.attachments.chips and page.composer.edit.toPlainText() == "Look at this."
    page.banner.hide()
    _drop(page.transcript.viewport(), [picture])
    assert page.banner.text == NO_VISION and not page.composer.attachments.chips
    page.banner.hide()
    image = QImage(16, 16, QImage.Format.Format_RGB32)
    image.fill(QColor("white"))
    QApplication.clipboard().setImage(image)
    page.composer.edit.paste()
    assert page.banner.text == NO_VISION and not page.composer.attachments.chips
    assert page.composer.edit.toPlainText() == "Look at this."
    # Once loaded, the model's own status agrees (no projector), and back on the vision model it is enabled again.
    entry = page.current_entry()
    assert entry is not None and entry.name == starter
    page.controller.load(entry, page.params.form.values())  # (already loading since it was picked: a no-op then)

    def starter_loaded() -> bool:
        status = page.controller.engine.status
        return not page.controller.loading and status is not None and Path(status.path) == Path(entry.path)

    wait_until(qtbot, starter_loaded, ANSWER, "the starter model to load")
    status = page.controller.engine.status
    assert status is not None and not status.vision and status.mmproj is None
    assert not button.isEnabled() and button.toolTip() == NO_VISION
    _use(page, vision_model)
    assert button.isEnabled()


def test_a_projector_that_does_not_fit_is_refused_and_the_message_is_kept(
    make_window: WindowFactory, qtbot: object, vision_model: str, tiny_vision: TinyVision, tmp_path: Path
) -> None:
    """A library entry paired with another model's projector: the load says why in one sentence, and the
    message (text and picture) goes back into the composer instead of being lost."""
    import shutil

    model = shutil.copy(tiny_vision.model, tmp_path / "tiny-wrong.gguf")
    # Pairing checks the widths, so the projector is replaced on disk after it was paired (as a user might).
    projector = shutil.copy(tiny_vision.mmproj, tmp_path / tiny_vision.wrong_mmproj.name)
    Library(discover_hf_cache=False).import_file(model, mode="link", name="tiny-wrong", mmproj=projector)
    shutil.copy(tiny_vision.wrong_mmproj, projector)
    window = make_window()
    wait_until(qtbot, lambda: window.library_model.rowCount() >= 3, 30, "the mismatched model in the library")
    page = window.chat
    _use(page, "tiny-wrong")
    wait_until(qtbot, lambda: not page.controller.loading, ANSWER, "the load to fail")
    page.banner.hide()
    assert page.composer.attach_button.isEnabled()  # paired with a projector: it is the load that refuses it
    page.composer.edit.setPlainText("What is this?")
    assert _drop(page.composer.edit.viewport(), [write_test_image(tmp_path / "x.png", "png", seed=6)])
    _attached(qtbot, page, 1)
    sha = page.composer.attachments.images()[0].sha256
    qtbot.keyClick(page.composer.edit, Qt.Key.Key_Return)  # type: ignore[attr-defined]
    _idle(qtbot, page)
    sentence = page.banner.text
    assert "mmproj-wrong-width.gguf" in sentence and "Traceback" not in sentence and "\n" not in sentence, sentence
    assert page.composer.edit.toPlainText() == "What is this?"
    assert [i.sha256 for i in page.composer.attachments.images()] == [sha]
    conv_id = page.current_id
    assert conv_id is None or not window.store.messages(conv_id)
    # The engine stays usable: the vision model answers the same message.
    _use(page, vision_model)
    page.banner.hide()
    qtbot.keyClick(page.composer.edit, Qt.Key.Key_Return)  # type: ignore[attr-defined]
    _idle(qtbot, page)
    assert not page.banner.text, page.banner.text
    conv_id = page.current_id
    assert conv_id is not None
    assert [m.images for m in window.store.messages(conv_id)] == [[sha], []]


def test_screenshots_of_pictures_in_the_chat_light_and_dark(
    make_window: WindowFactory, qtbot: object, vision_model: str, tmp_path: Path
) -> None:
    """Every new state, light and dark, into .screenshots/ (or $HEARTH_SHOTS) for people to look at."""
    import os

    from core.chats import Message
    from core.media import load_image_file

    shots = Path(os.environ.get("HEARTH_SHOTS") or Path(__file__).resolve().parents[2] / ".screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    window = _window(make_window, qtbot)
    window.resize(1280, 800)
    page = window.chat
    store = window.store
    starter = next(window.library_model.entry(r).name for r in range(window.library_model.rowCount())
                   if window.library_model.entry(r).name != vision_model)
    pictures = [write_test_image(tmp_path / f"photo-{i}.png", "png", seed=10 + i, size=size)
                for i, size in enumerate([(640, 480), (300, 420)])]
    conv = store.create(title="What is in this picture?", model=vision_model)
    store.add_message(conv.id, Message(role="user", content="What colours are in these two pictures?"),
                      images=[load_image_file(p) for p in pictures])
    store.add_message(conv.id, Message(role="assistant", content="The first is a grid of warm colours; the second "
                                       "has mostly blues and greens.", finish_reason="stop", completion_tokens=19,
                                       tokens_per_second=42.0, meta={"context_used": 210, "n_ctx": 4096}))
    page.conversations.refresh()
    written: list[Path] = []

    def shoot(name: str, widget: QWidget | None = None) -> None:
        qtbot.wait(150)  # type: ignore[attr-defined]
        path = shots / f"chat-images-{name}-{theme}.png"
        assert (widget or window).grab().save(str(path))
        written.append(path)

    for theme in ("light", "dark"):
        window.set_theme(theme)
        page.open_conversation(conv.id)
        page.select_model(vision_model)  # picked, not loaded: the shots show the page, not a load
        page.banner.hide()
        page.composer.edit.setPlainText("And this one? Is it the same place?")
        assert _drop(page.composer.edit.viewport(), pictures)
        _attached(qtbot, page, 2)
        shoot("message-and-composer")
        _drag(page.transcript.viewport(), pictures[:1])  # held over the chat: the composer is outlined
        assert page.composer.property("dropping")
        shoot("drag-over")
        QApplication.sendEvent(page.transcript.viewport(), QDragLeaveEvent())
        assert not page.composer.property("dropping")
        thumb = _thumbs(page.transcript.bubbles[0])[0]
        thumb.open_view()
        assert thumb.viewer is not None
        viewer = thumb.viewer
        shoot("viewer", viewer)
        viewer.close()
        broken = tmp_path / "holiday.png"
        broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
        assert _drop(page.composer.edit.viewport(), [broken])
        wait_until(qtbot, lambda: bool(page.banner.text), 30, "the sentence about the broken file")
        shoot("error")
        page.chat_images.clear()
        page.banner.hide()
        page.new_chat()
        page.select_model(starter)
        page.composer.edit.setPlainText("")
        shoot("no-projector")
        # The smallest window: the composer keeps its thumbnails.
        window.resize(window.minimumSizeHint())
        page.composer.edit.setPlainText("Still fits?")
        page.chat_images.strip.add(load_image_file(pictures[0]), "photo-0.png")
        qtbot.wait(150)  # type: ignore[attr-defined]
        assert page.composer.attachments.height() >= page.composer.attachments.chips[0].height()
        shoot("smallest")
        page.chat_images.clear()
        window.resize(1280, 800)
        _drop(page.composer.edit.viewport(), pictures[:1])
        shoot("no-projector-drop")
    window.set_theme("system")
    print(f"\nscreenshots written to {shots}: {', '.join(p.name for p in written)}")
