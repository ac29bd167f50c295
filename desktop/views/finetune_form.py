"""The Fine-tune page's form: the base model, the documents, the name, and the Advanced panel.

Everything slow (the trainability check of each base, the scan of the documents, the estimate) runs
on the pool and comes back by signals; the form only holds what the user chose.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QToolButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.library import ModelEntry
from core.units import human_count, human_size
from desktop import finetune_runs as runs
from desktop.models.library import LibraryTableModel
from desktop.ops import Executor, Op, error_text
from desktop.theme import LIGHT, Palette
from desktop.views.finetune_advanced import AdvancedPanel
from desktop.views.finetune_writer import WriterRow
from desktop.views.trainpack_panel import TrainingPackPanel
from desktop.views.widgets import Banner, button, muted, title


class TeachForm(QWidget):
    """What to teach which model; ``start_requested`` when the user presses the primary button."""

    start_requested = Signal()

    def __init__(self, library: LibraryTableModel, pool: Executor, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.library = library
        self.pool = pool
        self.palette_: Palette = LIGHT
        self.paths: list[str] = []
        self.scan: runs.DocumentScan | None = None
        self._scan_serial = 0
        self._untrainable: dict[str, str] = {}  # path -> reason
        self._checked: set[str] = set()
        self._checking = False  # the trainability checks import transformers: only once the page is seen
        self._name_edited = False
        self.preferred_base: Callable[[], str | None] = lambda: None

        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(12)
        col.addWidget(title("Fine-tune"))
        col.addWidget(muted("Teach a model your documents. Training runs on this computer; nothing leaves it."))
        self.banner = Banner()
        col.addWidget(self.banner)
        self.pack_ready = False  # the training packages import (a source install, or the training pack)
        self.pack_panel = TrainingPackPanel(pool)
        self.pack_panel.ready.connect(self._pack_ready)
        col.addWidget(self.pack_panel)

        grid = QGridLayout()
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(8)
        grid.addWidget(QLabel("Model"), 0, 0)
        self.base_combo = QComboBox()
        self.base_combo.setMinimumWidth(320)
        self.base_combo.currentIndexChanged.connect(lambda _i: self._inputs_changed())
        grid.addWidget(self.base_combo, 0, 1)
        self.base_note = muted("")
        grid.addWidget(self.base_note, 0, 2)
        grid.setColumnStretch(2, 1)
        col.addLayout(grid)

        # The documents (hidden while the goal is a JSONL file, which the file note names instead).
        self.documents_box = QWidget()
        docs_col = QVBoxLayout(self.documents_box)
        docs_col.setContentsMargins(0, 0, 0, 0)
        docs_col.setSpacing(12)
        docs_col.addWidget(title("Documents", "sectionTitle"))
        self.drop_zone = QFrame()
        self.drop_zone.setObjectName("dropZone")
        zone = QVBoxLayout(self.drop_zone)
        zone.setContentsMargins(16, 14, 16, 14)
        zone.setSpacing(8)
        self.drop_hint = QLabel("Drop files or folders anywhere on this page")
        self.drop_hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.drop_hint.setObjectName("sectionTitle")
        zone.addWidget(self.drop_hint)
        types = muted("Text, Markdown, PDF, Word (.docx) and HTML. Other files are listed and skipped.")
        types.setAlignment(Qt.AlignmentFlag.AlignCenter)
        zone.addWidget(types)
        row = QHBoxLayout()
        row.addStretch(1)
        self.add_files_button = button("Add files…", self.choose_files)
        self.add_folder_button = button("Add folder…", self.choose_folder)
        self.clear_button = button("Clear", self.clear_documents)
        for b in (self.add_files_button, self.add_folder_button, self.clear_button):
            row.addWidget(b)
        self.clear_button.hide()
        row.addStretch(1)
        zone.addLayout(row)
        docs_col.addWidget(self.drop_zone)

        self.files = QTreeWidget()
        self.files.setObjectName("documentList")
        self.files.setHeaderLabels(["File", "Type", "Size", "Tokens", ""])
        self.files.setRootIsDecorated(False)
        self.files.setAlternatingRowColors(True)
        self.files.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        header = self.files.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for c in (1, 2, 3):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.files.setMinimumHeight(140)
        self.files.hide()
        docs_col.addWidget(self.files, 4)
        self.scan_label = muted("")
        self.scan_label.hide()
        docs_col.addWidget(self.scan_label)
        self.writer_row = WriterRow(library, pool)  # restatements by a chat model (MainWindow wires its download)
        self.writer_row.changed.connect(self._inputs_changed)
        docs_col.addWidget(self.writer_row)
        col.addWidget(self.documents_box)  # it grows (stretch 4) while it lists files: _show_scan
        self._column = col
        self.file_note = muted("")
        self.file_note.hide()
        col.addWidget(self.file_note)

        name_row = QHBoxLayout()
        name_row.addWidget(QLabel("Name"))
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("a name for what it learns (suggested from your documents)")
        self.name_edit.setAcceptDrops(False)  # a dropped folder is documents, not a name
        self.name_edit.textEdited.connect(self._name_typed)
        self.name_edit.textChanged.connect(lambda _t: self._inputs_changed())
        name_row.addWidget(self.name_edit, 1)
        col.addLayout(name_row)

        self.advanced_toggle = QToolButton()
        self.advanced_toggle.setObjectName("flat")
        self.advanced_toggle.setCheckable(True)
        self.advanced_toggle.setText("▸ Advanced")
        self.advanced_toggle.toggled.connect(self._toggle_advanced)
        col.addWidget(self.advanced_toggle, 0, Qt.AlignmentFlag.AlignLeft)
        self.advanced = AdvancedPanel(library)
        self.advanced.changed.connect(self._inputs_changed)
        self.advanced.hide()
        col.addWidget(self.advanced)

        self.estimate_label = muted("")
        self.estimate_label.hide()
        col.addWidget(self.estimate_label)
        start_row = QHBoxLayout()
        self.start_button = button("Teach it my documents", self.start_requested.emit, kind="primary")
        self.start_button.setMinimumHeight(34)
        start_row.addWidget(self.start_button)
        self.reason_label = muted("")
        start_row.addWidget(self.reason_label, 1)
        col.addLayout(start_row)
        col.addStretch(1)
        self._estimate_timer = QTimer(self)
        self._estimate_timer.setSingleShot(True)
        self._estimate_timer.setInterval(300)
        self._estimate_timer.timeout.connect(self._estimate)
        self.estimate: runs.CostEstimate | None = None
        library.modelReset.connect(self.refresh_bases)
        self.refresh_bases()

    # -- base models -----------------------------------------------------------------------------
    def refresh_bases(self) -> None:
        current = self.base_name() or self.preferred_base()
        self.base_combo.blockSignals(True)
        self.base_combo.clear()
        for entry in self.library.entries():
            self.base_combo.addItem(entry.name, entry)
        self.base_combo.blockSignals(False)
        if current:
            self.select_base(current)
        for entry in self.library.entries():
            self._check_base(entry)
        self._mark_bases()
        self._inputs_changed()

    def select_base(self, name: str) -> None:
        index = self.base_combo.findText(name)
        if index >= 0:
            self.base_combo.setCurrentIndex(index)

    def base_entry(self) -> ModelEntry | None:
        entry = self.base_combo.currentData()
        return entry if isinstance(entry, ModelEntry) else None

    def base_name(self) -> str | None:
        entry = self.base_entry()
        return entry.name if entry else None

    def start_checks(self) -> None:
        """Check which library models can be trained (from the first time the page is shown)."""
        self._checking = True
        if self.pack_ready:
            return
        self.pack_panel.check()  # ready at once when the packages import; else it offers the install
        self._update_button()

    def _pack_ready(self) -> None:
        self.pack_ready = True
        for entry in self.library.entries():
            self._check_base(entry)
        self._update_button()

    def _check_base(self, entry: ModelEntry) -> None:
        if not self._checking or not self.pack_ready or entry.path in self._checked:
            return
        self._checked.add(entry.path)
        path = entry.path

        def failed(exc: BaseException) -> None:
            self._untrainable[path] = error_text(exc)
            self._mark_bases()
            self._update_button()

        Op(lambda: runs.check_base(path)).on_success(lambda _r: None).on_failure(failed).run(self.pool)

    def _mark_bases(self) -> None:
        model = self.base_combo.model()
        assert isinstance(model, QStandardItemModel)
        for row in range(self.base_combo.count()):
            entry = self.base_combo.itemData(row)
            item = model.item(row)
            reason = self._untrainable.get(entry.path, "") if isinstance(entry, ModelEntry) else ""
            item.setEnabled(not reason)
            item.setToolTip(reason or entry.path)
        reason = self._base_problem()
        self.base_note.setText(reason)
        self.base_note.setToolTip(reason)

    def _base_problem(self) -> str:
        entry = self.base_entry()
        if entry is None:
            return "No models in the library yet: download one on Discover first."
        return self._untrainable.get(entry.path, "")

    # -- documents -------------------------------------------------------------------------------
    def choose_files(self) -> None:
        dialog = QFileDialog(self, "Add documents")
        dialog.setFileMode(QFileDialog.FileMode.ExistingFiles)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.filesSelected.connect(lambda files: self.add_paths(list(files)))
        dialog.open()

    def choose_folder(self) -> None:
        dialog = QFileDialog(self, "Add a folder of documents")
        dialog.setFileMode(QFileDialog.FileMode.Directory)
        dialog.setOption(QFileDialog.Option.ShowDirsOnly, True)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.fileSelected.connect(lambda folder: self.add_paths([folder]))
        dialog.open()

    def add_paths(self, paths: list[str]) -> None:
        for p in paths:
            if p and p not in self.paths:
                self.paths.append(p)
        self._rescan()

    def clear_documents(self) -> None:
        self.paths = []
        self._rescan()

    def _rescan(self) -> None:
        self._scan_serial += 1
        serial = self._scan_serial
        self.scan = None
        if not self._name_edited:
            self.name_edit.clear()
        if not self.paths:
            self._show_scan(serial, None)
            return
        self.scan_label.setText("Reading the documents…")
        self.scan_label.show()
        paths = list(self.paths)
        Op(lambda: runs.scan_documents(paths)).on_success(lambda scan: self._show_scan(serial, scan)).on_failure(
            lambda exc: self._show_scan(serial, runs.DocumentScan([], False, error_text(exc)))
        ).run(self.pool)

    def _show_scan(self, serial: int, scan: runs.DocumentScan | None) -> None:
        if serial != self._scan_serial:
            return  # a newer scan is under way
        self.scan = scan
        self.clear_button.setVisible(bool(self.paths))
        self._fill_files(scan)
        self.scan_label.setVisible(scan is not None)
        if scan is None:
            self.scan_label.setText("")
        else:
            used = [f for f in scan.files if not f.skipped]
            skipped = len(scan.files) - len(used)
            self.scan_label.setText(
                (f"{len(used)} document{'s' if len(used) != 1 else ''}, about {human_count(scan.total_tokens)} tokens"
                 if used else "Nothing to learn from yet")
                + (f" · {skipped} skipped" if skipped else ""))
        if scan is not None and scan.usable and not self._name_edited:
            base = self.base_name() or "model"
            method = self.advanced.method_name()
            paths = list(self.paths)
            Op(lambda: runs.suggest_name(base, paths, method)).on_success(self._suggested).run(self.pool)
        self._inputs_changed()

    def _fill_files(self, scan: runs.DocumentScan | None) -> None:
        """The scan's files in the list (skipped ones greyed in the palette's muted colour)."""
        self.files.clear()
        self.files.setVisible(bool(scan and scan.files))
        self._column.setStretchFactor(self.documents_box, 4 if scan and scan.files else 0)
        grey = QColor(self.palette_.muted)
        for f in scan.files if scan else []:
            item = QTreeWidgetItem([
                _short_path(f.path, self.paths), f.type, human_size(f.size),
                "-" if f.tokens is None or f.skipped else f"{f.tokens:,}", f"skipped: {f.reason}" if f.skipped else "",
            ])
            item.setToolTip(0, f.path)
            item.setToolTip(4, f.reason or "")
            for c in (2, 3):
                item.setTextAlignment(c, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if f.skipped:
                for c in range(5):
                    item.setForeground(c, grey)
            self.files.addTopLevelItem(item)

    def _suggested(self, name: str) -> None:
        if not self._name_edited and self.scan is not None:
            self.name_edit.setText(name)

    def _name_typed(self, text: str) -> None:
        self._name_edited = bool(text.strip())

    # -- advanced --------------------------------------------------------------------------------
    def _toggle_advanced(self, shown: bool) -> None:
        self.advanced.setVisible(shown)
        self.advanced_toggle.setText(("▾" if shown else "▸") + " Advanced")

    # -- the button ------------------------------------------------------------------------------
    def why_not(self) -> str:
        """Why the primary button is disabled, or "" when it can start."""
        if self._checking and not self.pack_ready:
            return "Install the training pack above first."
        base = self._base_problem()
        if base:
            return base
        if self.advanced.objective() == "jsonl":
            data = self.advanced.data_path()
            if not data:
                return "Pick a JSONL file under Advanced."
            if not Path(data).expanduser().is_file():
                return f"There is no file {data}: pick the JSONL file again under Advanced."
        elif not self.paths:
            return "Add documents to learn from: drop files or folders here, or use Add files… or Add folder…"
        elif self.scan is None:
            return "Reading the documents…"
        elif not self.scan.usable:
            return self.scan.why_not or "None of these files has text to learn from."
        elif self.advanced.objective() == "qa" and not self.advanced.qa_model():
            return "Pick the model that writes the questions under Advanced."
        if not self.name_edit.text().strip():
            return "Give it a name."
        try:
            runs.check_name(self.name_edit.text().strip())
        except Exception as exc:
            return error_text(exc)
        if self.estimate is not None and self.estimate.problems:
            return " ".join(self.estimate.problems)
        return ""

    def _update_button(self) -> None:
        reason = self.why_not()
        on_file = self.advanced.objective() == "jsonl"
        self.start_button.setText("Train on my file" if on_file else "Teach it my documents")
        self.documents_box.setVisible(not on_file)
        self.file_note.setVisible(on_file)
        data = self.advanced.data_path()
        self.file_note.setText(f"Trains on {Path(data).name}, the JSONL file chosen under Advanced." if data
                               else "Trains on a JSONL file: choose it under Advanced.")
        self.start_button.setEnabled(not reason)
        self.reason_label.setText(reason)
        self.start_button.setToolTip(reason)

    def _inputs_changed(self) -> None:
        self._mark_bases()
        self.estimate = None
        self.estimate_label.setText("")
        self.estimate_label.hide()
        self._update_button()
        if not self.why_not():
            self._estimate_timer.start()

    def spec_inputs(self) -> dict[str, Any]:
        """The arguments of ``finetune_runs.spec_from_inputs`` for what the form shows."""
        entry = self.base_entry()
        assert entry is not None
        inputs = {"base": entry.name, **self.advanced.spec_inputs(self.paths), "name": self.name_edit.text().strip()}
        writer = self.writer_row.writer()
        if writer and "docs" in inputs:
            inputs["writer"] = writer
        return inputs

    def _estimate(self) -> None:
        if self.why_not():
            return
        inputs, scan = self.spec_inputs(), self.scan

        def work() -> runs.CostEstimate:
            return runs.estimate_cost(inputs, scan)

        serial = self._scan_serial
        Op(work).on_success(lambda est: self._show_estimate(serial, est)).on_failure(
            lambda exc: (self.estimate_label.setText(error_text(exc)), self.estimate_label.show())).run(self.pool)

    def _show_estimate(self, serial: int, est: runs.CostEstimate | None) -> None:
        if serial != self._scan_serial:
            return
        self.estimate = est
        self.estimate_label.setText(estimate_text(est))
        self.estimate_label.show()
        self._update_button()

    def set_palette(self, p: Palette) -> None:
        self.palette_ = p
        self.drop_zone.setStyleSheet(
            f"QFrame#dropZone {{ border: 2px dashed {p.border}; border-radius: 10px; background: {p.surface}; }}"
            f"QFrame#dropZone[hover=\"true\"] {{ border-color: {p.accent}; }}")
        if self.scan is not None:
            self._fill_files(self.scan)  # recoloured only: the estimate and the name stay as they are

    def set_drop_hover(self, hover: bool) -> None:
        self.drop_zone.setProperty("hover", "true" if hover else "false")
        self.drop_zone.style().unpolish(self.drop_zone)
        self.drop_zone.style().polish(self.drop_zone)


def estimate_text(est: runs.CostEstimate | None) -> str:
    """The estimate in a sentence: memory, time, disk."""
    if est is None:
        return "Hearth sizes the run to this computer's memory when it starts."
    parts = []
    if est.peak_memory:
        have = f" ({human_size(est.available_memory)} available)" if est.available_memory else ""
        parts.append(f"needs about {human_size(est.peak_memory)} of memory{have}")
    seconds = est.total_seconds
    if seconds:
        minutes = seconds / 60
        # Knowledge views stop when the questions asked in other words stop improving: often sooner.
        parts.append(("at most about " if est.stops_early else "about ")
                     + (f"{max(1, round(minutes))} min" if minutes >= 1 else "a minute")
                     + " on this machine (estimated)")
    if est.disk_needed:
        free = f" ({human_size(est.disk_free)} free)" if est.disk_free else ""
        parts.append(f"{human_size(est.disk_needed)} of disk{free}")
    text = ("This run " + ", ".join(parts) + ".") if parts else ""
    if est.problems:
        text += " " + " ".join(est.problems)
    if est.device_note:
        text += " " + est.device_note
    return html.unescape(text.strip())


def _short_path(path: str, roots: list[str]) -> str:
    for root in roots:
        r = Path(root)
        if r.is_dir():
            try:
                return str(Path(path).relative_to(r.parent))
            except ValueError:
                continue
    return Path(path).name
