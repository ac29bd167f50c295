"""The chat parameters form: sampling, length, context, GPU layers and drafting, built from ChatParameters."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from core.engine.params import GPU_LAYERS_AUTO
from core.settings import ChatParameters
from desktop.models.library import LibraryTableModel
from desktop.views.widgets import button, muted, title

# label, minimum, maximum, step, tooltip — one line per ChatParameters field.
FIELDS: dict[str, tuple[str, float, float, float, str]] = {
    "temperature": ("Temperature", 0.0, 2.0, 0.05, "Randomness; 0 always picks the most likely token."),
    "top_p": ("Top P", 0.0, 1.0, 0.01, "Keep the smallest set of tokens whose probabilities add up to this."),
    "top_k": ("Top K", 0, 1000, 1, "Keep only the K most likely tokens (0 = all)."),
    "min_p": ("Min P", 0.0, 1.0, 0.01, "Drop tokens less likely than this fraction of the top one."),
    "repeat_penalty": ("Repeat penalty", 0.5, 2.0, 0.01, "Above 1 discourages repeating recent tokens."),
    "seed": ("Seed", -1, 2**31 - 1, 1, "-1 picks a new random seed for every answer."),
    "max_tokens": ("Max tokens", 1, 131072, 16, "Longest answer, in tokens."),
    "n_ctx": ("Context length", 0, 1048576, 512, "Tokens the model keeps in view (0 = as trained). Reloads the model."),
    "n_gpu_layers": ("GPU layers", GPU_LAYERS_AUTO, 1000, 1,
                     "Layers on the GPU: Auto = as many as fit in its memory, -1 = all, 0 = none (the CPU). "
                     "Reloads the model."),
    "n_threads": ("CPU threads", 0, 256, 1, "Threads for generation (0 = one per physical core). Reloads the model."),
    "draft_max": ("Draft tokens", 1, 64, 1, "Most tokens guessed ahead per step."),
}
# ChatParameters.draft: value, label.
DRAFT_CHOICES = (("off", "Off"), ("lookup", "Prompt lookup"), ("model", "Draft model"))
DRAFT_TIP = ("Speculative decoding: guess a few tokens ahead cheaply, then check them in one step. The answer is "
             "the same; it comes faster when it repeats text (rewrites, edits of code or documents).\n"
             "Prompt lookup guesses from the conversation itself; a draft model is a small model of the same "
             "family (the same vocabulary) and reloads the model.")


class ParamsForm(QWidget):
    """Editors for every ChatParameters field; ``changed`` fires on any edit."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.setVerticalSpacing(6)
        self._form = form
        self.editors: dict[str, QSpinBox | QDoubleSpinBox] = {}
        self._library: LibraryTableModel | None = None
        defaults = ChatParameters()
        for f in fields(ChatParameters):
            if f.name == "draft":
                self._add_drafting(form)
                continue
            if f.name not in FIELDS:
                continue  # draft_model: the picker that _add_drafting made
            label, lo, hi, step, tip = FIELDS[f.name]
            editor: QSpinBox | QDoubleSpinBox
            if isinstance(getattr(defaults, f.name), float):
                editor = QDoubleSpinBox()
                editor.setDecimals(2)
                editor.setRange(lo, hi)
                editor.setSingleStep(step)
            else:
                editor = QSpinBox()
                editor.setRange(int(lo), int(hi))
                editor.setSingleStep(int(step))
            if f.name == "n_gpu_layers":
                editor.setSpecialValueText("Auto")  # shown for the minimum, GPU_LAYERS_AUTO
            editor.setToolTip(tip)
            editor.setMinimumWidth(90)
            editor.valueChanged.connect(lambda _v: self.changed.emit())
            form.addRow(label, editor)
            self.editors[f.name] = editor
        self._show_drafting()

    def _add_drafting(self, form: QFormLayout) -> None:
        self.draft = QComboBox()
        for value, label in DRAFT_CHOICES:
            self.draft.addItem(label, value)
        self.draft.setToolTip(DRAFT_TIP)
        self.draft.currentIndexChanged.connect(self._draft_changed)
        form.addRow("Drafting", self.draft)
        self.draft_model = QComboBox()
        self.draft_model.setToolTip("A small model from your library with the chat model's vocabulary "
                                    "(a smaller one of the same family). Reloads the model.")
        self.draft_model.setPlaceholderText("Pick a model")
        self.draft_model.setMinimumContentsLength(8)
        self.draft_model.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.draft_model.currentIndexChanged.connect(lambda _i: self.changed.emit())
        # Model names are long and the panel is narrow: the picker gets the full width, under its label.
        self.draft_model_label = QLabel("Draft model")
        form.addRow(self.draft_model_label)
        form.addRow(self.draft_model)

    def _draft_changed(self) -> None:
        self._show_drafting()
        self.changed.emit()

    def _show_drafting(self) -> None:
        mode = self.draft.currentData()
        self._form.setRowVisible(self.draft_model_label, mode == "model")
        self._form.setRowVisible(self.draft_model, mode == "model")
        if "draft_max" in self.editors:
            self._form.setRowVisible(self.editors["draft_max"], mode != "off")

    def set_models(self, library: LibraryTableModel) -> None:
        """List the library's models in the draft model picker, and follow the library's changes."""
        self._library = library
        library.modelReset.connect(self._fill_models)
        self._fill_models()

    def _fill_models(self, keep: str | None = None) -> None:
        path = self.draft_model.currentData() if keep is None else keep
        self.draft_model.blockSignals(True)
        self.draft_model.clear()
        for entry in self._library.entries() if self._library is not None else []:
            self.draft_model.addItem(entry.name, str(entry.path))
        if path and self.draft_model.findData(path) < 0:
            self.draft_model.addItem(Path(path).name, path)  # a model no longer in the library: still shown
        self.draft_model.setCurrentIndex(self.draft_model.findData(path) if path else -1)
        self.draft_model.blockSignals(False)

    def set_values(self, params: ChatParameters) -> None:
        for name, editor in self.editors.items():
            editor.blockSignals(True)
            editor.setValue(getattr(params, name))
            editor.blockSignals(False)
        self.draft.blockSignals(True)
        self.draft.setCurrentIndex(max(0, self.draft.findData(params.draft)))
        self.draft.blockSignals(False)
        self._fill_models(keep=params.draft_model)
        self._show_drafting()

    def values(self) -> ChatParameters:
        data: dict[str, object] = {name: e.value() for name, e in self.editors.items()}
        data["draft"] = self.draft.currentData()
        data["draft_model"] = self.draft_model.currentData() or ""
        return ChatParameters.from_dict(data)


