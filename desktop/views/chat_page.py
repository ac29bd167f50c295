"""The Chat page: conversations on the left, the transcript and composer, parameters on the right."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QKeyEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QPlainTextEdit,
    QProgressBar,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from core.chats import ChatStore
from core.engine import Completion, ModelStatus
from core.library import ModelEntry
from core.settings import ChatParameters, Settings
from desktop.chat_controller import ChatController
from desktop.models.library import LibraryTableModel
from desktop.theme import Palette
from desktop.views.conversation_panel import ConversationPanel
from desktop.views.params_panel import ParamsPanel
from desktop.views.transcript import TranscriptView
from desktop.views.widgets import Banner, button, flat_button, muted


class Composer(QFrame):
    """The message box: Enter sends, Shift+Enter starts a new line."""

    submitted = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("composer")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 8, 6)
        self.edit = QPlainTextEdit()
        self.edit.setObjectName("composerEdit")
        self.edit.setPlaceholderText("Message the model…  (Enter to send, Shift+Enter for a new line)")
        self.edit.setFixedHeight(64)
        self.edit.installEventFilter(self)
        self.send_button = button("Send", self.submitted.emit, kind="primary", tip="Send (Enter)")
        self.stop_button = button("■  Stop", lambda: None, kind="danger", tip="Stop the answer (Esc)")
        self.stop_button.hide()
        layout.addWidget(self.edit, 1)
        layout.addWidget(self.send_button, 0, Qt.AlignmentFlag.AlignBottom)
        layout.addWidget(self.stop_button, 0, Qt.AlignmentFlag.AlignBottom)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.edit and event.type() == QEvent.Type.KeyPress:
            assert isinstance(event, QKeyEvent)
            if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not (
                event.modifiers() & Qt.KeyboardModifier.ShiftModifier
            ):
                self.submitted.emit()
                return True
        return super().eventFilter(watched, event)


class ChatPage(QWidget):
    """Chat with a local model; every change goes to the chat store through ``ChatController``."""

    def __init__(
        self,
        store: ChatStore,
        controller: ChatController,
        library: LibraryTableModel,
        settings: Settings,
        save_settings: Callable[[], None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.store = store
        self.controller = controller
        self.library = library
        self.settings = settings
        self._save_settings = save_settings
        self.editing_id: int | None = None
        self._streaming_conversation: int | None = None
        self._loading_name = ""

        self.conversations = ConversationPanel(store)
        self.conversations.selected.connect(self.open_conversation)
        self.conversations.new_chat.connect(self.new_chat)
        self.conversations.deleted.connect(lambda _id: self._after_delete())

        center = QWidget()
        center.setObjectName("page")
        col = QVBoxLayout(center)
        col.setContentsMargins(0, 0, 0, 12)
        col.setSpacing(8)
        header = QHBoxLayout()
        header.setContentsMargins(16, 12, 16, 0)
        self.model_picker = QComboBox()
        self.model_picker.setModel(library)
        self.model_picker.setMinimumWidth(280)
        self.model_picker.setToolTip("Models in your library")
        self.model_picker.activated.connect(lambda _row: self._model_picked())
        self.load_bar = QProgressBar()
        self.load_bar.setRange(0, 0)
        self.load_bar.setFixedWidth(120)
        self.load_bar.hide()
        self.load_label = muted("")
        self.params_toggle = flat_button("⚙  Parameters", self._toggle_params, "Show or hide the parameters panel")
        header.addWidget(self.model_picker)
        header.addWidget(self.load_bar)
        header.addWidget(self.load_label, 1)
        header.addWidget(self.params_toggle)
        col.addLayout(header)
        self.banner = Banner()
        banner_row = QHBoxLayout()
        banner_row.setContentsMargins(16, 0, 16, 0)
        banner_row.addWidget(self.banner)
        col.addLayout(banner_row)
        self.transcript = TranscriptView()
        self.transcript.edit_requested.connect(self.start_edit)
        self.transcript.regenerate_requested.connect(self.regenerate)
        col.addWidget(self.transcript, 1)
        self.edit_bar = QFrame()
        edit_row = QHBoxLayout(self.edit_bar)
        edit_row.setContentsMargins(20, 0, 20, 0)
        edit_row.addWidget(muted("Editing a message: sending replaces it and every answer after it."), 1)
        edit_row.addWidget(flat_button("Cancel edit", self.cancel_edit))
        self.edit_bar.hide()
        col.addWidget(self.edit_bar)
        self.composer = Composer()
        self.composer.submitted.connect(self.send)
        self.composer.stop_button.clicked.connect(self.stop)
        composer_row = QHBoxLayout()
        composer_row.setContentsMargins(16, 0, 16, 0)
        composer_row.addWidget(self.composer)
        col.addLayout(composer_row)

        self.params = ParamsPanel()
        self.params.setObjectName("panel")
        self.params.setAttribute(Qt.WidgetAttribute.WA_StyledBackground)
        self.params.save_preset.connect(self.save_preset)
        self.params.reset_preset.connect(self.reset_preset)
        self.params.form.set_values(settings.defaults)
        self.params.system_prompt.setPlainText(settings.system_prompt)

        self.splitter = QSplitter()
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(self.conversations)
        self.splitter.addWidget(center)
        self.splitter.addWidget(self.params)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([230, 700, 270])
        self.splitter.setHandleWidth(1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.splitter)

        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self.stop)
        controller.model_loading.connect(self._loading)
        controller.model_loaded.connect(self._loaded)
        controller.model_load_progress.connect(self._load_progress)
        controller.model_failed.connect(self._load_failed)
        controller.stream_started.connect(self._stream_started)
        controller.history_changed.connect(self._history_changed)
        controller.chunk_arrived.connect(self._chunk)
        controller.stream_finished.connect(self._stream_finished)
        controller.stream_failed.connect(self._stream_failed)
        library.modelReset.connect(self._library_changed)
        self.conversations.refresh()

    # -- state ---------------------------------------------------------------------------------
    @property
    def current_id(self) -> int | None:
        return self.conversations.current_id

    def current_entry(self) -> ModelEntry | None:
        row = self.model_picker.currentIndex()
        return self.library.entry(row) if 0 <= row < self.library.rowCount() else None

    def set_palette(self, palette: Palette) -> None:
        self.transcript.set_palette(palette)
        if not self.controller.streaming:
            self.reload_messages()

    def select_model(self, name: str) -> None:
        row = self.library.row_of(name)
        if row >= 0:
            self.model_picker.setCurrentIndex(row)
            self.params.form.set_values(self.settings.parameters_for(name))
            self._update_preset_note()

    def _model_picked(self) -> None:
        entry = self.current_entry()
        if entry is None:
            return
        self.params.form.set_values(self.settings.parameters_for(entry.name))
        self._update_preset_note()
        self.settings.last_model = entry.name
        self._save_settings()
        self.controller.load(entry, self.params.form.values())

    def _library_changed(self) -> None:
        wanted = self.settings.last_model
        conv_model = self.store.get(self.current_id).model if self.current_id is not None else ""
        for name in (conv_model, wanted):
            if name and self.library.row_of(name) >= 0:
                self.select_model(name)
                return
        if self.library.rowCount() and self.model_picker.currentIndex() < 0:
            self.model_picker.setCurrentIndex(0)
            self._update_preset_note()

    def _update_preset_note(self) -> None:
        entry = self.current_entry()
        has = entry is not None and entry.name in self.settings.presets
        self.params.preset_note.setText(
            f"Using the saved preset for {entry.name}." if has and entry else "Using the default parameters."
        )

    def save_preset(self) -> None:
        entry = self.current_entry()
        if entry is None:
            return
        self.settings.presets[entry.name] = self.params.form.values()
        self._save_settings()
        self._update_preset_note()

    def reset_preset(self) -> None:
        entry = self.current_entry()
        if entry is not None:
            self.settings.presets.pop(entry.name, None)
            self._save_settings()
        self.params.form.set_values(self.settings.defaults)
        self._update_preset_note()

    def _toggle_params(self) -> None:
        self.params.setVisible(not self.params.isVisible())

    # -- conversations -------------------------------------------------------------------------
    def new_chat(self) -> None:
        """A blank conversation; it is saved when the first message is sent."""
        self.cancel_edit()
        self.conversations.select(None, emit=False)
        self.params.system_prompt.setPlainText(self.settings.system_prompt)
        self.transcript.set_messages([])
        self.composer.edit.setFocus()

    def open_conversation(self, conversation_id: int) -> None:
        self.cancel_edit()
        self.conversations.select(conversation_id, emit=False)
        conv = self.store.get(conversation_id)
        self.params.system_prompt.setPlainText(conv.system_prompt)
        if conv.model and self.library.row_of(conv.model) >= 0:
            self.select_model(conv.model)
        self.reload_messages()
        if self.controller.streaming and self._streaming_conversation == conversation_id:
            self.transcript.begin_answer()

    def _after_delete(self) -> None:
        if self.current_id is None:
            self.new_chat()

    def reload_messages(self) -> None:
        if self.current_id is None:
            self.transcript.set_messages([])
        else:
            self.transcript.set_messages(self.store.messages(self.current_id))

    # -- sending -------------------------------------------------------------------------------
    def _ready(self) -> tuple[int, ModelEntry, ChatParameters] | None:
        if self.controller.streaming:
            return None
        entry = self.current_entry()
        if entry is None:
            self.banner.show_message("No model is available yet: import a .gguf file in My Models or download one in Discover.")
            return None
        self.banner.hide()
        system_prompt = self.params.system_prompt.toPlainText().strip()
        if self.current_id is None:
            conv = self.store.create(model=entry.name, system_prompt=system_prompt, params=self.params.form.values().to_dict())
            self.conversations.current_id = conv.id
            self.conversations.refresh()
        elif self.store.get(self.current_id).system_prompt != system_prompt:
            self.store.update(self.current_id, system_prompt=system_prompt)
        assert self.current_id is not None
        self._streaming_conversation = self.current_id
        return self.current_id, entry, self.params.form.values()

    def send(self) -> None:
        text = self.composer.edit.toPlainText().strip()
        if not text or self.controller.streaming:
            return
        ready = self._ready()
        if ready is None:
            return
        conv_id, entry, params = ready
        self.composer.edit.clear()
        if self.editing_id is not None:
            message_id, self.editing_id = self.editing_id, None
            self.edit_bar.hide()
            self.controller.edit_and_rerun(conv_id, message_id, text, entry, params)
        else:
            self.controller.send(conv_id, text, entry, params)

    def regenerate(self) -> None:
        ready = self._ready()
        if ready is not None:
            conv_id, entry, params = ready
            self.controller.regenerate(conv_id, entry, params)

    def start_edit(self, message_id: int) -> None:
        if self.controller.streaming or self.current_id is None:
            return
        message = next((m for m in self.store.messages(self.current_id) if m.id == message_id), None)
        if message is None:
            return
        self.editing_id = message_id
        self.composer.edit.setPlainText(message.content)
        self.edit_bar.show()
        self.composer.edit.setFocus()

    def cancel_edit(self) -> None:
        if self.editing_id is not None:
            self.editing_id = None
            self.composer.edit.clear()
        self.edit_bar.hide()

    def stop(self) -> None:
        self.controller.stop()

    # -- controller events ---------------------------------------------------------------------
    def _loading(self, name: str) -> None:
        self.load_bar.setRange(0, 0)  # busy until llama.cpp reports how far it is
        self.load_bar.show()
        self.load_label.setText(f"Loading {name}…")
        self._loading_name = name

    def _load_progress(self, fraction: float) -> None:
        self.load_bar.setRange(0, 100)
        self.load_bar.setValue(round(fraction * 100))
        self.load_label.setText(f"Loading {self._loading_name}… {fraction:.0%}")

    def _loaded(self, status: ModelStatus) -> None:
        self.load_bar.hide()
        self.load_label.setText(f"Ready · context {status.n_ctx:,} · loaded in {status.load_seconds:.1f} s")
        self.params.load_info.setText(f"Chat format: {status.chat_format_description}")

    def _load_failed(self, message: str) -> None:
        self.load_bar.hide()
        self.load_label.setText("Not loaded")
        self.banner.show_message(message)

    def _stream_started(self) -> None:
        self.composer.send_button.hide()
        self.composer.stop_button.show()
        self.conversations.new_button.setEnabled(True)

    def _history_changed(self) -> None:
        if self._streaming_conversation == self.current_id:
            self.reload_messages()
            if self.controller.streaming:
                self.transcript.begin_answer()
        self.conversations.refresh()

    def _chunk(self, text: str) -> None:
        if self._streaming_conversation == self.current_id:
            self.transcript.append(text)

    def _stream_finished(self, _completion: Completion | None) -> None:
        self.composer.stop_button.hide()
        self.composer.send_button.show()

    def _stream_failed(self, message: str) -> None:
        self._stream_finished(None)
        self.banner.show_message(message)

    def showEvent(self, event: object) -> None:  # type: ignore[override]
        super().showEvent(event)  # type: ignore[arg-type]
        self.composer.edit.setFocus()
