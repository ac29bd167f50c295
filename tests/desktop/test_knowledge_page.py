"""The Knowledge page (document collections) and "Use my documents" in the chat, on real SQLite FTS5.

The page runs over a real ``DocsLibrary`` in the test's Hearth home; the chat test answers with a tiny
scripted llama through the real engine, so the passages really go through the prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QMessageBox

from core.docs import DocsLibrary, DocsTurn, load_embedder
from core.docs.context import read_docs_message
from core.library import Library
from desktop.models.library import LibraryTableModel
from desktop.ops import Executor
from desktop.theme import apply_theme
from desktop.views.chat_docs import SourcesStrip
from desktop.views.knowledge_page import KnowledgePage
from desktop.views.main_window import MainWindow
from tests.desktop.conftest import WindowFactory, wait_until
from tests.fixtures.scripted_model import write_scripted_chat_llama
from tests.fixtures.tiny_embed import write_tiny_bert

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / ".screenshots"
KEEPER = ("The lighthouse of Saint Avel was built in 1887 on a granite reef. Its lamp can be seen from 32 "
          "kilometres away. Keeper Marguerite Olier served there for 41 years and painted the lamp room blue "
          "every spring.\n")
LOG = ("The fog horn sounds twice every 60 seconds. Olier wrote her log in green ink. The supply boat from Brest "
       "came every Thursday.\n")
SCRIPT = ["Built", " in", " 1887", " [1]", "."]


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    folder = tmp_path / "Lighthouse notes"
    folder.mkdir()
    (folder / "keeper.md").write_text("# The keeper\n\n" + KEEPER * 4, encoding="utf-8")
    (folder / "log.txt").write_text(LOG * 4, encoding="utf-8")
    (folder / "empty.txt").write_text("", encoding="utf-8")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    return folder


@pytest.fixture
def make_page(qtbot: Any, hearth_home: Path) -> Iterator[Callable[[], KnowledgePage]]:
    model = LibraryTableModel()
    model.set_entries(Library(discover_hf_cache=False).models(include_discovered=False))
    pool = Executor(3, "test-knowledge")
    pages: list[KnowledgePage] = []

    def factory() -> KnowledgePage:
        page = KnowledgePage(model, pool)
        qtbot.addWidget(page)
        page.resize(1180, 760)
        page.set_palette(apply_theme("light"))
        page.show()
        pages.append(page)
        wait_until(qtbot, lambda: page._listed and not page.busy, 10, "the list")
        QApplication.processEvents()
        return page

    yield factory
    for page in pages:
        page.shutdown()
    pool.shutdown(wait=True, timeout=10)
    apply_theme("light")


def drop(page: KnowledgePage, *paths: Path) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(QPoint(300, 300), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    page.dragEnterEvent(enter)
    assert enter.isAccepted()
    page.dropEvent(QDropEvent(QPointF(300, 300), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                              Qt.KeyboardModifier.NoModifier))


def settle(qtbot: Any, page: KnowledgePage) -> None:
    wait_until(qtbot, lambda: not page.busy, 60, "the indexing")
    for _ in range(20):
        QApplication.processEvents()


def shot(widget: Any, name: str, set_palette: Callable[[Any], None]) -> None:
    SHOTS.mkdir(exist_ok=True)
    for theme in ("light", "dark"):
        set_palette(apply_theme(theme))
        for _ in range(5):
            QApplication.processEvents()
        assert widget.grab().save(str(SHOTS / f"knowledge-{name}-{theme}.png"))
    set_palette(apply_theme("light"))


def test_an_empty_page_says_what_collections_are_for(make_page: Callable[[], KnowledgePage]) -> None:
    page = make_page()
    assert page.stack.currentIndex() == 0
    text = page.drop_zone.findChildren(type(page.name_label))
    assert any("answer from" in label.text().lower() for label in text)
    shot(page, "empty", page.set_palette)


def test_a_dropped_folder_becomes_a_collection_with_file_statuses_and_search(
    make_page: Callable[[], KnowledgePage], notes: Path, qtbot: Any
) -> None:
    page = make_page()
    drop(page, notes)
    assert page.busy  # indexing in the background: the window keeps running
    settle(qtbot, page)
    assert page.banner.text == "", page.banner.text
    assert page.current == "Lighthouse-notes" and page.stack.currentIndex() == 1
    assert [i.name for i in page.collections.infos] == ["Lighthouse-notes"]
    wait_until(qtbot, lambda: len(page.files.files) == 4, 10, "the files")
    by_name = {Path(f.path).name: f for f in page.files.files}
    assert by_name["keeper.md"].status == "indexed" and by_name["log.txt"].status == "indexed"
    assert by_name["empty.txt"].status == "skipped" and by_name["empty.txt"].reason
    assert by_name["broken.pdf"].status == "skipped" and by_name["broken.pdf"].reason
    assert "2 files indexed" in page.summary.text() and "keywords only" in page.summary.text()
    shot(page, "collection", page.set_palette)

    # Search shows the best passages with file, location and score.
    page.tabs.setCurrentIndex(1)
    page.search_edit.setText("when was the lighthouse built")
    page.run_search()
    wait_until(qtbot, lambda: bool(page.passages.passages), 10, "the passages")
    first = page.passages.passages[0]
    assert Path(first.file).name == "keeper.md" and "1887" in first.text
    index = page.passages.index(0, 3)
    assert page.passages.data(index) == first.location and page.passages.data(page.passages.index(0, 4))
    assert "1887" in page.passage_text.toPlainText()
    shot(page, "search", page.set_palette)

    # A changed file is re-indexed when the collection is opened again.
    (notes / "log.txt").write_text(LOG * 4 + "The lamp was automated in 1996.\n", encoding="utf-8")
    page2 = make_page()
    settle(qtbot, page2)
    assert page2.current == "Lighthouse-notes"
    assert "1 re-indexed" in page2.job_label.text(), page2.job_label.text()


def test_delete_asks_first_and_cancel_keeps_the_collection(
    make_page: Callable[[], KnowledgePage], notes: Path, qtbot: Any
) -> None:
    page = make_page()
    drop(page, notes / "keeper.md")
    settle(qtbot, page)
    assert page.current == "keeper"
    page.ask_delete()
    box = page.delete_box
    assert isinstance(box, QMessageBox) and "keeper" in box.text()
    box.button(QMessageBox.StandardButton.Cancel).click()
    QApplication.processEvents()
    assert DocsLibrary().exists("keeper")
    page.ask_delete()
    box = page.delete_box
    next(b for b in box.buttons() if box.buttonRole(b) == QMessageBox.ButtonRole.DestructiveRole).click()
    wait_until(qtbot, lambda: not DocsLibrary().exists("keeper") and page.stack.currentIndex() == 0, 10, "deleted")
    assert notes.joinpath("keeper.md").exists()  # the user's file stays


def test_cancelling_the_first_indexing_leaves_no_collection(
    make_page: Callable[[], KnowledgePage], tmp_path: Path, qtbot: Any
) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(400):
        (folder / f"note-{i:03}.txt").write_text(f"Note {i}: " + LOG, encoding="utf-8")
    page = make_page()
    drop(page, folder)
    page.cancel_job()
    settle(qtbot, page)
    assert "Cancelled" in page.job_label.text()
    assert DocsLibrary().names() == []


def test_a_chat_with_my_documents_puts_passages_in_the_prompt_and_shows_sources(
    make_window: WindowFactory, notes: Path, hearth_home: Path, qtbot: Any
) -> None:
    path = write_scripted_chat_llama(hearth_home / "scripted-chat.gguf", SCRIPT)
    Library(discover_hf_cache=False).import_file(path, mode="link", name="scripted-chat")
    window: MainWindow = make_window()
    wait_until(qtbot, lambda: window.library_model.row_of("scripted-chat") >= 0, 30, "the scripted model")
    with DocsLibrary().create("lighthouse") as c:
        c.add([notes])
    window.show_page("knowledge")
    wait_until(qtbot, lambda: window.knowledge.current == "lighthouse" and not window.knowledge.busy, 20, "listed")
    window.show_page("chat")
    page = window.chat
    page.select_model("scripted-chat")
    form = page.params.form.editors
    form["temperature"].setValue(0)
    form["max_tokens"].setValue(len(SCRIPT))
    form["n_ctx"].setValue(1024)
    form["n_threads"].setValue(1)
    assert page.docs_toggle.check.isEnabled()
    page.docs_toggle.check.setChecked(True)
    assert page.docs_toggle.collection() == "lighthouse"
    page.composer.edit.setPlainText("When was the lighthouse built?")
    page.send()
    wait_until(qtbot, lambda: not page.controller.streaming, 90, "the answer")
    conv_id = page.current_id
    assert conv_id is not None
    stored = window.store.messages(conv_id)
    assert [m.role for m in stored] == ["user", "assistant"]
    parsed = read_docs_message(stored[0].content)
    assert parsed is not None and parsed.question == "When was the lighthouse built?"
    assert "1887" in stored[0].content and parsed.sources[0].file == "keeper.md"
    assert "1887" in stored[1].content
    conv = window.store.get(conv_id)
    assert conv.docs == "lighthouse" and conv.title == "When was the lighthouse built?"
    # The user's bubble shows the question only; the answer lists its sources (once the finished answer's
    # reload has rebuilt the bubbles).
    for _ in range(10):
        QApplication.processEvents()
    user, answer = page.transcript.bubbles
    assert user.text.toPlainText().strip() == "When was the lighthouse built?"
    assert "passage" in user.stats.text()
    strip = answer.findChild(SourcesStrip)
    assert strip is not None and strip.links[0].text().startswith("[1] keeper.md")
    strip.links[0].click()
    assert not strip.passage.isHidden() and "1887" in strip.passage.text()
    for _ in range(10):
        QApplication.processEvents()
    shot(window, "chat-sources", lambda p: (window.set_theme("dark" if p.dark else "light")))
    # Reopened, the chat still has its collection switched on.
    page.new_chat()
    page.docs_toggle.check.setChecked(False)
    page.open_conversation(conv_id)
    assert page.docs_toggle.collection() == "lighthouse"

    # Embedded with a library model, the collection is searched by keywords and vectors (hybrid).
    bert = Library(discover_hf_cache=False).import_file(write_tiny_bert(hearth_home / "tiny-bert.gguf", n_ctx=1024),
                                                        mode="link", name="tiny-bert")
    with DocsLibrary().open("lighthouse") as c, load_embedder(bert.name) as embedder:
        c.embed(embedder)
    turns: list[DocsTurn] = []
    page.controller.docs_used.connect(turns.append)
    page.new_chat()
    page.docs_toggle.check.setChecked(True)
    page.composer.edit.setPlainText("When was the lighthouse built?")
    page.send()
    wait_until(qtbot, lambda: bool(turns) and not page.controller.streaming, 90, "the hybrid answer")
    assert "vector" in turns[0].context.passages[0].sources
    assert not any("keywords only" in note for note in turns[0].notes)


def test_which_helps_here_runs_the_comparison_end_to_end(
    make_page: Callable[[], KnowledgePage], notes: Path, hearth_home: Path, qtbot: Any
) -> None:
    path = write_scripted_chat_llama(hearth_home / "scripted-chat.gguf", SCRIPT)
    Library(discover_hf_cache=False).import_file(path, mode="link", name="scripted-chat")
    page = make_page()
    page.library.set_entries(Library(discover_hf_cache=False).models(include_discovered=False))
    drop(page, notes)
    settle(qtbot, page)
    page.tabs.setCurrentIndex(3)
    view = page.compare
    view.base_picker.setCurrentIndex(view.base_picker.findText("scripted-chat"))
    view.run()
    wait_until(qtbot, lambda: view._cancel is None, 300, "the comparison")
    assert view.banner.text == "", view.banner.text
    assert view.result is not None, (view.progress_label.text(), view.collection, view.base_picker.currentText())
    assert view.result is not None and view.table.rowCount() >= 2
    assert view.recommendation.text()
    shot(page, "compare", page.set_palette)


def test_embeddings_from_a_library_model_and_the_re_embed_offer_for_another(
    make_page: Callable[[], KnowledgePage], notes: Path, hearth_home: Path, qtbot: Any
) -> None:
    library = Library(discover_hf_cache=False)
    for name, dim in (("tiny-bert", 32), ("other-bert", 16)):
        library.import_file(write_tiny_bert(hearth_home / f"{name}.gguf", n_ctx=1024, n_embd=dim), mode="link",
                            name=name)
    page = make_page()
    page.library.set_entries(library.models(include_discovered=False))
    drop(page, notes)
    settle(qtbot, page)
    page.embed_picker.setCurrentIndex(page.embed_picker.findText("tiny-bert"))
    page.embed_button.click()
    wait_until(qtbot, lambda: "embedded with tiny-bert" in page.embed_status.text(), 60, "the embeddings")
    with DocsLibrary().open(page.current) as c:
        assert (c.embed_model, c.embed_dim) == ("tiny-bert", 32)

    # Another model (another dimension) is refused with an offer to re-embed; taking it replaces the vectors.
    page.embed_picker.setCurrentIndex(page.embed_picker.findText("other-bert"))
    page.embed_button.click()
    wait_until(qtbot, lambda: page.reembed_button.isVisibleTo(page), 60, "the re-embed offer")
    assert "Re-embed every passage" in page.embed_status.text() and "Traceback" not in page.embed_status.text()
    page.reembed_button.click()
    wait_until(qtbot, lambda: "embedded with other-bert" in page.embed_status.text(), 60, "the re-embedding")
    with DocsLibrary().open(page.current) as c:
        assert (c.embed_model, c.embed_dim) == ("other-bert", 16)


def test_a_collections_files_feed_a_fine_tune(make_window: WindowFactory, notes: Path, qtbot: Any) -> None:
    window: MainWindow = make_window()
    with DocsLibrary().create("lighthouse") as c:
        c.add([notes])
    window.show_page("knowledge")
    page = window.knowledge
    wait_until(qtbot, lambda: page.current == "lighthouse" and not page.busy and page.finetune_button.isEnabled(),
               20, "the collection")
    page.finetune_button.click()
    assert window.stack.currentWidget() is window.finetune
    indexed = sorted(str(notes / name) for name in ("keeper.md", "log.txt"))
    assert sorted(window.finetune.form.paths) == indexed  # the skipped files stay out
