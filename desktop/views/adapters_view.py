"""The Adapters tab of My Models: trained adapters, what their manifest says, and what to do with them."""

from __future__ import annotations

import html
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QSplitter,
    QStackedWidget,
    QTableView,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from core.cli.cmd_adapters import describe
from core.errors import HearthError
from core.events import Progress
from core.finetune.adapters import (
    AdapterEntry,
    check_base_file,
    folder_size,
    list_adapters,
    lora_gguf_files,
    remove_adapter,
)
from core.library import Library, ModelEntry
from core.runtime import code_command
from core.units import human_size
from desktop.models.adapters import AdapterRow, AdapterTableModel
from desktop.models.library import LibraryTableModel
from desktop.ops import Executor, Op, error_text
from desktop.views.widgets import Banner, button, confirm, muted

EMPTY_TEXT = "No adapters yet. Teach a model your documents on the Fine-tune page."
DEFAULT_QUANT = "Q4_K_M"
# Combining loads the base model in torch: a child process, so the window never imports torch.
_COMBINE = (
    "import json, sys\n"
    "from core.errors import HearthError\n"
    "from core.finetune.adapters import combine_adapters\n"
    "try:\n"
    "    combine_adapters(**json.loads(sys.argv[1]))\n"
    "except HearthError as exc:\n"
    "    print(exc, file=sys.stderr)\n"
    "    sys.exit(1)\n"
)


def missing_base_text(row: AdapterRow) -> str:
    return f"Base model missing: {row.base_name} — import it again or locate the file."


def _list_with_sizes() -> list[tuple[AdapterEntry, int]]:
    return [(e, folder_size(e.path)) for e in list_adapters()]


