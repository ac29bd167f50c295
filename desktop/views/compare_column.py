"""One column of Chat's Compare mode: its set-up bar (model, adapter and scale, documents, parameters),
its transcript, the stats line of its last answer and "Continue this one"."""

from __future__ import annotations

import dataclasses

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from core.chats import Message
from core.chats.compare import SIDE_NAMES, CompareSide
from core.docs.context import read_docs_message
from core.finetune.adapters import find_base, list_adapters
from core.settings import ChatParameters, Settings
from desktop.models.library import LibraryTableModel
from desktop.theme import Palette
from desktop.views.chat_docs import DocsToggle
from desktop.views.params_panel import ParamsForm
from desktop.views.transcript import TranscriptView
from desktop.views.widgets import flat_button


class SetupBar(QFrame):
    """A side's set-up; ``changed`` fires on any edit. ``side()`` reads it, ``set_side`` shows one."""

    changed = Signal()

    def __init__(self, library: LibraryTableModel, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("compareSetup")
        self.library = library
        self.settings = settings
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(6)
        row = QHBoxLayout()
        row.setSpacing(6)
        self.model_picker = QComboBox()
        self.model_picker.setModel(library)
        # Long model names must not widen the column (two columns share the chat's width): elided instead.
        for picker in (self.model_picker,):
            picker.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            picker.setMinimumContentsLength(10)
        self.model_picker.setToolTip("The model that answers in this column")
        self.model_picker.activated.connect(lambda _i: self._model_picked())
        self.adapter_picker = QComboBox()
        self.adapter_picker.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.adapter_picker.setMinimumContentsLength(8)
        self.adapter_picker.setToolTip("An adapter trained on this model (a fine-tune), or none")
        self.adapter_picker.activated.connect(lambda _i: self._adapter_picked())
        self.scale = QDoubleSpinBox()
        self.scale.setRange(0.0, 2.0)
        self.scale.setSingleStep(0.05)
        self.scale.setDecimals(2)
        self.scale.setPrefix("×")
        self.scale.setValue(1.0)
        self.scale.setToolTip("How strongly the adapter changes the model (0 = not at all, 1 = as trained)")
        self.scale.valueChanged.connect(lambda _v: self.changed.emit())
        self.params_button = flat_button("⚙  Parameters", self._toggle_params, "Show or hide this column's parameters")
        row.addWidget(self.model_picker, 2)
        row.addWidget(self.adapter_picker, 1)
        row.addWidget(self.scale)
        col.addLayout(row)
        self.docs = DocsToggle()
        self.docs.layout().setContentsMargins(0, 0, 0, 0)  # type: ignore[union-attr]
        self.docs.changed.connect(self.changed.emit)
        col.addWidget(self.docs)
        self.form = ParamsForm()
        self.form.set_models(library)
        self.form.changed.connect(self.changed.emit)
        # Scrolled within a few rows' height, so the open parameters never squeeze the transcript away.
        self.form_area = QScrollArea()
        self.form_area.setWidgetResizable(True)
        self.form_area.setFrameShape(QFrame.Shape.NoFrame)
        self.form_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.form_area.setMaximumHeight(200)
        self.form_area.setWidget(self.form)
        self.form_area.hide()
        col.addWidget(self.form_area)
        self._adapters_of = ""
        self.refresh_adapters()

    # -- reading and showing -----------------------------------------------------------------------
    def side(self) -> CompareSide:
        adapter = str(self.adapter_picker.currentData() or "")
        return CompareSide(self.model_picker.currentText(), adapter=adapter,
                           adapter_scale=round(self.scale.value(), 2) if adapter else 1.0,
                           docs=self.docs.collection(), params=self.form.values().to_dict())

    def set_side(self, side: CompareSide) -> None:
        row = self.library.row_of(side.model)
        if row >= 0:
            self.model_picker.setCurrentIndex(row)
        elif side.model:  # not (yet) in the library: shown by name, answering says what is wrong
            self.model_picker.setCurrentIndex(-1)
            self.model_picker.setPlaceholderText(side.model)
        self.refresh_adapters(keep=side.adapter)
        self.scale.blockSignals(True)
        self.scale.setValue(side.adapter_scale)
        self.scale.blockSignals(False)
        self.docs.set_collection(side.docs)
        params = ChatParameters.from_dict(side.params) if side.params else self.settings.parameters_for(side.model)
        self.form.set_values(params)
        self._show_scale()

    def set_collections(self, names: list[str]) -> None:
        chosen = self.docs.collection()
        self.docs.set_collections(names)
        if chosen:
            self.docs.set_collection(chosen)

    def refresh_adapters(self, keep: str | None = None) -> None:
        """The adapters trained on the picked model ("No adapter" first), keeping the choice where it applies."""
        chosen = self.adapter_picker.currentData() or "" if keep is None else keep
        model = self.model_picker.currentText()
        models = self.library.entries()
        mine = [a.name for a in list_adapters() if (b := find_base(a, models)) is not None and b.name == model]
        self.adapter_picker.blockSignals(True)
        self.adapter_picker.clear()
        self.adapter_picker.addItem("No adapter", "")
        for name in mine:
            self.adapter_picker.addItem(name, name)
        if chosen and self.adapter_picker.findData(chosen) < 0:
            self.adapter_picker.addItem(f"{chosen} (missing)", chosen)  # said again when it answers
        self.adapter_picker.setCurrentIndex(max(0, self.adapter_picker.findData(chosen)))
        self.adapter_picker.blockSignals(False)
        self.adapter_picker.setVisible(self.adapter_picker.count() > 1)
        self._show_scale()

    def _show_scale(self) -> None:
        self.scale.setVisible(bool(self.adapter_picker.currentData()))

    def _model_picked(self) -> None:
        self.form.set_values(self.settings.parameters_for(self.model_picker.currentText()))
        self.refresh_adapters(keep="")
        self.changed.emit()

    def _adapter_picked(self) -> None:
        self._show_scale()
        self.changed.emit()

    def _toggle_params(self) -> None:
        self.form_area.setVisible(not self.form_area.isVisible())


class CompareColumn(QFrame):
    """One side: heading, set-up, transcript and stats line. ``continue_requested`` asks to chat on from it."""

    continue_requested = Signal()

    def __init__(self, index: int, library: LibraryTableModel, settings: Settings,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("compareColumn")
        self.index = index
        col = QVBoxLayout(self)
        col.setContentsMargins(12, 10, 12, 8)
        col.setSpacing(6)
        head = QHBoxLayout()
        self.heading = QLabel(SIDE_NAMES[index])
        self.heading.setObjectName("sectionTitle")
        self.continue_button = flat_button("Continue this one →", self.continue_requested.emit,
                                           "Go on with this side alone, as a normal chat (the comparison stays)")
        self.continue_button.hide()  # until the side has answered
        self.setup = SetupBar(library, settings)
        head.addWidget(self.heading)
        head.addStretch(1)
        head.addWidget(self.setup.params_button)
        head.addWidget(self.continue_button)
        col.addLayout(head)
        col.addWidget(self.setup)
        self.transcript = TranscriptView()
        self.transcript.empty.setText("This side's answers show here.")
        self.transcript.empty.setWordWrap(True)
        col.addWidget(self.transcript, 1)
        self.stats = QLabel("")  # the figure a comparison is read for: bold, under the column
        self.stats.setObjectName("sectionTitle")
        self.stats.setWordWrap(True)
        self.stats.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        col.addWidget(self.stats)

    def set_palette(self, palette: Palette) -> None:
        self.transcript.set_palette(palette)

    def show_messages(self, messages: list[Message]) -> None:
        """The side's conversation; a question asked with documents shows as the question alone."""
        shown: list[Message] = []
        for m in messages:
            parsed = read_docs_message(m.content) if m.role == "user" else None
            shown.append(dataclasses.replace(m, content=parsed.question) if parsed is not None else m)
        self.transcript.set_messages(shown)
        for bubble in self.transcript.bubbles:  # editing and regenerating belong to the normal chat
            for extra in (bubble.edit_button, bubble.regenerate_button):
                if extra is not None:
                    extra.hide()
        self.continue_button.setVisible(any(m.role == "assistant" for m in messages))
        last = next((m for m in reversed(messages) if m.role == "assistant"), None)
        if last is not None:
            self.stats.setText(stats_line(last))

    def set_stats(self, text: str) -> None:
        self.stats.setText(text)


def stats_line(message: Message) -> str:
    """The column's line under its last answer: speed first (what a comparison is read for), then size."""
    parts = []
    if message.tokens_per_second:
        parts.append(f"{message.tokens_per_second:.1f} tokens/s")
    if message.completion_tokens:
        parts.append(f"{message.completion_tokens} tokens")
    ttft = message.meta.get("time_to_first_token")
    if ttft:
        parts.append(f"first token {float(ttft):.2f} s")
    if message.finish_reason == "cancelled":
        parts.append("stopped")
    return "  ·  ".join(parts) or "No answer yet."
