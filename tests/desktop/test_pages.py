"""My Models (drag-and-drop import, details, delete), Discover and Downloads against the local fake Hub,
Settings, and what the window's start path imports."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QMessageBox

from core.library import Library
from core.paths import get_paths
from desktop.models.hub import FIT_ROLE
from desktop.views.main_window import MainWindow
from tests.desktop.conftest import WindowFactory, wait_until
from tests.fixtures.fakehub import FakeHub, make_gguf_repo
from tests.fixtures.import_check import assert_not_imported

REPO = "acme/Tiny-Llama-GGUF"


def _drop(window: MainWindow, files: list[Path]) -> bool:
    """Drag ``files`` onto the window and drop them; True when the window took them."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(f)) for f in files])
    actions = Qt.DropAction.CopyAction
    enter = QDragEnterEvent(QPoint(50, 50), actions, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, enter)
    drop = QDropEvent(QPointF(50, 50), actions, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, drop)
    return enter.isAccepted() and drop.isAccepted()


def _confirm_box(window: MainWindow) -> QMessageBox:
    boxes = [b for b in window.findChildren(QMessageBox) if b.isVisible()]
    assert len(boxes) == 1, boxes
    return boxes[0]


def test_dropping_a_gguf_imports_it_and_shows_its_details(window: MainWindow, qtbot: object, tiny_model: Path, tmp_path: Path) -> None:
    source = shutil.copy(tiny_model, tmp_path / "My-Tiny.gguf")
    assert _drop(window, [Path(source)])
    assert window.current_page() == "models"
    wait_until(qtbot, lambda: window.library_model.row_of("my-tiny") >= 0, 20, "the import")
    entry = Library().get("my-tiny")
    assert entry.managed and Path(entry.path).parent == get_paths().models  # copied into the library
    assert Path(entry.path).read_bytes() == Path(source).read_bytes()
    row = window.library_model.row_of("my-tiny")
    assert window.library_model.index(row, 1).data() == "llama"
    wait_until(qtbot, lambda: window.models.selected() is not None and "llama" in window.models.details.toPlainText(),
               10, "the details panel")
    assert "Metadata" in window.models.details.toPlainText()
    # A file that is not .gguf is refused by the drag itself.
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello")
    assert not _drop(window, [text_file])
    # A broken .gguf shows the reason in the window and adds nothing.
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 20)
    before = window.library_model.rowCount()
    _drop(window, [broken])
    wait_until(qtbot, lambda: bool(window.models.banner.text), 10, "the import error")
    assert "broken.gguf" in window.models.banner.text
    assert window.library_model.rowCount() == before and window.isVisible()


def test_delete_asks_first_and_open_in_chat_picks_the_model(window: MainWindow, qtbot: object, tiny_model: Path, tmp_path: Path) -> None:
    source = Path(shutil.copy(tiny_model, tmp_path / "deletable.gguf"))
    window.import_files([str(source)])
    wait_until(qtbot, lambda: window.library_model.row_of("deletable") >= 0, 20, "the import")
    window.models.select("deletable")
    window.models.chat_button.click()
    assert window.current_page() == "chat" and window.chat.current_entry().name == "deletable"  # type: ignore[union-attr]
    window.show_page("models")
    window.models.select("deletable")
    path = Path(Library().get("deletable").path)
    window.models.delete_button.click()
    box = _confirm_box(window)
    box.button(QMessageBox.StandardButton.Cancel).click()
    QApplication.processEvents()
    assert path.exists() and window.library_model.row_of("deletable") >= 0
    window.models.delete_button.click()
    box = _confirm_box(window)
    next(b for b in box.buttons() if b.text() == "Delete").click()
    wait_until(qtbot, lambda: window.library_model.row_of("deletable") < 0, 10, "the delete")
    assert not path.exists() and source.exists()  # the library's copy went; the user's file stays