class AdaptersView(QWidget):
    """Emits ``chat_requested(base, adapter)``; ``library_edited`` after a model was added to the library."""

    chat_requested = Signal(str, str)  # base model name, adapter name
    library_edited = Signal()
    adapters_changed = Signal()
    busy_changed = Signal(bool)

    def __init__(self, library: LibraryTableModel, pool: Executor, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.library = library
        self.pool = pool
        self.model = AdapterTableModel()
        self.busy = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 8, 0, 0)
        layout.setSpacing(10)
        head = QHBoxLayout()
        head.addWidget(muted("What you taught your models."), 1)
        self.chat_button = button("Chat with it", self._chat, kind="primary", tip="Open a new chat on the base model with this adapter")
        self.export_button = button("Export to GGUF", self.export_selected, tip="Write a GGUF LoRA file llama.cpp and Ollama can load")
        self.merge_button = button("Make a standalone model…", self._ask_standalone,
                                   tip="Merge the adapter into its base and quantize: a new model in My Models")
        self.combine_button = button("Combine with…", self._ask_combine,
                                     tip="Mix this adapter with another one trained on the same model: a new adapter")
        self.folder_button = button("Open folder", self._open_folder, tip="Show the adapter's files")
        self.delete_button = button("Delete…", self._ask_delete, kind="danger")
        self.action_buttons = (self.chat_button, self.export_button, self.merge_button, self.combine_button,
                               self.folder_button, self.delete_button)
        for b in self.action_buttons:
            head.addWidget(b)
        layout.addLayout(head)
        self.banner = Banner()
        layout.addWidget(self.banner)
        self.missing = QWidget()
        missing_row = QHBoxLayout(self.missing)
        missing_row.setContentsMargins(0, 0, 0, 0)
        self.missing_label = QLabel()
        self.missing_label.setObjectName("warning")
        self.missing_label.setWordWrap(True)
        self.locate_button = button("Locate base…", self.choose_base_file, tip="Pick the base model's .gguf file")
        missing_row.addWidget(self.missing_label, 1)
        missing_row.addWidget(self.locate_button)
        self.missing.hide()
        layout.addWidget(self.missing)
        self.work = QWidget()
        work_row = QHBoxLayout(self.work)
        work_row.setContentsMargins(0, 0, 0, 0)
        self.work_label = muted("")
        self.work_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.work_bar = QProgressBar()
        self.work_bar.setFixedWidth(200)
        self.work_bar.hide()
        work_row.addWidget(self.work_label, 1)
        work_row.addWidget(self.work_bar)
        self.work.hide()
        layout.addWidget(self.work)

        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().hide()
        self.table.setShowGrid(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.doubleClicked.connect(lambda _i: self._chat())
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._selection_changed())
        self.details = QTextBrowser()
        self.details.setMinimumWidth(300)
        split = QSplitter()
        split.addWidget(self.table)
        split.addWidget(self.details)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([660, 400])
        self.empty = QLabel(EMPTY_TEXT)
        self.empty.setObjectName("muted")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(split)
        layout.addWidget(self.stack, 1)

        library.modelReset.connect(self._library_changed)
        self.model.modelReset.connect(self._model_reset)
        self.model.set_library(library.entries())
        self._selection_changed()
        self.refresh()

    # -- listing -------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the adapters folder again (off the GUI thread)."""
        Op(_list_with_sizes).on_success(self._set_adapters).on_failure(
            lambda exc: self.banner.show_message(error_text(exc))
        ).run(self.pool)

    def _set_adapters(self, adapters: list[tuple[AdapterEntry, int]]) -> None:
        selected = self.selected()
        self.model.set_adapters(adapters)
        if selected is not None:
            self.select(selected.name)
        self.adapters_changed.emit()

    def _library_changed(self) -> None:
        selected = self.selected()
        self.model.set_library(self.library.entries())
        if selected is not None:
            self.select(selected.name)

    def _model_reset(self) -> None:
        any_rows = self.model.rowCount() > 0
        self.stack.setCurrentIndex(1 if any_rows else 0)
        for b in self.action_buttons:
            b.setVisible(any_rows)
        self._selection_changed()

    def selected(self) -> AdapterRow | None:
        rows = self.table.selectionModel().selectedRows()
        return self.model.row(rows[0].row()) if rows else None

    def select(self, name: str) -> None:
        row = self.model.row_of(name)
        if row >= 0:
            self.table.selectRow(row)

    def _selection_changed(self) -> None:
        row = self.selected()
        for b in self.action_buttons:
            b.setEnabled(row is not None and not self.busy)
        if row is not None and row.base is None:
            for b in (self.chat_button, self.export_button, self.merge_button, self.combine_button):
                b.setEnabled(False)
        if row is not None and not self.partners(row):
            self.combine_button.setEnabled(False)
        self.missing.setVisible(row is not None and row.base is None)
        self.locate_button.setEnabled(not self.busy)
        if row is None:
            self.details.setHtml(f"<p style='color:gray'>{'Select an adapter to see how it was trained and how it scored.' if self.model.rowCount() else ''}</p>")
            return
        if row.base is None:
            self.missing_label.setText(missing_base_text(row))
        self.details.setHtml(details_html(row))

    # -- actions -------------------------------------------------------------------------------
    def _chat(self) -> None:
        row = self.selected()
        if row is not None and row.base is not None:
            self.chat_requested.emit(row.base.name, row.name)

    def _open_folder(self) -> None:
        row = self.selected()
        if row is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(row.entry.path)))

    def _ask_delete(self) -> None:
        self.delete_selected()

    def delete_selected(self) -> QWidget | None:
        """Ask before deleting the selected adapter (the box is returned, for tests)."""
        row = self.selected()
        if row is None:
            return None
        exports = lora_gguf_files(row.entry)
        detail = (
            f"Its folder {row.entry.path} ({human_size(row.size_bytes)}) is deleted: the trained weights"
            + (f", {len(exports)} GGUF export(s)" if exports else "")
            + f" and the manifest. The base model {row.base_name}, other adapters and your chats stay."
        )
        name = row.name
        return confirm(self, f"Delete the adapter {name}?", detail, lambda: self._remove(name))

    def _remove(self, name: str) -> None:
        self._run(f"Deleting {name}…", lambda: remove_adapter(name),
                  lambda removed: self._after(f"Deleted {name} ({human_size(removed.bytes_freed)} freed).", refresh=True))

    def export_selected(self) -> None:
        row = self.selected()
        if row is None or row.base is None:
            return
        from core.gguf_export.lora import export_lora_gguf

        folder, base = row.entry.path, row.base.path

        def work(report: Callable[[Progress], None]) -> Path:
            return export_lora_gguf(folder, base=base, progress=report).path

        self._run(f"Exporting {row.name} to GGUF…", work,
                  lambda path: self._after(f"Exported: {path}", refresh=True))

    def _ask_standalone(self) -> None:
        row = self.selected()
        if row is None or row.base is None:
            return
        dialog = StandaloneDialog(row, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.make_standalone(dialog.quant(), dialog.name()))
        dialog.open()

    def make_standalone(self, quant: str, name: str) -> None:
        """Merge the selected adapter into its base, quantize to ``quant``, add it to My Models as ``name``."""
        row = self.selected()
        if row is None or row.base is None:
            return
        from core.gguf_export.merge import merge_adapter_gguf, output_path

        base, folder = row.base.path, row.entry.path

        def work(report: Callable[[Progress], None]) -> str:
            out, final_name = output_path(name, None, name, quant)
            return merge_adapter_gguf(base, folder, out, quant=quant, register=True, name=final_name,
                                      progress=report).name or final_name

        def done(model_name: str) -> None:
            self._after(f"Made the model {model_name}: it is in My Models.")
            self.library_edited.emit()

        self._run(f"Merging {row.name} into {row.base_name} ({quant})…", work, done)

    def partners(self, row: AdapterRow) -> list[AdapterRow]:
        """The other adapters trained on the same base model (what ``row`` can be combined with)."""
        return [r for r in self.model.rows() if r.name != row.name and r.base is not None and row.base is not None
                and r.base.name == row.base.name]

    def _ask_combine(self) -> None:
        row = self.selected()
        if row is None or not self.partners(row):
            return
        dialog = CombineDialog(row, self.partners(row), self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.combine(dialog.other(), dialog.weights(), dialog.name()))
        dialog.open()

    def combine(self, other: str, weights: tuple[float, float], name: str) -> None:
        """A new adapter ``name`` mixing the selected adapter and ``other`` with ``weights`` (in a child process)."""
        row = self.selected()
        if row is None or row.base is None:
            return
        if self.model.row_of(name) >= 0:
            self.banner.show_message(f"An adapter called {name} already exists: pick another name.")
            return
        args = json.dumps({"names": [row.name, other], "weights": list(weights), "new_name": name,
                           "base": row.base.path})

        def work() -> str:
            done = subprocess.run(code_command(_COMBINE, args), capture_output=True, text=True)
            if done.returncode != 0:
                lines = [line for line in done.stderr.splitlines() if line.strip()]
                raise HearthError(lines[-1] if lines else f"Combining the adapters failed (exit code {done.returncode}).")
            return name

        self._run(f"Combining {row.name} and {other}…", work, lambda n: self._after(f"Made the adapter {n}.", refresh=True))

    def choose_base_file(self) -> None:
        row = self.selected()
        if row is None:
            return
        dialog = QFileDialog(self, f"Locate {row.base_name}", "", "GGUF models (*.gguf)")
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.fileSelected.connect(self.locate_base)
        dialog.open()

    def locate_base(self, path: str) -> None:
        """Check that ``path`` is the selected adapter's base (SHA-256) and import it into the library."""
        row = self.selected()
        if row is None:
            return
        entry, wanted = row.entry, row.base_name

        def work(report: Callable[[Progress], None]) -> ModelEntry:
            report(Progress("verify", 0, None, "checking the file's SHA-256"))
            check_base_file(entry, path)
            library = Library()
            taken = {m.name for m in library.models(include_discovered=False)}
            name = wanted if wanted not in taken else library.unique_name(wanted)
            return library.import_file(path, mode="copy", name=name, progress=report)

        def done(model: ModelEntry) -> None:
            self._after(f"Found the base model: {model.name} is in the library again.")
            self.library_edited.emit()

        self._run(f"Checking {Path(path).name}…", work, done)

    # -- running -------------------------------------------------------------------------------
    def _run(self, text: str, work: Callable[..., Any], on_done: Callable[[Any], None]) -> None:
        self._set_busy(True)
        self.banner.hide()
        self.work_label.setText(text)
        self.work_bar.setRange(0, 0)
        self.work_bar.show()
        self.work.show()

        def failed(exc: BaseException) -> None:
            self._set_busy(False)
            self.work_bar.hide()
            self.work.hide()
            self.banner.show_message(error_text(exc))

        def succeeded(result: Any) -> None:
            self._set_busy(False)
            self.work_bar.hide()
            on_done(result)

        Op(work).on_progress(self._progress).on_success(succeeded).on_failure(failed).run(self.pool)

    def _progress(self, p: object) -> None:
        if isinstance(p, Progress):
            if p.fraction is not None:
                self.work_bar.setRange(0, 1000)
                self.work_bar.setValue(int(p.fraction * 1000))
            if p.message:
                self.work_label.setText(p.message[:1].upper() + p.message[1:] + "…")

    def _after(self, text: str, refresh: bool = False) -> None:
        self.work_label.setText(text)
        if refresh:
            self.refresh()
        else:
            self._selection_changed()

    def _set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.busy_changed.emit(busy)
        self._selection_changed()


