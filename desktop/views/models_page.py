"""My Models: the library table (import, delete, open in chat, GGUF details) and the Adapters tab."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QSplitter,
    QTableView,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from core.library import GGUFInfo, ModelEntry, read_gguf_info
from core.units import human_count, human_size
from desktop.models.library import LibraryTableModel
from desktop.ops import Executor, Op, error_text
from desktop.views.adapters_view import AdaptersView
from desktop.views.widgets import Banner, button, confirm, muted, page, title


class ModelsPage(QWidget):
    import_requested = Signal(list)  # paths of .gguf files
    open_in_chat = Signal(str)  # model name
    delete_requested = Signal(str)  # model name (after confirmation)
    library_edited = Signal()  # a model's projector was chosen or cleared

    def __init__(self, library: LibraryTableModel, pool: Executor, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.library = library
        self.pool = pool
        body, layout = page()
        outer = QHBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(body)
        self.setObjectName("page")
        layout.addWidget(title("My Models"))
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        layout.addWidget(self.tabs, 1)
        models_tab, layout = page()
        layout.setContentsMargins(0, 8, 0, 0)
        self.adapters = AdaptersView(library, pool)
        self.tabs.addTab(models_tab, "Models")
        self.tabs.addTab(self.adapters, "Adapters")
        self.tabs.currentChanged.connect(lambda i: self.adapters.refresh() if self.tabs.widget(i) is self.adapters else None)
        head = QHBoxLayout()
        head.addWidget(muted("Models on this computer. Drop a .gguf file anywhere on the window to import it."), 1)
        self.import_button = button("Import .gguf…", self.choose_files, tip="Copy a GGUF model into the library (or drop it on the window)")
        self.chat_button = button("Open in chat", self._open, kind="primary")
        self.delete_button = button("Delete…", self._delete, kind="danger")
        for b in (self.import_button, self.chat_button, self.delete_button):
            head.addWidget(b)
        layout.addLayout(head)
        self.banner = Banner()
        layout.addWidget(self.banner)
        self.table = QTableView()
        self.table.setModel(library)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().hide()
        self.table.setShowGrid(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.doubleClicked.connect(lambda _i: self._open())
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._selection_changed())
        self.details = QTextBrowser()
        self.details.setMinimumWidth(260)
        self.details.setHtml("<p style='color:gray'>Select a model to see what its file says about it.</p>")
        side = QWidget()
        column = QVBoxLayout(side)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(6)
        column.addWidget(self._projector_bar())
        column.addWidget(self.details, 1)
        split = QSplitter()
        split.addWidget(self.table)
        split.addWidget(side)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        layout.addWidget(split, 1)
        library.modelReset.connect(self._selection_changed)
        self._selection_changed()

    def _projector_bar(self) -> QWidget:
        """The selected model's vision projector, with Choose… and Clear."""
        bar = QWidget()
        column = QVBoxLayout(bar)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(4)
        self.projector_label = muted("")
        self.projector_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.projector_button = button(
            "Choose projector…", self.choose_projector,
            tip="Pick the model's vision projector (mmproj-*.gguf) so it reads images",
        )
        self.clear_projector_button = button("Clear", lambda: self._set_projector(None), tip="Unpair the projector")
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addStretch(1)
        row.addWidget(self.projector_button)
        row.addWidget(self.clear_projector_button)
        column.addWidget(self.projector_label)
        column.addLayout(row)
        return bar

    def choose_projector(self) -> None:
        entry = self.selected()
        if entry is None:
            return
        folder = str(Path(entry.mmproj or entry.path).parent)
        dialog = QFileDialog(self, f"Vision projector for {entry.name}", folder, "Vision projectors (*mmproj*.gguf);;GGUF files (*.gguf)")
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.fileSelected.connect(lambda file: self._set_projector(str(file)))
        dialog.open()

    def _set_projector(self, path: str | None) -> None:
        """Pair (or unpair, ``None``) the selected model with a projector; a wrong file is refused in the banner."""
        entry = self.selected()
        if entry is None:
            return
        name = entry.name

        def pair() -> ModelEntry:
            from core.library import Library

            return Library().set_mmproj(name, path)

        self.banner.hide()
        Op(pair).on_success(lambda _e: self.library_edited.emit()).on_failure(
            lambda exc: self.banner.show_message(error_text(exc))
        ).run(self.pool)

    def _show_projector(self, entry: ModelEntry | None) -> None:
        registered = entry is not None and entry.source != "hf-cache"
        self.projector_button.setEnabled(registered)
        self.clear_projector_button.setVisible(bool(entry and entry.mmproj) and registered)
        if entry is None:
            self.projector_label.setText("")
        elif entry.vision and entry.mmproj:
            self.projector_label.setText(f"Reads images with {Path(entry.mmproj).name}")
            self.projector_label.setToolTip(entry.mmproj)
        elif entry.mmproj:
            self.projector_label.setText(f"Its projector is missing ({Path(entry.mmproj).name}): choose it again")
            self.projector_label.setToolTip(entry.mmproj)
        else:
            self.projector_label.setText("Text only: no vision projector")
            self.projector_label.setToolTip("Pair an mmproj-*.gguf file from the model's repository to read images")

    def selected(self) -> ModelEntry | None:
        rows = self.table.selectionModel().selectedRows()
        return self.library.entry(rows[0].row()) if rows else None

    def select(self, name: str) -> None:
        row = self.library.row_of(name)
        if row >= 0:
            self.table.selectRow(row)

    def choose_files(self) -> None:
        dialog = QFileDialog(self, "Import GGUF models", "", "GGUF models (*.gguf)")
        dialog.setFileMode(QFileDialog.FileMode.ExistingFiles)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.filesSelected.connect(lambda files: self.import_requested.emit(list(files)))
        dialog.open()

    def _open(self) -> None:
        entry = self.selected()
        if entry is not None:
            self.open_in_chat.emit(entry.name)

    def _delete(self) -> None:
        entry = self.selected()
        if entry is None:
            return
        where = (
            f"The file {entry.path} is deleted from disk."
            if entry.managed
            else f"The file stays where it is ({entry.path}); only the library entry goes."
        )
        if entry.mmproj and entry.managed:
            where += " Its vision projector goes too, unless another model uses it."
        confirm(self, f"Delete {entry.name}?", where, lambda: self.delete_requested.emit(entry.name))

    def _selection_changed(self) -> None:
        entry = self.selected()
        self.chat_button.setEnabled(entry is not None)
        self.delete_button.setEnabled(entry is not None and entry.source != "hf-cache")
        self._show_projector(entry)
        if entry is None:
            return
        path = entry.path
        Op(lambda: read_gguf_info(path)).on_success(lambda info: self._show_details(entry, info)).on_failure(
            lambda exc: self.details.setHtml(f"<p>{html.escape(error_text(exc))}</p>")
        ).run(self.pool)

    def _show_details(self, entry: ModelEntry, info: GGUFInfo) -> None:
        current = self.selected()
        if current is None or current.name != entry.name:
            return
        facts: list[tuple[str, str]] = [
            ("Name", info.name or entry.name),
            ("Architecture", info.architecture),
            ("Parameters", human_count(info.parameters)),
            ("Quantization", info.file_type or "-"),
            ("File size", human_size(info.size_bytes)),
            ("Trained context", f"{info.context_length:,}" if info.context_length else "-"),
            ("Layers", str(info.block_count or "-")),
            ("Embedding size", str(info.embedding_length or "-")),
            ("Attention heads", f"{info.head_count or '-'} (KV {info.head_count_kv or '-'})"),
            ("Vocabulary", f"{info.vocab_size:,}" if info.vocab_size else "-"),
            ("Chat template", "yes" if info.has_chat_template else "no"),
            ("Vision projector", entry.mmproj or "none (reads text only)"),
            ("Files", "<br>".join(html.escape(str(f)) for f in info.files)),
        ]
        rows = "".join(
            f"<tr><td style='color:gray; padding-right:10px'>{k}</td><td>{v if k == 'Files' else html.escape(v)}</td></tr>"
            for k, v in facts
        )
        meta = "".join(
            f"<tr><td style='color:gray; padding-right:10px'>{html.escape(k)}</td>"
            f"<td>{html.escape(_short(v))}</td></tr>"
            for k, v in sorted(info.metadata.items())
            if not k.startswith("tokenizer.chat_template")
        )
        self.details.setHtml(
            f"<h3>{html.escape(entry.name)}</h3><table cellspacing='2'>{rows}</table>"
            f"<h4>Metadata</h4><table cellspacing='2' style='font-size:small'>{meta}</table>"
        )


def _short(value: object, limit: int = 120) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