class ParamsPanel(QWidget):
    """The chat page's side panel: system prompt, parameters, per-model preset buttons."""

    save_preset = Signal()
    reset_preset = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 16, 16, 16)
        layout.setSpacing(8)
        layout.addWidget(title("System prompt", "sectionTitle"))
        self.system_prompt = QPlainTextEdit()
        self.system_prompt.setPlaceholderText("You are a helpful assistant.")
        self.system_prompt.setMaximumHeight(90)
        layout.addWidget(self.system_prompt)
        layout.addSpacing(6)
        layout.addWidget(title("Parameters", "sectionTitle"))
        self.form = ParamsForm()
        layout.addWidget(self.form)
        self.preset_note = muted("")
        layout.addWidget(self.preset_note)
        row = QHBoxLayout()
        self.save_button = button("Save preset", self.save_preset.emit, tip="Use these parameters whenever this model is picked")
        self.reset_button = button("Defaults", self.reset_preset.emit, tip="Forget this model's preset")
        row.addWidget(self.save_button)
        row.addWidget(self.reset_button)
        layout.addLayout(row)
        layout.addStretch(1)
        self.load_info = QLabel("")
        self.load_info.setObjectName("muted")
        self.load_info.setWordWrap(True)
        layout.addWidget(self.load_info)