def details_html(row: AdapterRow) -> str:
    """Everything the manifest says, in plain words: the knowledge check first, then samples before/after."""
    manifest = row.entry.manifest
    pairs = describe(manifest)
    first = [p for p in pairs if p[0] == "Knowledge check"]
    rest = [p for p in pairs if p[0] != "Knowledge check"]
    exports = lora_gguf_files(row.entry)
    parts = manifest.get("combined_from") or []
    if parts:
        rest.insert(2, ("Combined from", ", ".join(f"{p.get('name')} ×{float(p.get('weight', 1)):g}" for p in parts)))
    facts = [*first, *rest, ("Size on disk", human_size(row.size_bytes)), ("Folder", str(row.entry.path))]
    if exports:
        facts.append(("GGUF export", ", ".join(p.name for p in exports)))
    warning = (
        f"<p style='color:#c0392b'><b>{html.escape(missing_base_text(row))}</b></p>" if row.base is None else ""
    )
    table = "".join(
        f"<tr><td style='color:gray; padding-right:10px'>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
        for k, v in facts
    )
    samples = (manifest.get("metrics") or {}).get("samples") or []
    sample_html = ""
    if samples:
        cells = "".join(
            f"<tr><td colspan='2' style='padding-top:6px'><i>{html.escape(str(s.get('prompt', '')))}</i></td></tr>"
            f"<tr><td style='color:gray; padding-right:10px'>Before</td><td>{html.escape(str(s.get('before', '')) or '—')}</td></tr>"
            f"<tr><td style='color:gray; padding-right:10px'>After</td><td>{html.escape(str(s.get('after', '')) or '—')}</td></tr>"
            for s in samples[:5]
        )
        sample_html = f"<h4>Answers before and after training</h4><table cellspacing='2'>{cells}</table>"
    return f"<h3>{html.escape(row.name)}</h3>{warning}<table cellspacing='2'>{table}</table>{sample_html}"


