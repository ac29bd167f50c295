"""The Fine-tune form's Advanced panel: method, goal, and the options of both, built from their metadata.

Nothing here describes an option: the method's come from its config dataclass
(``core.finetune.methods.options``), the job's from ``core.finetune.spec.spec_options``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from core.finetune.methods import all_methods, get_method, options
from core.finetune.spec import FinetuneSpec, spec_options
from desktop.models.library import LibraryTableModel
from desktop.views.form import OptionsForm
from desktop.views.widgets import button, muted, title

OBJECTIVES = (
    ("pretrain", "Learn the documents' content", "Continued pre-training on the documents' text."),
    ("qa", "Learn to answer questions about them",
     "A local model you pick writes question-and-answer pairs from the documents; the model learns to answer them."),
    ("jsonl", "Train on my own JSONL file", "Chat, ShareGPT, Alpaca, plain text or preference pairs, one example a line."),
)
# Job options the form sets itself (the Goal, the question writer, the restatement writer beside the
# documents), not through the options form.
SET_BY_THE_FORM = ("objective", "qa_model", "writer")


def job_options() -> list[Any]:
    """The job's options a form shows (``core.finetune.spec.spec_options``), less those the form sets itself."""
    return [o for o in spec_options() if o.name not in SET_BY_THE_FORM]



class AdvancedPanel(QFrame):
    """Method, objective, the method's options and the job's, all built from their metadata."""

    changed = Signal()

    def __init__(self, library: LibraryTableModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("card")
        self.library = library
        col = QVBoxLayout(self)
        col.setContentsMargins(16, 14, 16, 14)
        col.setSpacing(10)
        grid = QGridLayout()
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(8)
        grid.addWidget(QLabel("Method"), 0, 0)
        self.method_combo = QComboBox()
        for m in all_methods():
            self.method_combo.addItem(m.title, m.name)
            self.method_combo.setItemData(self.method_combo.count() - 1, m.summary, Qt.ItemDataRole.ToolTipRole)
        self.method_combo.currentIndexChanged.connect(lambda _i: self._method_changed())
        grid.addWidget(self.method_combo, 0, 1)
        self.method_summary = muted("")
        grid.addWidget(self.method_summary, 1, 1)
        grid.addWidget(QLabel("Goal"), 2, 0)
        self.objective_combo = QComboBox()
        for key, text, tip in OBJECTIVES:
            self.objective_combo.addItem(text, key)
            self.objective_combo.setItemData(self.objective_combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.objective_combo.currentIndexChanged.connect(lambda _i: self._objective_changed())
        grid.addWidget(self.objective_combo, 2, 1)
        self.objective_note = muted("")
        grid.addWidget(self.objective_note, 3, 1)
        self.qa_label = QLabel("Question writer")
        self.qa_combo = QComboBox()
        self.qa_combo.currentIndexChanged.connect(lambda _i: self.changed.emit())
        grid.addWidget(self.qa_label, 4, 0)
        grid.addWidget(self.qa_combo, 4, 1)
        self.data_label = QLabel("JSONL file")
        data_row = QHBoxLayout()
        self.data_edit = QLineEdit()
        self.data_edit.setPlaceholderText("a .jsonl file, one example a line")
        self.data_edit.textChanged.connect(lambda _t: self.changed.emit())
        data_row.addWidget(self.data_edit, 1)
        data_row.addWidget(button("Choose…", self._choose_data))
        self.data_box = QWidget()
        self.data_box.setLayout(data_row)
        data_row.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.data_label, 5, 0)
        grid.addWidget(self.data_box, 5, 1)
        self.dpo_box = QCheckBox("The file holds preference pairs (prompt, chosen, rejected): learn the preferences (DPO)")
        self.dpo_box.toggled.connect(lambda _b: self.changed.emit())
        grid.addWidget(self.dpo_box, 6, 1)
        grid.setColumnStretch(1, 1)
        col.addLayout(grid)
        col.addWidget(title("Method options", "sectionTitle"))
        self.method_holder = QVBoxLayout()
        col.addLayout(self.method_holder)
        self.method_form = OptionsForm([])
        col.addWidget(title("Training options", "sectionTitle"))
        col.addWidget(muted("Left on auto, Hearth picks them from your documents and this computer's memory."))
        self.job_form = OptionsForm(job_options())
        self.job_form.changed.connect(self.changed.emit)
        col.addWidget(self.job_form)
        library.modelReset.connect(self._fill_qa)
        self._fill_qa()
        self._method_changed()
        self._objective_changed()

    def refresh_methods(self) -> None:
        """Re-read the method registry (a method registered after the page was built appears)."""
        current = self.method_name()
        self.method_combo.blockSignals(True)
        self.method_combo.clear()
        for m in all_methods():
            self.method_combo.addItem(m.title, m.name)
            self.method_combo.setItemData(self.method_combo.count() - 1, m.summary, Qt.ItemDataRole.ToolTipRole)
        self.method_combo.blockSignals(False)
        self.select_method(current)
        self._method_changed()

    def select_method(self, name: str) -> None:
        index = self.method_combo.findData(name)
        self.method_combo.setCurrentIndex(max(0, index))

    def method_name(self) -> str:
        return str(self.method_combo.currentData() or "lora")

    def _method_changed(self) -> None:
        method = get_method(self.method_name())
        self.method_summary.setText(method.summary)
        self.method_form.setParent(None)
        self.method_form.deleteLater()
        self.method_form = OptionsForm(options(method.config_cls))
        self.method_form.setObjectName(f"methodForm_{method.name}")
        self.method_form.changed.connect(self.changed.emit)
        self.method_holder.addWidget(self.method_form)
        self.changed.emit()

    def objective(self) -> str:
        return str(self.objective_combo.currentData())

    def select_objective(self, key: str) -> None:
        self.objective_combo.setCurrentIndex(max(0, self.objective_combo.findData(key)))

    def _objective_changed(self) -> None:
        key = self.objective()
        self.objective_note.setText(next(tip for k, _t, tip in OBJECTIVES if k == key))
        for w in (self.qa_label, self.qa_combo):
            w.setVisible(key == "qa")
        for w in (self.data_label, self.data_box, self.dpo_box):
            w.setVisible(key == "jsonl")
        self.changed.emit()

    def _fill_qa(self) -> None:
        current = self.qa_combo.currentText()
        self.qa_combo.clear()
        for entry in self.library.entries():
            self.qa_combo.addItem(entry.name)
        if current:
            self.qa_combo.setCurrentIndex(max(0, self.qa_combo.findText(current)))

    def qa_model(self) -> str | None:
        return self.qa_combo.currentText() or None

    def data_path(self) -> str:
        return self.data_edit.text().strip()

    def _choose_data(self) -> None:
        dialog = QFileDialog(self, "Pick a JSONL dataset", "", "JSON lines (*.jsonl *.json)")
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.fileSelected.connect(self.data_edit.setText)
        dialog.open()

    def spec_inputs(self, docs: list[str]) -> dict[str, Any]:
        key = self.objective()
        job = dict(self.job_form.values())
        out: dict[str, Any] = {"method": self.method_name(), "method_options": self.method_form.values()}
        if key == "jsonl":
            out["data"] = self.data_path()
            if self.dpo_box.isChecked():
                job["objective"] = "dpo"
        else:
            out["docs"] = list(docs)
            job["objective"] = "sft" if key == "qa" else "pretrain"
            if key == "qa":
                job["qa_model"] = self.qa_model()
        known = {f.name for f in dataclasses.fields(FinetuneSpec)}
        out.update({k: v for k, v in job.items() if k in known})
        return out
