"""Knowledge: document collections a chat can answer from (``core.docs``), indexed, searched and compared.

Every core call runs on the pool through ``Op``; a ``Collection`` is opened in the thread that uses it
(SQLite connections stay in their thread). One indexing job at a time: add, re-index, embed, each
cancellable, each one transaction in the core (a cancel leaves the collection as it was).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QItemSelectionModel, Qt, QTimer, Signal
from PySide6.QtGui import QDragEnterEvent, QDragLeaveEvent, QDropEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QSplitter,
    QStackedWidget,
    QTableView,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from core.docs import (
    Collection,
    DocsLibrary,
    EmbeddingMismatchError,
    FileStatus,
    IndexReport,
    Passage,
    search,
)
from core.events import Progress
from desktop.models.collections import (
    CollectionsTableModel,
    FilesTableModel,
    PassagesTableModel,
    retrieval_words,
)
from desktop.models.library import LibraryTableModel
from desktop.ops import Executor, Op, error_text
from desktop.theme import LIGHT, Palette
from desktop.views.knowledge_compare import ComparisonView
from desktop.views.widgets import Banner, button, confirm, muted, title

EMPTY_TEXT = (
    "A collection is a set of your own files (notes, manuals, papers) that a chat can answer from. Hearth "
    "finds the passages that match each question and gives them to the model, so the answer cites your "
    "files ([1], [2]) instead of guessing. Turn on “Use my documents” under the chat box to use one."
)
TYPES_TEXT = "Text, Markdown, PDF, Word (.docx) and HTML files. Everything stays on this computer."
DOC_FILTER = "Documents (*.txt *.md *.markdown *.pdf *.docx *.html *.htm);;All files (*)"


def collection_name_for(paths: Sequence[str | Path], taken: Sequence[str]) -> str:
    """A free collection name from the first dropped folder (or file) name: "Lighthouse notes" -> "Lighthouse-notes"."""
    first = Path(paths[0]) if paths else Path("documents")
    stem = first.name if first.is_dir() else first.stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")[:56] or "documents"
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    return candidate


def report_text(report: IndexReport) -> str:
    """What an add or re-index did, in one line."""
    parts = report.counts(unchanged=False, chunks_word="passages")
    if not parts:
        return "Nothing changed on disk since the last index."
    return f"{', '.join(parts).capitalize()} ({report.seconds:.1f} s)."


class KnowledgePage(QWidget):
    """Collections on the left; the open one's files, search, embeddings and comparison on the right."""

    collections_changed = Signal(list)  # names, after any create or delete
    finetune_requested = Signal(list)  # the open collection's indexed files, to teach a model

    def __init__(
        self, library: LibraryTableModel, pool: Executor, docs: DocsLibrary | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.setAcceptDrops(True)
        self.library = library
        self.pool = pool
        self.docs = docs or DocsLibrary()
        self.palette_: Palette = LIGHT
        self.current = ""  # the open collection's name
        self._job: threading.Event | None = None  # the running job's cancel
        self._listed = False
        self._listing = 0  # collection listings in flight
        self._search_serial = 0
        self._pending_embed: str = ""

        self.collections = CollectionsTableModel()
        self.files = FilesTableModel()
        self.passages = PassagesTableModel()

        outer = QVBoxLayout(self)
        outer.setContentsMargins(24, 20, 24, 20)
        outer.setSpacing(10)
        outer.addWidget(title("Knowledge"))
        self.banner = Banner()
        outer.addWidget(self.banner)
        self.stack = QStackedWidget()
        outer.addWidget(self.stack, 1)
        self.stack.addWidget(self._empty_state())
        self.stack.addWidget(self._main_view())
        self.stack.setCurrentIndex(0)

    # -- building --------------------------------------------------------------------------------
    def _empty_state(self) -> QWidget:
        holder = QWidget()
        col = QVBoxLayout(holder)
        col.setContentsMargins(0, 30, 0, 0)
        self.drop_zone = QFrame()
        self.drop_zone.setObjectName("dropZone")
        self.drop_zone.setMaximumWidth(720)
        zone = QVBoxLayout(self.drop_zone)
        zone.setContentsMargins(32, 28, 32, 28)
        zone.setSpacing(12)
        heading = QLabel("Answer from your own documents")
        heading.setObjectName("sectionTitle")
        zone.addWidget(heading)
        explain = QLabel(EMPTY_TEXT)
        explain.setWordWrap(True)
        zone.addWidget(explain)
        zone.addWidget(muted("Drop files or a folder here to make your first collection, or choose them."))
        row = QHBoxLayout()
        row.addWidget(button("Choose a folder…", lambda: self._pick_folder(new=True), kind="primary"))
        row.addWidget(button("Choose files…", lambda: self._pick_files(new=True)))
        row.addStretch(1)
        zone.addLayout(row)
        zone.addWidget(muted(TYPES_TEXT))
        # Centred by stretches, not by an alignment flag: an aligned item gets its size hint, so the wrapped
        # description got the height of one width and was drawn at another (cut mid-line, last line halved).
        centre = QHBoxLayout()
        centre.addStretch(1)
        centre.addWidget(self.drop_zone, 100)
        centre.addStretch(1)
        col.addLayout(centre)
        col.addStretch(1)
        return holder

    def _main_view(self) -> QWidget:
        split = QSplitter()
        split.setChildrenCollapsible(False)
        left = QWidget()
        lcol = QVBoxLayout(left)
        lcol.setContentsMargins(0, 0, 8, 0)
        self.list_view = QTableView()
        self.list_view.setModel(self.collections)
        self._table_style(self.list_view)
        self.list_view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        # The narrow list shows name, files and age; chunks and the kind of search are in the summary line.
        header = self.list_view.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in (1, 4):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        for column in (2, 3):
            self.list_view.setColumnHidden(column, True)
        self.list_view.selectionModel().selectionChanged.connect(lambda *_: self._selection_changed())
        lcol.addWidget(self.list_view, 1)
        new_row = QHBoxLayout()
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("New collection name")
        self.name_edit.returnPressed.connect(self.create_named)
        new_row.addWidget(self.name_edit, 1)
        new_row.addWidget(button("New", self.create_named, tip="Make an empty collection, then add files to it"))
        lcol.addLayout(new_row)
        lcol.addWidget(muted("Or drop a folder here with no collection selected."))
        split.addWidget(left)

        right = QWidget()
        col = QVBoxLayout(right)
        col.setContentsMargins(8, 0, 0, 0)
        col.setSpacing(8)
        head = QHBoxLayout()
        self.name_label = QLabel("")
        self.name_label.setObjectName("sectionTitle")
        head.addWidget(self.name_label)
        head.addStretch(1)
        self.add_files_button = button("Add files…", lambda: self._pick_files(new=False))
        self.add_folder_button = button("Add folder…", lambda: self._pick_folder(new=False))
        self.remove_button = button("Remove file", self.remove_selected, tip="Take the selected files out of the collection")
        self.delete_button = button("Delete…", self.ask_delete, kind="danger", tip="Delete the collection (your files stay)")
        self.finetune_button = button("Fine-tune on these…", self.request_finetune,
                                      tip="Open Fine-tune with this collection's files, to teach a model them")
        for b in (self.add_files_button, self.add_folder_button, self.remove_button, self.finetune_button,
                  self.delete_button):  # the destructive one last
            head.addWidget(b)
        col.addLayout(head)
        self.summary = muted("")
        col.addWidget(self.summary)
        job = QHBoxLayout()
        self.job_bar = QProgressBar()
        self.job_bar.setFixedWidth(200)
        self.job_label = muted("")
        self.cancel_button = button("Cancel", self.cancel_job, tip="Stop; the collection stays as it was")
        job.addWidget(self.job_bar)
        job.addWidget(self.job_label, 1)
        job.addWidget(self.cancel_button)
        self.job_bar.hide()
        self.cancel_button.hide()
        col.addLayout(job)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self._files_tab(), "Files")
        self.tabs.addTab(self._search_tab(), "Search")
        self.tabs.addTab(self._embed_tab(), "Embeddings")
        self.compare = ComparisonView(self.library, self.pool)
        self.tabs.addTab(self.compare, "Which helps here?")
        col.addWidget(self.tabs, 1)
        split.addWidget(right)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 5)
        split.setSizes([440, 720])
        return split

    def _table_style(self, view: QTableView) -> None:
        view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        view.setAlternatingRowColors(True)
        view.verticalHeader().hide()
        view.setShowGrid(False)
        view.setWordWrap(False)
        view.horizontalHeader().setStretchLastSection(True)

    def _files_tab(self) -> QWidget:
        tab = QWidget()
        col = QVBoxLayout(tab)
        col.setContentsMargins(0, 8, 0, 0)
        self.files_view = QTableView()
        self.files_view.setModel(self.files)
        self._table_style(self.files_view)
        self.files_view.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.files_view.selectionModel().selectionChanged.connect(lambda *_: self._update_buttons())
        col.addWidget(self.files_view, 1)
        col.addWidget(muted("Drop more files or folders on this page to add them. Changed files are re-indexed "
                            "when the collection is opened."))
        return tab

    def _search_tab(self) -> QWidget:
        tab = QWidget()
        col = QVBoxLayout(tab)
        col.setContentsMargins(0, 8, 0, 0)
        row = QHBoxLayout()
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("Search this collection, e.g. “when was the tower built?”")
        self.search_edit.returnPressed.connect(self.run_search)
        row.addWidget(self.search_edit, 1)
        row.addWidget(button("Search", self.run_search, kind="primary"))
        col.addLayout(row)
        self.search_note = muted("The passages a chat would be given for this question, best first.")
        col.addWidget(self.search_note)
        split = QSplitter(Qt.Orientation.Vertical)
        self.results_view = QTableView()
        self.results_view.setModel(self.passages)
        self._table_style(self.results_view)
        self.results_view.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.results_view.horizontalHeader().setStretchLastSection(False)
        self.results_view.selectionModel().selectionChanged.connect(lambda *_: self._show_passage())
        self.passage_text = QTextBrowser()
        self.passage_text.setPlaceholderText("Select a passage to read it whole.")
        split.addWidget(self.results_view)
        split.addWidget(self.passage_text)
        split.setSizes([260, 160])
        col.addWidget(split, 1)
        return tab

    def _embed_tab(self) -> QWidget:
        tab = QWidget()
        col = QVBoxLayout(tab)
        col.setContentsMargins(0, 10, 0, 0)
        col.setSpacing(8)
        col.addWidget(muted(
            "Keyword search (BM25) needs no model. An embedding model (a GGUF such as nomic-embed, bge or e5 "
            "from Discover) also finds passages that say the same thing in other words; searches then use both."))
        row = QHBoxLayout()
        self.embed_picker = QComboBox()
        self.embed_picker.setMinimumWidth(260)
        self.embed_picker.setToolTip("A model from your library to embed the passages with")
        self.embed_button = button("Add embeddings", self.embed, kind="primary")
        self.reembed_button = button("Re-embed with this model", lambda: self.embed(replace=True), kind="danger")
        self.reembed_button.hide()
        row.addWidget(QLabel("Embedding model"))
        row.addWidget(self.embed_picker)
        row.addWidget(self.embed_button)
        row.addWidget(self.reembed_button)
        row.addStretch(1)
        col.addLayout(row)
        self.embed_status = muted("")
        col.addWidget(self.embed_status)
        col.addStretch(1)
        self.library.modelReset.connect(self._refresh_embed_models)
        self._refresh_embed_models()
        return tab

    def _refresh_embed_models(self) -> None:
        chosen = self.embed_picker.currentText()
        self.embed_picker.clear()
        entries = self.library.entries()
        # Embedding models first: their names say so (nomic-embed, bge, e5, gte, minilm).
        hint = re.compile(r"embed|bge|e5|gte|minilm|bert", re.IGNORECASE)
        for entry in sorted(entries, key=lambda e: (not hint.search(e.name), e.name.lower())):
            self.embed_picker.addItem(entry.name)
        if chosen:
            self.embed_picker.setCurrentIndex(max(0, self.embed_picker.findText(chosen)))

    def set_palette(self, p: Palette) -> None:
        self.palette_ = p
        self.drop_zone.setStyleSheet(
            f"QFrame#dropZone {{ border: 2px dashed {p.border}; border-radius: 12px; background: {p.surface}; }}"
            f"QFrame#dropZone[hover=\"true\"] {{ border-color: {p.accent}; }}")
        self.files.set_colors(p.ok, p.warn, p.danger)
        self.compare.set_palette(p)

    # -- listing ---------------------------------------------------------------------------------
    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if not self._listed:
            self.refresh()

    def refresh(self, select: str = "") -> None:
        """List the collections again (in the background), then open ``select`` (or keep the open one)."""
        self._listed = True
        self._listing += 1

        def failed(exc: BaseException) -> None:
            self._listing -= 1
            self.banner.show_message(error_text(exc))

        Op(self.docs.list).on_success(lambda infos: self._listed_infos(infos, select or self.current)).on_failure(
            failed).run(self.pool)

    def _listed_infos(self, infos: list[Any], select: str) -> None:
        self._listing -= 1
        before = [i.name for i in self.collections.infos]
        self.collections.set_infos(infos)
        names = [i.name for i in infos]
        if names != before:
            self.collections_changed.emit(names)
        self.stack.setCurrentIndex(1 if infos else 0)
        if not infos:
            self.current = ""
            return
        row = self.collections.row_of(select)
        if row < 0:
            row = 0
        info = infos[row]
        self.list_view.selectionModel().blockSignals(True)
        self.list_view.selectionModel().select(
            self.collections.index(row, 0),
            QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        self.list_view.selectionModel().blockSignals(False)
        opened = info.name != self.current
        self.current = info.name
        self._show_info(info)
        self._load_files()
        self.compare.set_collection(info.name)
        if opened:
            self._opened()

    def _selection_changed(self) -> None:
        rows = self.list_view.selectionModel().selectedRows()
        if not rows:
            return
        info = self.collections.infos[rows[0].row()]
        if info.name != self.current:
            self.current = info.name
            self._show_info(info)
            self._load_files()
            self._opened()

    def _opened(self) -> None:
        """A collection was opened: clear the old one's results and re-index what changed on disk."""
        self.passages.set_passages([])
        self.passage_text.clear()
        self.search_note.setText("The passages a chat would be given for this question, best first.")
        self.embed_status.setText("")
        self.reembed_button.hide()
        self.compare.set_collection(self.current)
        if self._job is None:
            self.run_job("Checking for changed files…", lambda c, progress, cancel: c.refresh(
                progress=progress, cancel=cancel), quiet_when_unchanged=True)

    def _show_info(self, info: Any) -> None:
        self.name_label.setText(info.name)
        parts = [f"{info.indexed} files indexed"]
        if info.skipped:
            parts.append(f"{info.skipped} skipped")
        if info.missing:
            parts.append(f"{info.missing} missing")
        parts += [f"{info.chunks:,} passages", f"{info.words:,} words", f"search: {retrieval_words(info)}"]
        self.summary.setText(" · ".join(parts))
        self._update_buttons()

    def _load_files(self) -> None:
        name = self.current

        def work() -> list[FileStatus]:
            with self.docs.open(name) as c:
                return c.files()

        def done(files: list[FileStatus]) -> None:
            if name == self.current:
                self.files.set_files(files)
                self.files_view.resizeColumnToContents(1)
                self._update_buttons()

        Op(work).on_success(done).on_failure(lambda exc: self.banner.show_message(error_text(exc))).run(self.pool)

    def _update_buttons(self) -> None:
        idle = self._job is None
        for b in (self.add_files_button, self.add_folder_button, self.delete_button, self.embed_button):
            b.setEnabled(idle and bool(self.current))
        self.remove_button.setEnabled(idle and bool(self.files_view.selectionModel().selectedRows()))
        self.finetune_button.setEnabled(bool(self.current) and bool(self._indexed_paths()))

    def _indexed_paths(self) -> list[str]:
        return [f.path for f in self.files.files if f.status == "indexed"]

    def request_finetune(self) -> None:
        """The same files feed a fine-tune: the Fine-tune page opens with them (retrieval and tuning, both)."""
        paths = self._indexed_paths()
        if paths:
            self.finetune_requested.emit(paths)

    # -- creating and adding -----------------------------------------------------------------------
    def create_named(self) -> None:
        name = self.name_edit.text().strip()
        if not name:
            self.banner.show_message("Type a name for the new collection first (letters, digits, '.', '_' or '-').")
            return

        def work() -> str:
            self.docs.create(name).close()
            return name

        def done(made: str) -> None:
            self.name_edit.clear()
            self.banner.hide()
            self.refresh(select=made)

        Op(work).on_success(done).on_failure(lambda exc: self.banner.show_message(error_text(exc))).run(self.pool)

    def add_paths(self, paths: Sequence[str], *, new: bool) -> None:
        """Index ``paths`` into the open collection, or into a new one named after them (``new``)."""
        paths = [str(p) for p in paths if p]
        if not paths or self._job is not None:
            if self._job is not None:
                self.banner.show_message("Wait for the indexing under way to finish (or cancel it) first.")
            return
        self.banner.hide()
        if new or not self.current:
            name = collection_name_for(paths, [i.name for i in self.collections.infos])
            self.stack.setCurrentIndex(1)
            self.current = name
            self.name_label.setText(name)
            self.summary.setText("A new collection")
            self.files.set_files([])
            self.run_job(f"Indexing {len(paths)} item(s) into {name}…",
                         lambda c, progress, cancel: c.add(paths, progress=progress, cancel=cancel), create=name)
        else:
            self.run_job(f"Adding to {self.current}…",
                         lambda c, progress, cancel: c.add(paths, progress=progress, cancel=cancel))

    def _pick_files(self, *, new: bool) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Add documents", str(Path.home()), DOC_FILTER)
        if files:
            self.add_paths(files, new=new)

    def _pick_folder(self, *, new: bool) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of documents", str(Path.home()))
        if folder:
            self.add_paths([folder], new=new)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if any(u.toLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
            self._hover(True)
        else:
            event.ignore()

    def dragLeaveEvent(self, event: QDragLeaveEvent) -> None:
        self._hover(False)
        super().dragLeaveEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        self._hover(False)
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.toLocalFile()]
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        no_selection = not self.list_view.selectionModel().selectedRows()
        self.add_paths(paths, new=self.stack.currentIndex() == 0 or no_selection)

    def _hover(self, on: bool) -> None:
        self.drop_zone.setProperty("hover", "true" if on else "false")
        self.drop_zone.style().unpolish(self.drop_zone)
        self.drop_zone.style().polish(self.drop_zone)

    # -- jobs ------------------------------------------------------------------------------------
    def run_job(
        self, label: str, fn: Callable[[Collection, Callable[[Progress], None], threading.Event], Any], *,
        create: str = "", quiet_when_unchanged: bool = False, after: Callable[[Any], None] | None = None,
    ) -> None:
        """Run ``fn(collection, progress, cancel)`` on the pool with the bar, the label and Cancel."""
        name = create or self.current
        cancel = threading.Event()
        self._job = cancel
        self.job_bar.setRange(0, 0)
        self.job_bar.setVisible(not quiet_when_unchanged)
        self.cancel_button.setVisible(not quiet_when_unchanged)
        self.cancel_button.setEnabled(True)
        self.job_label.setText(label)
        self._update_buttons()
        docs = self.docs
        # A quiet check shows its bar only if it turns out to take a while.
        if quiet_when_unchanged:
            QTimer.singleShot(400, self, lambda: self._reveal(cancel))

        def work(report: Callable[[Any], None]) -> Any:
            made = False
            if create:
                docs.create(create).close()
                made = True
            try:
                with docs.open(name) as c:
                    return fn(c, report, cancel)
            except BaseException:
                if made:  # a new collection whose first indexing failed or was cancelled is not kept
                    docs.delete(create)
                raise

        def done(result: Any) -> None:
            self._job_ended()
            if isinstance(result, IndexReport):
                if not (quiet_when_unchanged and not result.changed):
                    self.job_label.setText(report_text(result))
                else:
                    self.job_label.setText("")
            if after is not None:
                after(result)
            self.refresh(select=name)

        def failed(exc: BaseException) -> None:
            cancelled = cancel.is_set()
            self._job_ended()
            self.job_label.setText("Cancelled: the collection is as it was." if cancelled else "")
            if not cancelled:
                if isinstance(exc, EmbeddingMismatchError):
                    self._mismatch(str(exc))
                else:
                    self.banner.show_message(error_text(exc))
            self.refresh(select="" if create else name)

        Op(work).on_progress(self._job_progress).on_success(done).on_failure(failed).run(self.pool)

    def _reveal(self, cancel: threading.Event) -> None:
        if self._job is cancel:
            self.job_bar.show()
            self.cancel_button.show()

    def _job_progress(self, p: Progress) -> None:
        if self._job is None:
            return
        if p.total:
            self.job_bar.setRange(0, int(p.total))
            self.job_bar.setValue(int(p.done))
        verb = "Embedding passage" if p.stage == "embed" else "Indexing file"
        if p.total:
            tail = f" · {p.message}" if p.message else ""
            self.job_label.setText(f"{verb} {int(p.done) + (1 if p.done < p.total else 0)} of {int(p.total)}{tail}")

    def cancel_job(self) -> None:
        if self._job is not None:
            self._job.set()
            self.cancel_button.setEnabled(False)
            self.job_label.setText("Cancelling…")

    def _job_ended(self) -> None:
        self._job = None
        self.job_bar.hide()
        self.cancel_button.hide()
        self._update_buttons()

    @property
    def busy(self) -> bool:
        """Listing, indexing or searching in the background (opening a collection re-indexes it)."""
        return self._job is not None or self._listing > 0

    # -- removing and deleting -------------------------------------------------------------------
    def remove_selected(self) -> None:
        rows = self.files_view.selectionModel().selectedRows()
        paths = [self.files.path_at(r) for r in rows]
        if paths and self._job is None:
            self.run_job("Removing…", lambda c, _p, _c: c.remove(paths),
                         after=lambda removed: self.job_label.setText(f"Removed {len(removed)} file(s)."))

    def ask_delete(self) -> None:
        if not self.current or self._job is not None:
            return
        name = self.current
        self.delete_box = confirm(self, f"Delete the collection “{name}”?",
                       "Its index is deleted; your files themselves are not touched. Chats that used it go on "
                       "without it.", lambda: self._delete(name))

    def _delete(self, name: str) -> None:
        def done(_r: object) -> None:
            self.current = ""
            self.job_label.setText(f"Deleted {name}.")
            self.refresh()

        Op(lambda: self.docs.delete(name)).on_success(done).on_failure(
            lambda exc: self.banner.show_message(error_text(exc))).run(self.pool)

    # -- search ----------------------------------------------------------------------------------
    def run_search(self) -> None:
        query = self.search_edit.text().strip()
        if not query or not self.current:
            return
        name = self.current
        self._search_serial += 1
        serial = self._search_serial

        def work() -> list[Passage]:
            with self.docs.open(name) as c:
                return search(c, query, 8)

        def done(found: list[Passage]) -> None:
            if serial != self._search_serial:
                return
            self.passages.set_passages(found)
            self.results_view.resizeColumnToContents(0)
            self.results_view.setColumnWidth(2, 150)
            self.results_view.setColumnWidth(3, 140)
            self.results_view.resizeColumnToContents(4)
            if found:
                count = f"{len(found)} passage" + ("s, best first," if len(found) != 1 else ",")
                self.search_note.setText(f"{count} ranked by keywords (BM25).")
                self.results_view.selectRow(0)
            else:
                self.search_note.setText("No passage has these words. Try other words from your documents.")
                self.passage_text.clear()

        Op(work).on_success(done).on_failure(lambda exc: self.banner.show_message(error_text(exc))).run(self.pool)

    def _show_passage(self) -> None:
        rows = self.results_view.selectionModel().selectedRows()
        if not rows:
            return
        p = self.passages.passages[rows[0].row()]
        self.passage_text.setPlainText(f"{Path(p.file).name} · {p.location}\n{p.file}\n\n{p.text}")

    # -- embeddings ------------------------------------------------------------------------------
    def embed(self, replace: bool = False) -> None:
        model = self.embed_picker.currentText()
        if not model or not self.current or self._job is not None:
            return
        self.reembed_button.hide()
        self.embed_status.setText("")

        def work(c: Collection, progress: Callable[[Progress], None], cancel: threading.Event) -> int:
            from core.docs import load_embedder

            with load_embedder(model) as embedder:
                return c.embed(embedder, replace=replace, progress=progress, cancel=cancel)

        def done(count: Any) -> None:
            self.embed_status.setText(f"{count:,} passages embedded with {model}.")

        self.run_job(f"Loading {model} for embeddings…", work, after=done)

    def _mismatch(self, message: str) -> None:
        self.tabs.setCurrentIndex(2)
        self.embed_status.setText(message.split(": search with")[0] + ". Re-embed every passage with the model "
                                  "picked here to use it instead (the old vectors are replaced).")
        self.reembed_button.show()

    def shutdown(self) -> None:
        self.cancel_job()
        self.compare.shutdown()
