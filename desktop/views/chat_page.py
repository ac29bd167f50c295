"""The Chat page: conversations on the left, the transcript and composer, parameters on the right."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QSlider,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from core.chats import ChatStore, Message
from core.docs.context import Source, read_docs_message
from core.engine import Completion, ModelStatus
from core.finetune.adapters import AdapterEntry, find_base, list_adapters
from core.library import ModelEntry
from core.settings import ChatParameters, Settings
from core.workers import describe_split
from desktop.chat_controller import ActiveAdapter, ChatController
from desktop.models.library import LibraryTableModel
from desktop.theme import Palette
from desktop.tools_control import ToolsControl
from desktop.views.chat_docs import DocsToggle, SourcesStrip
from desktop.views.chat_tools import ChatTools, ToolsToggle
from desktop.views.composer import Composer
from desktop.views.conversation_panel import ConversationPanel
from desktop.views.image_attachments import ChatImages
from desktop.views.image_view import stored_image
from desktop.views.params_panel import ParamsPanel
from desktop.views.transcript import TranscriptView
from desktop.views.widgets import Banner, flat_button, muted

if TYPE_CHECKING:
    from core.media import PreparedImage

SCALE_STEP = 0.05
MAX_SCALE = 2.0


class ChatPage(QWidget):
    """Chat with a local model; every change goes to the chat store through ``ChatController``."""

    compare_requested = Signal()  # the header's Compare button: the window opens Compare mode (compare_view)
    compare_opened = Signal(int)  # a comparison (its group id) was picked: it reopens in Compare mode
    chat_shown = Signal()  # an ordinary chat was opened or started: Compare mode gives way

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
        self._unsent: tuple[str, list[PreparedImage]] | None = None  # sent, not yet in the store

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
        self.model_picker.setMinimumWidth(240)
        self.model_picker.setToolTip("Models in your library")
        self.model_picker.activated.connect(lambda _row: self._model_picked())
        self.adapter_picker = QComboBox()
        self.adapter_picker.setMinimumWidth(170)
        self.adapter_picker.setToolTip("Adapters trained on this model: applied without reloading it")
        self.adapter_picker.activated.connect(lambda _row: self._adapter_picked())
        self.scale_slider = QSlider(Qt.Orientation.Horizontal)
        self.scale_slider.setRange(0, round(MAX_SCALE / SCALE_STEP))
        self.scale_slider.setValue(round(1.0 / SCALE_STEP))
        self.scale_slider.setFixedWidth(90)
        self.scale_slider.setToolTip("How strongly the adapter changes the model (0 = not at all, 1 = as trained)")
        self.scale_slider.valueChanged.connect(self._scale_moved)
        self.scale_label = muted("×1.00")
        self.scale_label.setMinimumWidth(40)
        self._scale_timer = QTimer(self)
        self._scale_timer.setSingleShot(True)
        self._scale_timer.setInterval(150)  # one set_loras when the slider stops, not one per pixel
        self._scale_timer.timeout.connect(self._scale_changed)
        self._adapters: dict[str, AdapterEntry] = {}
        self.active_label = QLabel("")
        self.active_label.setObjectName("sectionTitle")
        self.load_bar = QProgressBar()
        self.load_bar.setRange(0, 0)
        self.load_bar.setFixedWidth(120)
        self.load_bar.hide()
        self.load_label = muted("")
        self.params_toggle = flat_button("⚙  Parameters", self._toggle_params, "Show or hide the parameters panel")
        header.addWidget(self.model_picker)
        header.addWidget(self.adapter_picker)
        header.addWidget(self.scale_slider)
        header.addWidget(self.scale_label)
        header.addStretch(1)
        self.compare_button = flat_button("⇆  Compare", self.compare_requested.emit,
                                          "Answer one prompt with two set-ups side by side")
        header.addWidget(self.compare_button)
        header.addWidget(self.params_toggle)
        col.addLayout(header)
        # Second line: what is loaded ("model + adapter (×0.8)") and how loading went.
        status_row = QHBoxLayout()
        status_row.setContentsMargins(18, 0, 16, 0)
        status_row.addWidget(self.active_label)
        status_row.addWidget(self.load_bar)
        status_row.addWidget(self.load_label, 1)
        # The engine is shared with the local API server (Settings > Server): say when it is busy there.
        self.serving_label = muted("Answering a request from another app…")
        self.serving_label.setWordWrap(False)
        self.serving_label.hide()
        status_row.addWidget(self.serving_label)
        col.addLayout(status_row)
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
        composer_row = QVBoxLayout()
        composer_row.setContentsMargins(16, 0, 16, 0)
        composer_row.setSpacing(4)
        composer_row.addWidget(self.composer)
        # Pictures (attach, drop, paste): the attach button greyed, with the reason, for a model without a projector.
        self.chat_images = ChatImages(self.composer, self.banner, [self.transcript.viewport()])
        self.transcript.image_loader = lambda sha: stored_image(store, sha)
        # Retrieval (Knowledge): the question goes with a collection's passages; saved with the chat.
        self.docs_toggle = DocsToggle()
        self.docs_toggle.changed.connect(self._save_docs)
        composer_row.addWidget(self.docs_toggle)
        # Tools (Settings > Tools): how many are on, or why this model cannot use them.
        self.tools_toggle = ToolsToggle()
        composer_row.addWidget(self.tools_toggle)
        col.addLayout(composer_row)
        self.chat_tools = ChatTools(controller, self.transcript, self.tools_toggle,
                                    lambda: self._streaming_conversation == self.current_id)

        self.params = ParamsPanel()
        self.params.setObjectName("panel")
        self.params.setAttribute(Qt.WidgetAttribute.WA_StyledBackground)
        self.params.save_preset.connect(self.save_preset)
        self.params.reset_preset.connect(self.reset_preset)
        self.params.form.set_models(library)  # the draft model picker lists the library
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
        controller.adapter_applied.connect(self._adapter_applied)
        controller.adapter_failed.connect(self._adapter_failed)
        controller.serving_changed.connect(self._serving_changed)
        controller.docs_used.connect(self._docs_used)
        library.modelReset.connect(self._library_changed)
        for changed in (self.model_picker.currentIndexChanged, library.modelReset, controller.model_loaded):
            changed.connect(lambda *_: self.chat_images.update_model(self.current_entry(), controller.engine.status))
        self.conversations.refresh()
        self.refresh_adapters()

    # -- state ---------------------------------------------------------------------------------
    @property
    def current_id(self) -> int | None:
        return self.conversations.current_id

    def current_entry(self) -> ModelEntry | None:
        row = self.model_picker.currentIndex()
        return self.library.entry(row) if 0 <= row < self.library.rowCount() else None

    def set_palette(self, palette: Palette) -> None:
        self.transcript.set_palette(palette)
        self.chat_images.set_palette(palette)
        self.transcript.setStyleSheet(
            f"QLabel#passage {{ background: {palette.surface}; border: 1px solid {palette.border}; "
            f"border-radius: 8px; padding: 8px; }}")
        if not self.controller.streaming:
            self.reload_messages()

    def select_model(self, name: str) -> None:
        row = self.library.row_of(name)
        if row >= 0:
            self.model_picker.setCurrentIndex(row)
            self.params.form.set_values(self.settings.parameters_for(name))
            self._update_preset_note()
            self.refresh_adapters()

    def _model_picked(self) -> None:
        entry = self.current_entry()
        if entry is None:
            return
        self.params.form.set_values(self.settings.parameters_for(entry.name))
        self._update_preset_note()
        self.settings.last_model = entry.name
        self._save_settings()
        self.refresh_adapters()
        self.controller.load(entry, self.params.form.values())

    def _library_changed(self) -> None:
        wanted = self.settings.last_model
        conv_model = self.store.get(self.current_id).model if self.current_id is not None else ""
        for name in (conv_model, wanted):
            if name and self.library.row_of(name) >= 0:
                self.select_model(name)
                self._restore_conversation_adapter()
                return
        if self.library.rowCount() and self.model_picker.currentIndex() < 0:
            self.model_picker.setCurrentIndex(0)
            self._update_preset_note()
        self.refresh_adapters()

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
        self.chat_shown.emit()
        self.cancel_edit()
        self.docs_toggle.note.setText("")
        self.conversations.select(None, emit=False)
        self.params.system_prompt.setPlainText(self.settings.system_prompt)
        self.transcript.set_messages([])
        self.composer.edit.setFocus()

    def open_conversation(self, conversation_id: int) -> None:
        if (group := self.store.get(conversation_id).compare_group):  # a side of a comparison
            self.compare_opened.emit(group)
            return
        self.chat_shown.emit()
        self.cancel_edit()
        self.conversations.select(conversation_id, emit=False)
        conv = self.store.get(conversation_id)
        self.params.system_prompt.setPlainText(conv.system_prompt)
        if conv.model and self.library.row_of(conv.model) >= 0:
            self.select_model(conv.model)
        self._restore_adapter(conv.adapter, conv.adapter_scale)
        self.docs_toggle.set_collection(conv.docs)
        self.reload_messages()
        if self.controller.streaming and self._streaming_conversation == conversation_id:
            self.transcript.begin_answer()

    def _after_delete(self) -> None:
        if self.current_id is None:
            self.new_chat()

    def reload_messages(self) -> None:
        if self.current_id is None:
            self.transcript.set_messages([])
            return
        # A question asked with documents is stored as the model saw it (passages first): show the
        # question, and its passages as the sources of the answer that follows.
        shown: list[Message] = []
        sources: dict[int, list[Source]] = {}
        pending: list[Source] | None = None
        for m in self.store.messages(self.current_id):
            parsed = read_docs_message(m.content) if m.role == "user" else None
            if parsed is not None:
                m = dataclasses.replace(m, content=parsed.question)
                pending = parsed.sources
            elif m.role == "user":
                pending = None
            elif m.role == "assistant" and pending:
                sources[len(shown)] = pending
                pending = None
            shown.append(m)
        self.transcript.set_messages(shown)
        self.chat_tools.restore_cards()
        index_of = {id(m): i for i, m in enumerate(shown)}  # tool calls are cards, not bubbles
        for bubble in self.transcript.bubbles:
            index = index_of.get(id(bubble.message), -1)
            if index in sources:
                layout = bubble.layout()
                assert isinstance(layout, QVBoxLayout)
                layout.insertWidget(2, SourcesStrip(sources[index]))
            elif index + 1 in sources:
                count = len(sources[index + 1])
                bubble.stats.setText(f"Asked with {count} passage{'s' if count != 1 else ''} from your documents")

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
        adapter, scale = self.current_adapter()
        if self.current_id is None:
            conv = self.store.create(model=entry.name, system_prompt=system_prompt, params=self.params.form.values().to_dict(),
                                     adapter=adapter, adapter_scale=scale)
            self.conversations.current_id = conv.id
            self.conversations.refresh()
        else:
            conv = self.store.get(self.current_id)
            if (conv.system_prompt, conv.adapter, conv.adapter_scale) != (system_prompt, adapter, scale):
                self.store.update(self.current_id, system_prompt=system_prompt, adapter=adapter, adapter_scale=scale)
        self._save_docs()
        assert self.current_id is not None
        self._streaming_conversation = self.current_id
        return self.current_id, entry, self.params.form.values()

    def send(self) -> None:
        text = self.composer.edit.toPlainText().strip()
        images = self.chat_images.images()
        if self.chat_images.busy:  # a picture is still being read: send once it is
            self.chat_images.when_ready(self.send)
            return
        if (not text and not images) or self.controller.streaming:
            return
        if images and self.chat_images.reason:  # the model was switched after they were attached
            self.banner.show_message(self.chat_images.reason)
            return
        ready = self._ready()
        if ready is None:
            return
        conv_id, entry, params = ready
        self.composer.edit.clear()
        self.chat_images.clear()
        if self.editing_id is not None:
            message_id, self.editing_id = self.editing_id, None
            self.edit_bar.hide()
            self.controller.edit_and_rerun(conv_id, message_id, text, entry, params, docs=self.docs_toggle.collection(),
                                           images=images)
        else:
            self._unsent = (text, images)
            self.controller.send(conv_id, text, entry, params, docs=self.docs_toggle.collection(), images=images)

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
        parsed = read_docs_message(message.content)
        self.composer.edit.setPlainText(parsed.question if parsed else message.content)
        self.chat_images.show_stored(message.images, self.store)  # kept, or removed one by one, when sent
        self.edit_bar.show()
        self.composer.edit.setFocus()

    def cancel_edit(self) -> None:
        if self.editing_id is not None:
            self.editing_id = None
            self.composer.edit.clear()
            self.chat_images.clear()
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
        vision = " · reads images" if status.vision else ""
        names = {w.endpoint: w.name for w in self.settings.workers if w.name}
        split = describe_split(status.split, names)  # "split: this computer 10 layers + studio-pc 8 …"
        where = status.where  # "Vulkan0: Radeon 780M, 25/25 layers"
        self.load_label.setText(f"Ready · context {status.n_ctx:,}{vision}{' · ' + split if split else ''}"
                                f"{' · ' + where if where else ''} · loaded in {status.load_seconds:.1f} s")
        if status.gpu_note:
            self.banner.show_message(status.gpu_note)
        self.params.load_info.setText(f"Chat format: {status.chat_format_description}")
        self.chat_tools.refresh()
        self._adapter_applied(self.controller.active_adapter())

    def _load_failed(self, message: str) -> None:
        self.load_bar.hide()
        self.load_label.setText("Not loaded")
        self.banner.show_message(message)

    def _serving_changed(self, serving: bool) -> None:
        waiting = " Your answer is next." if self.controller.streaming else ""
        self.serving_label.setText(f"Answering a request from another app…{waiting}")
        self.serving_label.setVisible(serving)

    def _stream_started(self) -> None:
        self._serving_changed(self.controller.serving)
        self.composer.send_button.hide()
        self.composer.stop_button.show()
        self.conversations.new_button.setEnabled(True)

    def _history_changed(self) -> None:
        self._unsent = None  # the store has the message now
        if self._streaming_conversation == self.current_id:
            self.reload_messages()
            if self.controller.streaming:
                self.transcript.begin_answer()
        self.conversations.refresh()

    def _chunk(self, text: str) -> None:
        if self._streaming_conversation == self.current_id:
            self.transcript.append(text)

    def _stream_finished(self, _completion: Completion | None) -> None:
        self._serving_changed(self.controller.serving)
        self.composer.stop_button.hide()
        self.composer.send_button.show()

    def _stream_failed(self, message: str) -> None:
        self._stream_finished(None)
        self.banner.show_message(message)
        if self._unsent is not None:  # failed before the message was saved (the model did not load): keep it
            self.composer.restore(*self._unsent)

    def showEvent(self, event: object) -> None:  # type: ignore[override]
        super().showEvent(event)  # type: ignore[arg-type]
        self.refresh_adapters()  # one may have been trained or deleted meanwhile
        self.composer.edit.setFocus()

    # -- adapters ------------------------------------------------------------------------------
    def refresh_adapters(self) -> None:
        """List the adapters trained on the picked model ("No adapter" first), keeping the choice."""
        entry = self.current_entry()
        models = self.library.entries()
        mine = [a for a in list_adapters() if entry is not None and (base := find_base(a, models)) is not None
                and base.name == entry.name] if entry is not None else []
        chosen = self.adapter_picker.currentData() or ""
        self._adapters = {a.name: a for a in mine}
        self.adapter_picker.blockSignals(True)
        self.adapter_picker.clear()
        self.adapter_picker.addItem("No adapter", "")
        for a in mine:
            self.adapter_picker.addItem(a.name, a.name)
        self.adapter_picker.setCurrentIndex(max(0, self.adapter_picker.findData(chosen)))
        self.adapter_picker.blockSignals(False)
        self.adapter_picker.setEnabled(bool(mine))
        self.adapter_picker.setVisible(bool(mine))  # a model with no adapters keeps the header plain
        self._show_scale()
        if chosen and chosen not in self._adapters:
            self._apply_adapter()  # its model was switched or it was deleted: take it off

    def current_adapter(self) -> tuple[str, float]:
        """The picked adapter's name ('' = none) and scale."""
        return str(self.adapter_picker.currentData() or ""), round(self.scale_slider.value() * SCALE_STEP, 2)

    def set_adapter(self, name: str, scale: float = 1.0, *, save: bool = True) -> bool:
        """Pick an adapter of the current model by name and apply it; False when there is none so called."""
        row = self.adapter_picker.findData(name)
        if row < 0:
            return False
        self.adapter_picker.setCurrentIndex(row)
        self.scale_slider.blockSignals(True)
        self.scale_slider.setValue(round(scale / SCALE_STEP))
        self.scale_slider.blockSignals(False)
        self._show_scale()
        self._apply_adapter()
        if save:
            self._save_adapter()
        return True

    def start_chat_with_adapter(self, model_name: str, adapter_name: str, scale: float = 1.0) -> None:
        """A new conversation on ``model_name`` with ``adapter_name`` applied (loaded now, in the background)."""
        self.new_chat()
        self.select_model(model_name)
        entry = self.current_entry()
        if entry is None or entry.name != model_name:
            self.banner.show_message(f"The model {model_name} is not in the library: import it in My Models first.")
            return
        if not self.set_adapter(adapter_name, scale):
            self.banner.show_message(f"No adapter called {adapter_name} was trained on {model_name}.")
            return
        conv = self.store.create(title=f"Chat with {adapter_name}", model=entry.name,
                                 system_prompt=self.params.system_prompt.toPlainText().strip(),
                                 params=self.params.form.values().to_dict(), adapter=adapter_name,
                                 adapter_scale=self.current_adapter()[1])
        self.conversations.current_id = conv.id
        self._use_adapter_docs(adapter_name)
        self.conversations.refresh()
        self.controller.load(entry, self.params.form.values())

    def _restore_adapter(self, name: str, scale: float) -> None:
        # Restoring never writes to the conversation: until the library is listed (at start-up) its
        # model and adapters are not known yet, and _library_changed restores again.
        if name and self.set_adapter(name, scale, save=False):
            return
        entry = self.current_entry()
        if name and self.current_id is not None and entry is not None and entry.name == self.store.get(self.current_id).model:
            self.banner.show_message(f"This chat used the adapter {name}, which is no longer there: it goes on without it.")
        self.adapter_picker.setCurrentIndex(0)
        self._show_scale()
        self._apply_adapter()

    def _restore_conversation_adapter(self) -> None:
        if self.current_id is not None:
            conv = self.store.get(self.current_id)
            if conv.adapter and self.current_adapter() != (conv.adapter, conv.adapter_scale):
                self._restore_adapter(conv.adapter, conv.adapter_scale)

    def _adapter_picked(self) -> None:
        self._show_scale()
        self._apply_adapter()
        self._save_adapter()

    def _scale_moved(self, _value: int) -> None:
        self._show_scale()
        self._scale_timer.start()

    def _scale_changed(self) -> None:
        self._apply_adapter()
        self._save_adapter()

    def _show_scale(self) -> None:
        on = bool(self.adapter_picker.currentData())
        self.scale_slider.setEnabled(on)
        self.scale_slider.setVisible(on)
        self.scale_label.setVisible(on)
        self.scale_label.setText(f"×{self.scale_slider.value() * SCALE_STEP:.2f}")

    def _apply_adapter(self) -> None:
        name, scale = self.current_adapter()
        adapter = self._adapters.get(name)
        base = find_base(adapter, self.library.entries()) if adapter else None
        if adapter is None and not self.controller.active_adapter().name:
            self._adapter_applied(self.controller.active_adapter())
            return
        self.controller.use_adapter(adapter, base, scale)

    def _save_adapter(self) -> None:
        if self.current_id is not None:
            name, scale = self.current_adapter()
            conv = self.store.get(self.current_id)
            if (conv.adapter, conv.adapter_scale) != (name, scale):
                self.store.update(self.current_id, adapter=name, adapter_scale=scale)

    def _adapter_applied(self, active: ActiveAdapter) -> None:
        status = self.controller.engine.status
        model = status.path.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".gguf") if status else ""
        entry = self.current_entry()
        if status is not None and entry is not None and status.path == entry.path:
            model = entry.name
        self.active_label.setText(
            f"{model} + {active.name} (×{active.scale:g})" if active.name and active.loras and model else ""
        )

    def _adapter_failed(self, message: str) -> None:
        # The engine keeps what it had: the picker goes back to that.
        self.banner.show_message(message)
        active = self.controller.active_adapter()
        self.adapter_picker.setCurrentIndex(max(0, self.adapter_picker.findData(active.name)))
        self.scale_slider.blockSignals(True)
        self.scale_slider.setValue(round(active.scale / SCALE_STEP))
        self.scale_slider.blockSignals(False)
        self._show_scale()
        self._save_adapter()
        self._adapter_applied(active)

    # -- documents -----------------------------------------------------------------------------
    def set_collections(self, names: list[str]) -> None:
        """The Knowledge page's collections, for the "Use my documents" picker."""
        self.docs_toggle.set_collections(names)
        if self.current_id is not None and not self.docs_toggle.collection():
            self.docs_toggle.set_collection(self.store.get(self.current_id).docs)

    def _use_adapter_docs(self, adapter_name: str) -> None:
        """Tune + index: turn on the collection the adapter was taught with (its manifest names it), listed
        first if the job made it after the picker was filled."""
        from core.docs.names import collection_names
        from core.errors import HearthError
        from core.finetune.adapters import get_adapter
        from core.finetune.indexing import adapter_collection

        try:
            docs = adapter_collection(get_adapter(adapter_name))
        except HearthError:  # an adapter removed meanwhile: the chat goes on with what it has
            return
        if docs is None:
            return
        if self.docs_toggle.picker.findText(docs) < 0:
            self.docs_toggle.set_collections(collection_names())
        self.docs_toggle.set_collection(docs)
        self._save_docs()

    def _save_docs(self) -> None:
        if self.current_id is not None:
            docs = self.docs_toggle.collection()
            if self.store.get(self.current_id).docs != docs:
                self.store.update(self.current_id, docs=docs)

    def _docs_used(self, turn: object) -> None:
        notes = list(getattr(turn, "notes", []))
        self.docs_toggle.note.setText("; ".join(notes).capitalize() if notes else "")

    def set_tools(self, tools: ToolsControl) -> None:
        """The window's MCP tools (Settings > Tools): the toggle follows them, answers may call them."""
        self.chat_tools.set_tools(tools)
