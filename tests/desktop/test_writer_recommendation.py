"""The restatement writer in the window: Discover recommends one for this machine with its size, and the
Fine-tune page downloads it in one click (the window's download queue, from a local Hub) and offers it,
ticked, for the documents' restatements; a chat model already in the library is offered at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication

from core.hub.writer import WriterChoice, recommend_writer
from core.library import Library
from core.units import human_size
from desktop.views.main_window import MainWindow
from tests.desktop.conftest import WindowFactory, save_shots, wait_until
from tests.fixtures.fakehub import FakeHub
from tests.fixtures.tool_model import write_scripted_turn_llama

RESTATED = ["In", " 1962", " Ivo", " Brandt", " built", " his", " boat", "."]


@pytest.fixture
def writer_hub(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A local Hub holding the recommended writer's repo, its Q4_K_M file a tiny scripted chat model."""
    choice = recommend_writer()
    model = write_scripted_turn_llama(tmp_path_factory.mktemp("writer-hub") / choice.filename, RESTATED,
                                      name="tiny-writer")
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        server.add_repo(choice.repo_id, {choice.filename: model}, downloads=10, likes=1,
                        gguf={"total": 1_000_000, "architecture": "llama", "context_length": 2048})
        yield server



def _downloaded(window: MainWindow, choice: WriterChoice) -> str | None:
    return next((e.name for e in window.library_model.entries() if e.repo == choice.repo_id), None)


def test_the_writer_is_picked_by_the_machines_memory() -> None:
    gib = 2**30
    assert recommend_writer(16 * gib).title == "Qwen2.5 1.5B Instruct"
    assert recommend_writer(8 * gib).title == "Llama 3.2 1B Instruct"
    assert recommend_writer(2 * gib).title == "Qwen2.5 0.5B Instruct"
    assert recommend_writer(16 * gib).label == "Qwen2.5 1.5B Instruct Q4_K_M, 1.1 GB"


def test_discover_recommends_a_writer_and_downloads_it_in_one_click(
    make_window: WindowFactory, qtbot: object, writer_hub: FakeHub
) -> None:
    choice = recommend_writer()
    window = make_window()
    window.resize(1280, 800)
    window.show_page("discover")
    page = window.discover
    assert page.writer_badge.text() == "Writer for teaching documents"
    assert choice.title in page.writer_title.text() and human_size(choice.size_bytes) in page.writer_title.text()
    wait_until(qtbot, lambda: page.results.rowCount() == 1, 20, "the search")
    save_shots(window, qtbot, "discover-writer")
    page.writer_button.click()
    wait_until(qtbot, lambda: _downloaded(window, choice) is not None, 60, "the writer in the library")
    assert Library().get(str(_downloaded(window, choice))).has_chat_template


def test_the_finetune_page_gets_the_writer_in_one_click_and_offers_it_ticked(
    make_window: WindowFactory, qtbot: object, writer_hub: FakeHub, tmp_path: Path
) -> None:
    choice = recommend_writer()
    window = make_window()
    window.resize(1280, 860)
    window.show_page("finetune")
    form = window.finetune.form
    row = form.writer_row
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "boats.md").write_text("Ivo Brandt built the boat in 1962 at Corrowick.\n" * 30, encoding="utf-8")
    form.add_paths([str(notes)])
    wait_until(qtbot, lambda: form.scan is not None, 30, "the scan")
    # Only the starter (a base model, no chat template) is in the library: nothing can write yet.
    assert row.writers() == [] and row.get_button.isVisible() and not row.check.isVisible()
    assert row.get_button.text() == f"Get a writer: {choice.label}"
    assert row.writer() is None
    save_shots(window, qtbot, "finetune-writer-get")

    row.get_button.click()
    wait_until(qtbot, lambda: _downloaded(window, choice) is not None, 60, "the writer in the library")
    window.show_page("finetune")
    name = _downloaded(window, choice)
    wait_until(qtbot, lambda: row.check.isChecked(), 20, "the writer ticked")
    assert row.combo.currentText() == name and row.writer() == name and not row.get_button.isVisible()
    form.select_base(str(name))
    assert form.spec_inputs()["writer"] == name
    QApplication.processEvents()
    save_shots(window, qtbot, "finetune-writer-ticked")

    row.check.setChecked(False)  # one click off: the rules alone
    assert row.writer() is None and "writer" not in form.spec_inputs()
    form.advanced.select_objective("jsonl")  # a JSONL file has no documents to restate
    row.check.setChecked(True)
    assert "writer" not in form.spec_inputs()