class StandaloneDialog(QDialog):
    """Pick the quantization and the name of the merged model."""

    def __init__(self, row: AdapterRow, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from core.gguf_export.quantize import QUANT_TYPES

        self.setWindowTitle("Make a standalone model")
        layout = QVBoxLayout(self)
        layout.addWidget(muted(f"Merges {row.name} into {row.base_name} and quantizes the result: a model of its own "
                               "in My Models that needs no adapter (and runs in any llama.cpp app)."))
        form = QFormLayout()
        self.quant_picker = QComboBox()
        for name, (_ggml, description) in QUANT_TYPES.items():
            self.quant_picker.addItem(f"{name} — {description}", name)
        base_quant = (row.base.file_type if row.base else None) or DEFAULT_QUANT
        index = self.quant_picker.findData(base_quant.upper())
        self.quant_picker.setCurrentIndex(index if index >= 0 else self.quant_picker.findData(DEFAULT_QUANT))
        self.name_edit = QLineEdit(f"{row.base_name}-{row.name}")
        form.addRow("Quantization", self.quant_picker)
        form.addRow("Name", self.name_edit)
        layout.addLayout(form)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Make the model")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def quant(self) -> str:
        return str(self.quant_picker.currentData())

    def name(self) -> str:
        return self.name_edit.text().strip()


class CombineDialog(QDialog):
    """Pick the second adapter (same base), a weight for each and the new adapter's name."""

    def __init__(self, row: AdapterRow, partners: list[AdapterRow], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Combine adapters")
        layout = QVBoxLayout(self)
        layout.addWidget(muted(f"A new adapter for {row.base_name} that does what both do, each by its weight. "
                               "The two adapters stay as they are."))
        form = QFormLayout()
        self.other_picker = QComboBox()
        for partner in partners:
            self.other_picker.addItem(partner.name, partner.name)
        self.first_weight, self.second_weight = self._weight(), self._weight()
        self.name_edit = QLineEdit(f"{row.name}+{partners[0].name}")
        self.other_picker.currentIndexChanged.connect(
            lambda _i: self.name_edit.setText(f"{row.name}+{self.other_picker.currentData()}")
        )
        form.addRow("Combine with", self.other_picker)
        form.addRow(f"Weight of {row.name}", self.first_weight)
        form.addRow("Weight of the other", self.second_weight)
        form.addRow("New adapter's name", self.name_edit)
        layout.addLayout(form)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Combine")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    @staticmethod
    def _weight() -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(0.0, 2.0)
        box.setSingleStep(0.05)
        box.setValue(1.0)
        return box

    def other(self) -> str:
        return str(self.other_picker.currentData())

    def weights(self) -> tuple[float, float]:
        return self.first_weight.value(), self.second_weight.value()

    def name(self) -> str:
        return self.name_edit.text().strip()