@pytest.fixture
def hub(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        make_gguf_repo(server, tmp_path_factory.mktemp("hub"), REPO, downloads=900)
        yield server


def _open_repo(window: MainWindow, qtbot: object) -> None:
    window.show_page("discover")
    wait_until(qtbot, lambda: window.discover.results.rowCount() > 0, 20, "search results")
    assert window.discover.results.result(0).id == REPO
    assert window.discover.select_result(REPO)
    wait_until(qtbot, lambda: window.discover.quants.rowCount() > 0, 20, "the quants")


def test_discover_download_shows_progress_and_lands_in_my_models(window: MainWindow, qtbot: object, hub: FakeHub) -> None:
    # A stall mid-file keeps the download running long enough to watch its progress.
    hub.add_fault("stall", path="Q4_K_M", after=20_000, seconds=0.6)
    _open_repo(window, qtbot)
    quants = window.discover.quants
    names = [quants.group(r).name for r in range(quants.rowCount())]
    assert {"Q2_K", "Q4_K_M", "Q8_0"} <= set(names)
    rec = quants.recommended_row()
    assert rec >= 0 and window.discover.selected_group() is quants.group(rec)
    assert "recommended" in str(quants.index(rec, 0).data())
    fits = {quants.index(r, 2).data().removeprefix("●  ") for r in range(quants.rowCount())}
    assert fits <= {"Full GPU", "Partial GPU", "CPU", "Too large", "Unknown"} | {f for f in fits if f.startswith("Partial GPU")}
    kind = quants.index(rec, 0).data(FIT_ROLE)
    tip = quants.index(rec, 2).data(Qt.ItemDataRole.ToolTipRole)
    assert tip, "the fit badge explains itself on hover"
    assert kind != "too_large"
    row = names.index("Q4_K_M")
    window.discover.quant_view.selectRow(row)
    states: list[str] = []
    window.queue_model.dataChanged.connect(lambda *_: states.append(window.queue_model.progress(0).state))
    window.discover.download_button.click()
    assert window.current_page() == "downloads"
    wait_until(qtbot, lambda: window.queue_model.rowCount() == 1 and window.queue_model.progress(0).state == "done",
               30, "the download")
    progress = window.queue_model.progress(0)
    assert progress.done == progress.total > 0 and "downloading" in states
    assert window.queue_model.index(0, 0).data() == f"{REPO} · Q4_K_M"
    wait_until(qtbot, lambda: any(e.repo == REPO for e in window.library_model.entries()), 10, "My Models")
    entry = next(e for e in window.library_model.entries() if e.repo == REPO)
    assert Path(entry.path).name == "Tiny-Llama-Q4_K_M.gguf"


def test_a_cancelled_download_says_so_and_keeps_nothing(window: MainWindow, qtbot: object, hub: FakeHub) -> None:
    hub.add_fault("stall", path="Q8_0", after=10_000, seconds=3.0)
    _open_repo(window, qtbot)
    names = [window.discover.quants.group(r).name for r in range(window.discover.quants.rowCount())]
    window.discover.quant_view.selectRow(names.index("Q8_0"))
    window.discover.download_button.click()
    wait_until(qtbot, lambda: window.queue_model.rowCount() == 1 and window.queue_model.progress(0).state == "downloading",
               20, "the download to start")
    window.downloads_page.table.selectRow(0)
    assert window.downloads_page.cancel_button.isEnabled()
    window.downloads_page.cancel_button.click()
    wait_until(qtbot, lambda: window.queue_model.progress(0).state == "cancelled", 20, "the cancel")
    assert window.queue_model.index(0, 4).data().startswith("Cancelled")
    assert not window.downloads_page.cancel_button.isEnabled()
    assert not list(get_paths().models.rglob("*Q8_0*")) and not list(get_paths().downloads.rglob("*.partial"))


def test_discover_offline_explains_itself(window: MainWindow, qtbot: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    window.show_page("discover")
    wait_until(qtbot, lambda: bool(window.discover.banner.text), 10, "the offline message")
    assert "offline" in window.discover.banner.text.lower()


def test_settings_theme_defaults_and_presets_are_saved(make_window: WindowFactory, qtbot: object) -> None:
    window = make_window()
    window.show_page("settings")
    wait_until(qtbot, lambda: "Memory" in window.settings_page.hardware_label.text(), 60, "hardware detection")
    assert "llama.cpp backends" in window.settings_page.hardware_label.text()
    assert "CPU backend" in window.settings_page.hardware_label.text()  # the variant ggml picked
    from core import __version__

    assert window.settings_page.about.text().startswith(f"Hearth {__version__} · source checkout · ")
    page = window.settings_page
    page.theme.setCurrentIndex(page.theme.findData("dark"))
    assert window.palette_.dark
    page.defaults.editors["temperature"].setValue(0.3)
    page.save_defaults()
    chat = window.chat
    chat.params.form.editors["top_k"].setValue(7)
    chat.save_preset()
    model = chat.current_entry()
    assert model is not None
    saved = json.loads(get_paths().settings_file.read_text())
    assert saved["theme"] == "dark" and saved["defaults"]["temperature"] == 0.3
    assert saved["presets"][model.name]["top_k"] == 7
    window.show_page("downloads")
    window.close()

    again = make_window()
    assert again.current_page() == "downloads"  # the last page is remembered
    assert again.settings.theme == "dark" and again.palette_.dark
    assert again.chat.params.form.values().top_k == 7  # the model's preset is applied when it is picked
    again.chat.reset_preset()
    assert again.chat.params.form.values().temperature == 0.3 and again.chat.params.form.values().top_k == 40
    again.set_theme("system")


def test_the_window_starts_without_heavy_imports() -> None:
    assert_not_imported("import desktop.app; from desktop.views.main_window import MainWindow",
                        ("torch", "transformers", "peft", "llama_cpp", "huggingface_hub"))
