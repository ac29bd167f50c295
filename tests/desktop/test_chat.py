"""The Chat page on the real starter model: streaming, stop, regenerate, edit, switching, restart, errors."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication

from core.chats import ChatStore
from desktop.views.chat_page import ChatPage
from desktop.views.main_window import MainWindow
from tests.desktop.conftest import WindowFactory, wait_until


def _greedy(page: ChatPage, max_tokens: int = 12) -> None:
    form = page.params.form.editors
    form["temperature"].setValue(0)
    form["max_tokens"].setValue(max_tokens)
    form["n_ctx"].setValue(1024)
    # One thread: the test machine's 2 cores are shared, and llama.cpp's threads wait on each other.
    form["n_threads"].setValue(1)


def _type_and_send(qtbot: object, page: ChatPage, text: str) -> None:
    page.composer.edit.setPlainText(text)
    qtbot.keyClick(page.composer.edit, Qt.Key.Key_Return)  # type: ignore[attr-defined]


def _wait_idle(qtbot: object, page: ChatPage, timeout: float = 90) -> None:
    wait_until(qtbot, lambda: not page.controller.streaming, timeout, "the answer to finish")


def test_a_sent_message_streams_its_answer_while_the_gui_keeps_running(window: MainWindow, qtbot: object) -> None:
    page = window.chat
    _greedy(page, max_tokens=16)
    page.composer.edit.setPlainText("Name a colour.")
    # Shift+Enter is a new line, not a send.
    qtbot.keyClick(page.composer.edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)  # type: ignore[attr-defined]
    assert page.composer.edit.toPlainText().count("\n") == 1 and not page.controller.streaming
    page.composer.edit.setPlainText("Name a colour.")
    ticks: list[int] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(20)
    streamed: list[str] = []
    page.controller.chunk_arrived.connect(streamed.append)
    loaded: list[float] = []
    shown: list[int] = []
    page.controller.model_load_progress.connect(loaded.append)
    page.controller.model_load_progress.connect(lambda _f: shown.append(page.load_bar.value()))
    qtbot.keyClick(page.composer.edit, Qt.Key.Key_Return)  # type: ignore[attr-defined]
    assert page.controller.streaming and page.composer.stop_button.isVisibleTo(page)
    ticks_at_first_chunk: list[int] = []
    page.controller.chunk_arrived.connect(lambda _t: ticks_at_first_chunk.append(len(ticks)))
    _wait_idle(qtbot, page)
    timer.stop()
    assert streamed, "no tokens were streamed"
    # The event loop ran between the first token and the end of the answer.
    assert len(ticks) > ticks_at_first_chunk[0] >= 0 and len(ticks) >= 5
    conv_id = page.current_id
    assert conv_id is not None
    messages = window.store.messages(conv_id)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].content == "".join(streamed).strip() or messages[1].content == "".join(streamed)
    bubbles = page.transcript.bubbles
    assert [b.message.role for b in bubbles] == ["user", "assistant"]
    assert bubbles[1].text.toPlainText().strip()
    assert "tok/s" in bubbles[1].stats.text() and "context" in bubbles[1].stats.text()
    assert page.composer.send_button.isVisibleTo(page) and not page.composer.stop_button.isVisibleTo(page)
    assert window.store.get(conv_id).title == "Name a colour."
    assert page.load_label.text().startswith("Ready")
    # The model loaded on send, with llama.cpp's progress shown in the bar, rising to 100%.
    assert len(loaded) >= 3 and loaded == sorted(loaded) and loaded[-1] == 1.0
    assert shown == [round(f * 100) for f in loaded] and not page.load_bar.isVisibleTo(page)


def test_stop_keeps_the_partial_answer_marked_stopped(window: MainWindow, qtbot: object) -> None:
    page = window.chat
    _greedy(page, max_tokens=400)
    _type_and_send(qtbot, page, "Write a long story about a lighthouse keeper.")
    wait_until(qtbot, lambda: len(page.transcript.streamed_text()) > 5, 60, "the first tokens")
    qtbot.keyClick(page.composer.edit, Qt.Key.Key_Escape)  # type: ignore[attr-defined]
    _wait_idle(qtbot, page)
    assert page.current_id is not None
    answer = window.store.messages(page.current_id)[-1]
    assert answer.role == "assistant" and answer.finish_reason == "cancelled"
    assert answer.completion_tokens is not None and answer.completion_tokens < 400
    assert "stopped" in page.transcript.bubbles[-1].stats.text()


def test_regenerate_then_edit_and_rerun(window: MainWindow, qtbot: object) -> None:
    page = window.chat
    _greedy(page, max_tokens=8)
    page.params.form.editors["temperature"].setValue(1.0)
    _type_and_send(qtbot, page, "Say hello.")
    _wait_idle(qtbot, page)
    conv_id = page.current_id
    assert conv_id is not None
    first = window.store.messages(conv_id)
    assert page.transcript.bubbles[-1].regenerate_button is not None
    page.transcript.bubbles[-1].regenerate_button.click()
    assert page.controller.streaming
    _wait_idle(qtbot, page)
    second = window.store.messages(conv_id)
    assert [m.role for m in second] == ["user", "assistant"]
    assert second[0].id == first[0].id and second[1].id != first[1].id  # the answer was replaced
    # Edit the user's message: the composer takes its text; sending replaces it and the answer.
    edit = page.transcript.bubbles[0].edit_button
    assert edit is not None
    edit.click()
    assert page.editing_id == first[0].id and page.composer.edit.toPlainText() == "Say hello."
    page.composer.edit.setPlainText("Say goodbye.")
    qtbot.keyClick(page.composer.edit, Qt.Key.Key_Return)  # type: ignore[attr-defined]
    _wait_idle(qtbot, page)
    third = window.store.messages(conv_id)
    assert (third[0].role, third[0].content) == ("user", "Say goodbye.")
    assert len(third) == 2 and third[1].role == "assistant"
    assert page.transcript.bubbles[0].message.content == "Say goodbye."


def test_conversations_switch_and_survive_a_restart(make_window: WindowFactory, qtbot: object) -> None:
    window = make_window()
    page = window.chat
    _greedy(page, max_tokens=4)
    _type_and_send(qtbot, page, "First chat here.")
    _wait_idle(qtbot, page)
    first_id = page.current_id
    qtbot.keyClick(window, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)  # type: ignore[attr-defined]
    assert page.current_id is None and not page.transcript.bubbles
    _type_and_send(qtbot, page, "Second chat here.")
    _wait_idle(qtbot, page)
    second_id = page.current_id
    assert first_id != second_id and page.conversations.model.rowCount() == 2
    # Switch back by clicking the first conversation in the list.
    row = page.conversations.model.row_of(first_id or 0)
    page.conversations.view.clicked.emit(page.conversations.model.index(row))
    assert page.current_id == first_id
    assert page.transcript.bubbles[0].message.content == "First chat here."
    # Search finds conversations by message text.
    page.conversations.search.setText("Second chat")
    assert page.conversations.model.rowCount() == 1
    page.conversations.search.setText("")
    # Rename in place through the list model.
    page.conversations.model.setData(page.conversations.model.index(row), "Renamed chat")
    assert window.store.get(first_id or 0).title == "Renamed chat"
    window.close()

    again = make_window()
    titles = {again.chat.conversations.model.conversation(r).title for r in range(again.chat.conversations.model.rowCount())}
    assert titles == {"Renamed chat", "Second chat here."}
    wait_until(qtbot, lambda: again.chat.current_id is not None, 10, "the last conversation to open")
    # The conversation open at the close is open again, with its messages.
    assert again.chat.current_id == first_id
    assert [b.message.role for b in again.chat.transcript.bubbles] == ["user", "assistant"]
    assert again.chat.transcript.bubbles[0].message.content == "First chat here."
    row = again.chat.conversations.model.row_of(second_id or 0)
    again.chat.conversations.view.clicked.emit(again.chat.conversations.model.index(row))
    assert again.chat.transcript.bubbles[0].message.content == "Second chat here."


def test_a_worker_crash_shows_an_error_and_keeps_the_history(window: MainWindow, qtbot: object) -> None:
    page = window.chat
    _greedy(page, max_tokens=4)
    _type_and_send(qtbot, page, "Hello there.")
    _wait_idle(qtbot, page)
    conv_id = page.current_id
    assert conv_id is not None
    _greedy(page, max_tokens=400)
    _type_and_send(qtbot, page, "Now tell me a very long story.")
    wait_until(qtbot, lambda: len(page.transcript.streamed_text()) > 3, 60, "the first tokens")
    pid = window.controller.engine.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _wait_idle(qtbot, page)
    assert "killed (SIGKILL)" in page.banner.text
    assert window.isVisible()
    messages = window.store.messages(conv_id)
    assert [m.role for m in messages][:3] == ["user", "assistant", "user"]
    assert messages[0].content == "Hello there."
    # The next message starts a fresh worker and works.
    _greedy(page, max_tokens=4)
    _type_and_send(qtbot, page, "Are you back?")
    _wait_idle(qtbot, page)
    assert window.store.messages(conv_id)[-1].role == "assistant"
    assert window.store.messages(conv_id)[-2].content == "Are you back?"


def test_a_bad_model_shows_an_error_in_the_window(window: MainWindow, qtbot: object, tmp_path: Path) -> None:
    from tests.fixtures.tiny_models import write_fake_arch

    bad = write_fake_arch(tmp_path / "broken-llama.gguf", architecture="llama")
    entry = window.library.import_file(bad, mode="link")
    window.refresh_library()
    wait_until(qtbot, lambda: window.library_model.row_of(entry.name) >= 0, 10, "the library to refresh")
    window.open_in_chat(entry.name)
    page = window.chat
    assert page.current_entry() is not None and page.current_entry().name == entry.name  # type: ignore[union-attr]
    _type_and_send(qtbot, page, "Hello?")
    _wait_idle(qtbot, page)
    assert "Could not load" in page.banner.text or "not" in page.banner.text.lower()
    assert page.load_label.text() == "Not loaded"
    assert window.isVisible() and page.composer.send_button.isVisibleTo(page)
    QApplication.processEvents()
    assert isinstance(window.store, ChatStore)
