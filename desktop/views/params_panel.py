"""The chat parameters form: sampling, length, context and GPU layers, built from ChatParameters."""

from __future__ import annotations

from dataclasses import fields

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from core.settings import ChatParameters
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
    "n_gpu_layers": ("GPU layers", -1, 1000, 1, "Layers offloaded to the GPU (-1 = all). Reloads the model."),
    "n_threads": ("CPU threads", 0, 256, 1, "Threads for generation (0 = one per physical core). Reloads the model."),
}


class ParamsForm(QWidget):
    """Editors for every ChatParameters field; ``changed`` fires on any edit."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.setVerticalSpacing(6)
        self.editors: dict[str, QSpinBox | QDoubleSpinBox] = {}
        defaults = ChatParameters()
        for f in fields(ChatParameters):
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
            editor.setToolTip(tip)
            editor.setMinimumWidth(90)
            editor.valueChanged.connect(lambda _v: self.changed.emit())
            form.addRow(label, editor)
            self.editors[f.name] = editor

    def set_values(self, params: ChatParameters) -> None:
        for name, editor in self.editors.items():
            editor.blockSignals(True)
            editor.setValue(getattr(params, name))
            editor.blockSignals(False)

    def values(self) -> ChatParameters:
        return ChatParameters.from_dict({name: e.value() for name, e in self.editors.items()})


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
