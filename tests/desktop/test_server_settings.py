"""Settings > Server on the real starter model: the switch serves the library to the official openai client,
requests show in the live log, a busy port and a network server without a key say what to do, the window's
chats and other apps' requests take turns on one engine, and closing while serving asks first."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import ollama
import openai
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QLineEdit, QMessageBox

from core.settings import load_settings, save_settings
from desktop.server_control import NEEDS_KEY
from desktop.views.chat_page import ChatPage
from desktop.views.main_window import MainWindow
from desktop.views.server_section import ServerSection
from tests.desktop.conftest import WindowFactory, wait_until

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / ".screenshots"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield int(s.getsockname()[1])


def _section(window: MainWindow) -> ServerSection:
    section = window.settings_page.server
    assert section is not None
    return section


def _turn_on(qtbot: object, window: MainWindow, port: int) -> ServerSection:
    window.show_page("settings")
    section = _section(window)
    section.port.setValue(port)
    section.switch.setChecked(True)
    wait_until(qtbot, lambda: window.server.state in ("serving", "error"), 30, "the server to start")
    return section


def _turn_off(qtbot: object, window: MainWindow) -> None:
    _section(window).switch.setChecked(False)
    wait_until(qtbot, lambda: window.server.state == "stopped", 30, "the server to stop")


def _greedy(page: ChatPage, max_tokens: int = 8) -> None:
    form = page.params.form.editors
    form["temperature"].setValue(0)
    form["max_tokens"].setValue(max_tokens)
    form["n_ctx"].setValue(1024)
    form["n_threads"].setValue(1)  # the test machine's 2 cores are shared


def test_the_switch_serves_the_library_to_the_openai_client_and_logs_each_request(
    window: MainWindow, qtbot: object
) -> None:
    port = free_port()
    section = _turn_on(qtbot, window, port)
    assert window.server.state == "serving", window.server.message
    url = f"http://127.0.0.1:{port}/v1"
    assert window.server.url == url and section.openai_url.text() == url
    assert section.ollama_url.text() == f"http://127.0.0.1:{port}"
    assert url in section.status.text()
    saved = load_settings().server
    assert saved.enabled and saved.port == port and not saved.allow_network

    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
    starter = window.library_model.entry(0).name
    ids = [m.id for m in client.models.list()]
    assert starter in ids
    answer = client.chat.completions.create(
        model=starter, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0,
    )
    assert answer.usage is not None and answer.usage.completion_tokens > 0

    log = window.server.log
    wait_until(qtbot, lambda: log.rowCount() >= 2, 10, "both requests in the log")
    chat, listing = log.record(0), log.record(1)  # newest first
    assert (listing.method, listing.path, listing.status) == ("GET", "/v1/models", 200)
    assert (chat.path, chat.model, chat.status) == ("/v1/chat/completions", starter, 200)
    assert chat.client.startswith("127.0.0.1")
    cells = [log.data(log.index(0, c)) for c in range(log.columnCount())]
    assert cells[1].startswith("127.0.0.1") and cells[2] == "POST /v1/chat/completions" and cells[3] == starter
    assert "→" in cells[4] and float(cells[5]) >= 0 and cells[6] == "200"
    assert "2 shown" in section.log_note.text()
    tags = ollama.Client(host=section.ollama_url.text(), timeout=60).list()
    assert starter in [m.model for m in tags.models]  # the Ollama address works as shown
    wait_until(qtbot, lambda: log.rowCount() == 3 and log.record(0).path == "/api/tags", 10, "the Ollama request")

    _turn_off(qtbot, window)
    assert not load_settings().server.enabled
    assert section.openai_url.text() == url  # still there to paste, for the next time
    with pytest.raises(openai.APIConnectionError):
        client.models.list()


def test_a_port_in_use_says_so_and_another_port_applies(window: MainWindow, qtbot: object, busy_port: int) -> None:
    section = _turn_on(qtbot, window, busy_port)
    assert window.server.state == "error"
    assert f"Port {busy_port} is in use" in section.status.text()
    assert "Settings > Server" in section.status.text()
    assert section.switch.isChecked()  # still wanted: a new port and Apply start it
    assert not section.apply_button.isEnabled()
    port = free_port()
    section.port.setValue(port)
    assert section.apply_button.isEnabled()
    section.apply_button.click()
    wait_until(qtbot, lambda: window.server.state == "serving", 30, "the server on the new port")
    assert window.server.url == f"http://127.0.0.1:{port}/v1" and load_settings().server.port == port
    _turn_off(qtbot, window)


def test_the_network_needs_a_key_which_is_generated_masked_and_required(window: MainWindow, qtbot: object) -> None:
    window.show_page("settings")
    section = _section(window)
    assert not section.network.isChecked() and section.key.text() == ""
    section.network.setChecked(True)
    key = section.key.text()
    assert len(key) >= 30 and section.key.echoMode() == QLineEdit.EchoMode.Password
    section.show_key.click()
    assert section.key.echoMode() == QLineEdit.EchoMode.Normal and section.show_key.text() == "Hide"
    section.show_key.click()
    assert section.key.echoMode() == QLineEdit.EchoMode.Password
    next(b for b in section.findChildren(type(section.show_key)) if b.text() == "New key").click()
    assert section.key.text() not in ("", key)
    copy = next(b for b in section.findChildren(type(section.show_key)) if b.text() == "Copy")
    copy.click()
    assert QApplication.clipboard().text() == section.key.text()
    section.key.clear()  # no key: refused before anything listens
    section.switch.setChecked(True)
    wait_until(qtbot, lambda: window.server.state == "error", 10, "the refusal")
    assert section.status.text() == NEEDS_KEY and "API key" in NEEDS_KEY
    assert not window.server.serving

    # With a key it listens on every interface, and every request must carry the key.
    section.port.setValue(port := free_port())
    section.key.setText(key := "hearth-test-key-0123456789abcdef")
    section.apply_button.click()
    wait_until(qtbot, lambda: window.server.state in ("serving", "error"), 30, "the network server")
    assert window.server.state == "serving", window.server.message
    saved = load_settings().server
    assert saved.allow_network and saved.api_key == key
    if window.server.network_url:
        assert window.server.network_url in section.status.text() and window.server.network_url in \
            section.network_note.text()
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
    assert window.library_model.entry(0).name in [
        m.id for m in openai.OpenAI(base_url=url, api_key=key, max_retries=0).models.list()
    ]
    wait_until(qtbot, lambda: window.server.log.rowCount() == 2, 10, "both requests logged")
    assert [window.server.log.record(r).status for r in range(2)] == [200, 401]
    section.switch.setChecked(False)
    wait_until(qtbot, lambda: window.server.state == "stopped", 10, "stopped")


def test_a_window_chat_waits_its_turn_and_reloads_what_the_server_changed(window: MainWindow, qtbot: object) -> None:
    page = window.chat
    _greedy(page)
    lock, controller = window.engine_lock, window.controller
    held = threading.Event()
    release = threading.Event()

    def server_request() -> None:  # what ModelHost.use does for a request from another app
        with lock("server: 127.0.0.1"):
            held.set()
            release.wait(60)

    thread = threading.Thread(target=server_request)
    thread.start()
    held.wait(5)
    wait_until(qtbot, lambda: page.serving_label.isVisibleTo(page), 5, "the busy note")
    assert page.serving_label.text().startswith("Answering a request from another app")
    chunks: list[str] = []
    controller.chunk_arrived.connect(chunks.append)
    page.composer.edit.setPlainText("Name a colour.")
    qtbot.keyClick(page.composer.edit, Qt.Key.Key_Return)  # type: ignore[attr-defined]
    qtbot.wait(600)  # type: ignore[attr-defined]
    assert controller.streaming and not chunks and lock.waiting == 1  # queued behind the other app
    assert not page.load_bar.isVisibleTo(page) and "Loading" not in page.load_label.text()
    assert page.serving_label.text().endswith("Your answer is next.")
    SHOTS.mkdir(exist_ok=True)
    for theme in ("light", "dark"):
        window.set_theme(theme)
        qtbot.wait(100)  # type: ignore[attr-defined]
        assert window.grab().save(str(SHOTS / f"chat-waiting-for-server-{theme}.png"))
    window.set_theme("system")
    controller.stop()  # stopped while waiting: nothing is sent, and the other app's answer goes on
    assert lock.holder == "server: 127.0.0.1"
    release.set()
    thread.join(5)
    wait_until(qtbot, lambda: not controller.streaming, 60, "the stopped send to end")
    assert not chunks
    wait_until(qtbot, lambda: not page.serving_label.isVisibleTo(page), 5, "the busy note to go")

    page.composer.edit.setPlainText("Name a colour.")
    qtbot.keyClick(page.composer.edit, Qt.Key.Key_Return)  # type: ignore[attr-defined]
    wait_until(qtbot, lambda: not controller.streaming, 120, "the answer")
    assert chunks and controller.engine.status is not None

    # The server unloads the model (idle unload) while a send waits: "Loading" shows once the engine is ours.
    held.clear()
    release.clear()

    def idle_unload() -> None:
        with lock("server: idle unload"):
            controller.engine.unload()
            held.set()
            release.wait(60)

    thread = threading.Thread(target=idle_unload)
    thread.start()
    held.wait(5)
    loads: list[str] = []
    controller.model_loading.connect(loads.append)
    controller.model_loading.connect(lambda _n: loads.append(page.load_label.text()))
    page.composer.edit.setPlainText("And another?")
    qtbot.keyClick(page.composer.edit, Qt.Key.Key_Return)  # type: ignore[attr-defined]
    qtbot.wait(400)  # type: ignore[attr-defined]
    assert not loads and controller.streaming
    release.set()
    thread.join(5)
    wait_until(qtbot, lambda: not controller.streaming, 120, "the second answer")
    assert len(loads) == 2 and loads[1].startswith("Loading")
    assert controller.engine.status is not None and not page.banner.text
    assert page.load_label.text().startswith("Ready")


def test_serving_starts_at_launch_and_closing_asks_to_keep_serving(make_window: WindowFactory, qtbot: object) -> None:
    settings = load_settings()
    settings.server.enabled, settings.server.port = True, free_port()
    save_settings(settings)
    window = make_window()
    wait_until(qtbot, lambda: window.server.state == "serving", 30, "the server to start at launch")
    assert _section(window).switch.isChecked()

    window.close()
    wait_until(qtbot, lambda: _question(window) is not None, 5, "the question")
    box = _question(window)
    assert box is not None and box.text() == "Keep serving in the background?"
    assert window.server.url in box.informativeText()
    next(b for b in box.buttons() if b.text() == "Keep serving").click()
    wait_until(qtbot, lambda: _question(window) is None, 5, "the question to close")
    assert window.server.serving and (window.isHidden() or window.isMinimized())
    with socket.create_connection(("127.0.0.1", settings.server.port), timeout=5):
        pass  # still listening

    window.bring_back()
    window.close()
    wait_until(qtbot, lambda: _question(window) is not None, 5, "the question again")
    box = _question(window)
    assert box is not None
    next(b for b in box.buttons() if b.text() == "Stop and quit").click()
    wait_until(qtbot, lambda: window._closed, 10, "the window to close")
    assert not window.isVisible()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", settings.server.port), timeout=2).close()


def _question(window: MainWindow) -> QMessageBox | None:
    boxes = [b for b in window.findChildren(QMessageBox) if b.isVisible()]
    return boxes[0] if boxes else None


def test_screenshots_of_the_server_section_stopped_serving_and_failing(
    window: MainWindow, qtbot: object, busy_port: int
) -> None:
    window.resize(1280, 800)
    window.show_page("settings")
    section = _section(window)
    SHOTS.mkdir(exist_ok=True)

    def shoot(state: str) -> None:
        for theme in ("light", "dark"):
            window.set_theme(theme)
            window.settings_page.scroll_area.ensureWidgetVisible(section, 0, 0)
            qtbot.wait(120)  # type: ignore[attr-defined]
            path = SHOTS / f"settings-server-{state}-{theme}.png"
            assert window.grab().save(str(path))

    shoot("stopped")
    _turn_on(qtbot, window, busy_port)
    assert window.server.state == "error"
    shoot("error")
    port = free_port()
    section.port.setValue(port)
    section.apply_button.click()
    wait_until(qtbot, lambda: window.server.state == "serving", 30, "serving")
    client = openai.OpenAI(base_url=window.server.url, api_key="unused", max_retries=0, timeout=120)
    starter = window.library_model.entry(0).name
    client.models.list()
    client.chat.completions.create(model=starter, messages=[{"role": "user", "content": "Hello!"}], max_tokens=12)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "Hi"}])
    wait_until(qtbot, lambda: window.server.log.rowCount() >= 3, 10, "three requests in the log")
    shoot("serving")
    window.set_theme("system")
    _turn_off(qtbot, window)
