"""Vision projectors in the window: Discover's "Reads images" badge and the projector that comes with a download,
the download pairing it, and My Models showing, choosing (file dialog) and clearing a model's projector."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtWidgets import QFileDialog

from core.library import Library
from desktop.views.main_window import MainWindow
from tests.desktop.conftest import WindowFactory, save_shots, wait_until
from tests.fixtures.fakehub import FakeHub, make_gguf_repo, make_vision_repo

VISION = "acme/Tiny-Vision-GGUF"
TEXT = "acme/Tiny-Llama-GGUF"


@pytest.fixture
def hub(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        folder = tmp_path_factory.mktemp("vision-hub")
        make_vision_repo(server, folder, VISION, downloads=900, likes=40)
        make_gguf_repo(server, folder, TEXT, split_quant=None, downloads=500, likes=10)
        yield server


def open_repo(window: MainWindow, qtbot: object, repo: str) -> None:
    window.show_page("discover")
    wait_until(qtbot, lambda: window.discover.results.rowCount() == 2, 20, "search results")
    assert window.discover.select_result(repo)
    wait_until(
        qtbot,
        lambda: window.discover.quants.quants is not None and window.discover.quants.quants.repo_id == repo,
        20,
        "the quants",
    )


def pick_file_in_dialog(window: MainWindow, qtbot: object, path: Path) -> None:
    window.models.choose_projector()
    wait_until(qtbot, lambda: window.models.findChild(QFileDialog) is not None, 10, "the file dialog")
    dialog = window.models.findChild(QFileDialog)
    assert dialog is not None
    dialog.selectFile(str(path))
    dialog.accept()


def test_discover_shows_the_projector_that_comes_with_the_download(
    make_window: WindowFactory, qtbot: object, hub: FakeHub
) -> None:
    window = make_window()
    open_repo(window, qtbot, VISION)
    page = window.discover
    assert page.vision_row.isVisible() and page.vision_badge.text() == "Reads images"
    text = page.vision_text.text()
    assert text.startswith("mmproj-F16.gguf (") and "comes with the download" in text
    assert "2 others here" in text
    assert "mmproj-F32.gguf" in page.vision_text.toolTip() and "mmproj-Q8_0.gguf" in page.vision_text.toolTip()
    names = [page.quants.group(r).name for r in range(page.quants.rowCount())]
    assert not any("mmproj" in n.lower() for n in names)  # projectors are not quants
    assert "vision projector" in page.reason.text()  # the fit counts it

    open_repo(window, qtbot, TEXT)
    assert not page.vision_row.isVisible()

    open_repo(window, qtbot, VISION)
    names = [page.quants.group(r).name for r in range(page.quants.rowCount())]
    page.quant_view.selectRow(names.index("Q4_K_M"))
    page.download_button.click()
    wait_until(
        qtbot,
        lambda: any(e.name == "tiny-vision-q4_k_m" and e.vision for e in window.library_model.entries()),
        30,
        "the model paired with its projector",
    )
    entry = Library().get("tiny-vision-q4_k_m")
    assert entry.mmproj is not None and Path(entry.mmproj).name == "mmproj-F16.gguf"


def test_my_models_shows_chooses_and_clears_a_projector(
    make_window: WindowFactory, qtbot: object, tiny_vision: object, hub: FakeHub
) -> None:
    from tests.fixtures.tiny_vision import TinyVision

    assert isinstance(tiny_vision, TinyVision)
    Library().import_file(tiny_vision.model, mode="link", mmproj=tiny_vision.mmproj)
    window = make_window()
    window.resize(1280, 800)
    window.show_page("models")
    wait_until(qtbot, lambda: window.library_model.row_of("tiny-vision-llama") >= 0, 20, "the vision model")
    models = window.models
    models.select("tiny-vision-llama")
    assert models.projector_label.text() == f"Reads images with {tiny_vision.mmproj.name}"
    assert models.clear_projector_button.isVisible() and models.projector_button.isEnabled()
    wait_until(qtbot, lambda: "Vision projector" in models.details.toPlainText(), 10, "model details")
    assert str(tiny_vision.mmproj) in models.details.toPlainText()
    save_shots(window, qtbot, "models-projector")

    models.clear_projector_button.click()
    wait_until(qtbot, lambda: models.projector_label.text() == "Text only: no vision projector", 10, "cleared")
    assert Library().get("tiny-vision-llama").mmproj is None
    assert not models.clear_projector_button.isVisible()

    pick_file_in_dialog(window, qtbot, tiny_vision.model)  # a model is not a projector
    wait_until(qtbot, lambda: bool(models.banner.text), 10, "the refusal")
    assert "not a vision projector" in models.banner.text
    assert Library().get("tiny-vision-llama").mmproj is None

    pick_file_in_dialog(window, qtbot, tiny_vision.mmproj)
    wait_until(qtbot, lambda: models.projector_label.text().startswith("Reads images"), 10, "paired again")
    assert Library().get("tiny-vision-llama").mmproj == str(tiny_vision.mmproj.resolve())

    open_repo(window, qtbot, VISION)
    save_shots(window, qtbot, "discover-projector")

