"""Chat's Compare mode: two set-ups side by side answer one prompt, each column streaming with its tokens/s.

``CompareView`` is the two columns (``compare_column``), the plan line (how the engine runs them) and
one composer; ``CompareMode`` puts it in the chat page's place (the conversation list stays) and back.
A comparison is saved when its first prompt is sent (``core.chats.compare``: two linked conversations),
listed once in the conversation list, and reopened from there in Compare mode.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from core.chats import ChatStore, Message
from core.chats.compare import (
    SIDE_NAMES,
    CompareSide,
    compare_sides,
    continue_side,
    create_compare,
    title_from,
)
from core.engine import Completion, ModelStatus
from core.errors import HearthError
from core.settings import Settings
from desktop.chat_controller import ChatController
from desktop.compare_controller import CompareController
from desktop.models.library import LibraryTableModel
from desktop.theme import Palette
from desktop.views.compare_column import CompareColumn
from desktop.views.composer import Composer
from desktop.views.widgets import Banner, flat_button, muted, title

EXPLAIN = "One prompt, two set-ups. They answer one after the other, so neither slows the other down."


def compare_composer() -> Composer:
    """The one message box under both columns: the chat's composer, sending to both, without pictures."""
    composer = Composer()
    composer.edit.setPlaceholderText("Ask both sides…  (Enter to send, Shift+Enter for a new line)")
    composer.send_button.setText("Send to both")
    composer.stop_button.setToolTip("Stop the answers")
    composer.attach_button.hide()  # a comparison answers text: each side's model may or may not read images
    return composer


class CompareView(QWidget):
    """Two columns and one composer; ``continue_requested(conversation id)`` opens a side as a normal chat."""

    back_requested = Signal()
    continue_requested = Signal(int)
    saved = Signal()  # a comparison was created or answered: the conversation list changes

    def __init__(self, store: ChatStore, controller: CompareController, library: LibraryTableModel,
                 settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.store = store
        self.controller = controller
        self.settings = settings
        self.group: int | None = None
        self._streaming_group: int | None = None
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 12)
        col.setSpacing(8)
        header = QHBoxLayout()
        header.setContentsMargins(16, 12, 16, 0)
        self.title = title("Compare", "sectionTitle")
        # A long first prompt in the title must not widen the view (and squeeze the conversation list).
        self.title.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.title.setMinimumWidth(1)
        self.back_button = flat_button("←  Back to chat", self.back_requested.emit, "Leave Compare mode")
        header.addWidget(self.title)
        header.addStretch(1)
        header.addWidget(self.back_button)
        col.addLayout(header)
        self.explain = muted(EXPLAIN)
        self.explain.setContentsMargins(18, 0, 16, 0)
        col.addWidget(self.explain)
        self.banner = Banner()
        banner_row = QHBoxLayout()
        banner_row.setContentsMargins(16, 0, 16, 0)
        banner_row.addWidget(self.banner)
        col.addLayout(banner_row)
        self.columns = [CompareColumn(i, library, settings) for i in (0, 1)]
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setHandleWidth(1)
        for column in self.columns:
            column.setup.changed.connect(self._save_setups)
            column.continue_requested.connect(lambda c=column: self._continue(c.index))
            self.splitter.addWidget(column)
        col.addWidget(self.splitter, 1)
        self.plan_label = muted("")
        self.plan_label.setContentsMargins(18, 0, 16, 0)
        col.addWidget(self.plan_label)
        self.composer = compare_composer()
        self.composer.submitted.connect(self.send)
        self.composer.stop_button.clicked.connect(self.controller.stop)
        composer_row = QHBoxLayout()
        composer_row.setContentsMargins(16, 0, 16, 0)
        composer_row.addWidget(self.composer)
        col.addLayout(composer_row)

        controller.started.connect(self._started)
        controller.finished.connect(self._finished)
        controller.failed.connect(self.banner.show_message)
        controller.side_loading.connect(self._side_loading)
        controller.side_load_progress.connect(self._side_progress)
        controller.side_ready.connect(self._side_ready)
        controller.side_committed.connect(self._side_committed)
        controller.side_chunk.connect(self._side_chunk)
        controller.side_finished.connect(self._side_finished)
        controller.side_failed.connect(self._side_failed)
        controller.side_docs.connect(self._side_docs)

    # -- opening ---------------------------------------------------------------------------------
    def new(self, left: CompareSide, right: CompareSide) -> None:
        """An empty comparison with these set-ups; it is saved when the first prompt is sent."""
        self.group = None
        self.title.setText("Compare")
        self.banner.hide()
        for column, side in zip(self.columns, (left, right), strict=True):
            column.setup.set_side(side)
            column.show_messages([])
            column.set_stats("")
        self.plan_label.setText("")
        self.composer.edit.setFocus()

    def open_group(self, group: int) -> None:
        """A saved comparison: its set-ups and both transcripts."""
        self.banner.hide()
        try:
            convs = compare_sides(self.store, group)
        except HearthError as exc:
            self.banner.show_message(str(exc))
            return
        self.group = group
        self.title.setText(f"Compare · {convs[0].title}" if convs[0].title else "Compare")
        for column, conv in zip(self.columns, convs, strict=True):
            column.setup.set_side(CompareSide.from_conversation(conv))
            column.set_stats("")
            column.show_messages(self.store.messages(conv.id))
        if self.controller.streaming and self._streaming_group == group:
            self.plan_label.setText(self.controller.describe_plan())
        self.composer.edit.setFocus()

    def sides(self) -> tuple[CompareSide, CompareSide]:
        return self.columns[0].setup.side(), self.columns[1].setup.side()

    def set_collections(self, names: list[str]) -> None:
        for column in self.columns:
            column.setup.set_collections(names)

    def set_palette(self, palette: Palette) -> None:
        for column in self.columns:
            column.set_palette(palette)
        if self.group is not None and not self.controller.streaming:
            self.open_group(self.group)

    # -- sending -----------------------------------------------------------------------------------
    def send(self) -> None:
        text = self.composer.edit.toPlainText().strip()
        if not text or self.controller.streaming or self.controller.chat.streaming:
            return
        left, right = self.sides()
        missing = [SIDE_NAMES[i] for i, s in enumerate((left, right)) if not s.model]
        if missing:
            self.banner.show_message(f"Pick a model for side {' and '.join(missing)} first: import one in My Models "
                                     "or download one in Discover.")
            return
        self.banner.hide()
        if self.group is None:
            self.group = create_compare(self.store, left, right, system_prompt=self.settings.system_prompt,
                                        title=title_from(text))
            self.title.setText(f"Compare · {title_from(text)}")
        else:
            self._save_setups()
        self.composer.edit.clear()
        self._streaming_group = self.group
        # The question shows in both columns at once; each side stores it when its turn comes.
        for column, conv in zip(self.columns, compare_sides(self.store, self.group), strict=True):
            column.show_messages([*self.store.messages(conv.id), Message(role="user", content=text)])
            column.set_stats(f"Waiting for side {SIDE_NAMES[0]}…" if column.index else "Starting…")
        self.controller.send(self.group, text)
        self.saved.emit()

    def _save_setups(self) -> None:
        """A changed set-up is kept with its side's conversation (its next answers use it)."""
        if self.group is None:
            return
        for conv, side in zip(compare_sides(self.store, self.group), self.sides(), strict=True):
            if CompareSide.from_conversation(conv) != side:
                self.store.update(conv.id, model=side.model, adapter=side.adapter, adapter_scale=side.adapter_scale,
                                  docs=side.docs, params=dict(side.params))

    def _continue(self, index: int) -> None:
        if self.group is None or self.controller.streaming:
            return
        self.continue_requested.emit(continue_side(self.store, self.group, index).id)

    # -- the controller's reports ------------------------------------------------------------------
    def _mine(self) -> bool:
        return self._streaming_group is not None and self._streaming_group == self.group

    def _started(self) -> None:
        self.composer.send_button.hide()
        self.composer.stop_button.show()
        for column in self.columns:
            column.continue_button.hide()

    def _finished(self) -> None:
        self.composer.stop_button.hide()
        self.composer.send_button.show()
        if self._mine():
            self.open_group(self._streaming_group or 0)
            self.plan_label.setText(self.controller.describe_plan())
        self._streaming_group = None
        self.saved.emit()

    def _side_loading(self, side: int, name: str) -> None:
        if self._mine():
            self.columns[side].set_stats(f"Loading {name}…")

    def _side_progress(self, side: int, fraction: float) -> None:
        if self._mine():
            self.columns[side].set_stats(f"Loading… {fraction:.0%}")

    def _side_ready(self, side: int, status: ModelStatus) -> None:
        if self._mine():
            self.columns[side].set_stats(f"Writing…  (context {status.n_ctx:,})")
            self.plan_label.setText(self.controller.describe_plan())

    def _side_committed(self, side: int) -> None:
        if self._mine() and self.group is not None:
            column = self.columns[side]
            column.show_messages(self.store.messages(compare_sides(self.store, self.group)[side].id))
            column.continue_button.hide()  # until both sides are done
            column.set_stats("Writing…")
            column.transcript.begin_answer()

    def _side_chunk(self, side: int, text: str) -> None:
        if self._mine():
            self.columns[side].transcript.append(text)

    def _side_finished(self, side: int, completion: Completion) -> None:
        if self._mine() and self.group is not None:
            column = self.columns[side]
            column.show_messages(self.store.messages(compare_sides(self.store, self.group)[side].id))
            column.continue_button.hide()
            s = completion.stats
            column.set_stats(f"{s.tokens_per_second:.1f} tokens/s  ·  {s.completion_tokens} tokens"
                             + ("  ·  stopped" if completion.cancelled else ""))

    def _side_failed(self, side: int, message: str) -> None:
        if self._mine():
            self.columns[side].set_stats("Did not answer.")
            self.banner.show_message(f"Side {SIDE_NAMES[side]}: {message}")

    def _side_docs(self, side: int, turn: object) -> None:
        if self._mine():
            count = len(getattr(getattr(turn, "context", None), "passages", []))
            self.columns[side].set_stats(f"Asked with {count} passage{'s' if count != 1 else ''} from your documents…")


class CompareMode:
    """Compare mode inside the chat page: the view takes the transcript's and the parameters' place.

    The conversation list stays; picking an ordinary chat or "New chat" there leaves the mode.
    """

    def __init__(self, page: QWidget, chat: ChatController, store: ChatStore, library: LibraryTableModel,
                 settings: Settings, palette: Palette) -> None:
        from desktop.views.chat_page import ChatPage

        assert isinstance(page, ChatPage)
        self.page = page
        self.store = store
        self.controller = CompareController(store, chat)
        self.view = CompareView(store, self.controller, library, settings)
        self.view.set_palette(palette)
        self.view.back_requested.connect(self.back)
        self.view.continue_requested.connect(self._continue)
        self.view.saved.connect(self._saved)
        page.chat_shown.connect(self.leave)  # an ordinary chat opened or started
        # The view sits in the chat page's splitter beside the transcript and the parameters, hidden until
        # the mode is on; then those two are hidden instead (the conversation list stays).
        splitter = page.splitter
        center, params = splitter.widget(1), splitter.widget(2)
        assert center is not None and params is not None
        self._center, self._params = center, params
        splitter.insertWidget(2, self.view)
        splitter.setStretchFactor(2, 1)
        self.view.hide()
        self._hidden: list[QWidget] = []
        self._sizes: list[int] = []
        self._previous: int | None = None  # the chat open before Compare mode, for "Back to chat"
        self.active = False

    def open(self, left: CompareSide | None = None, right: CompareSide | None = None,
             group: int | None = None) -> CompareView:
        """Enter the mode with a saved comparison, or a new one (by default: the chat's set-up, and its base)."""
        self._enter()
        self.view.set_collections(self._collections())
        if group is not None:
            self.page.conversations.select(group, emit=False)
            self.view.open_group(group)
        else:
            self.page.conversations.select(None, emit=False)
            if left is None or right is None:
                left, right = self.default_sides()
            self.view.new(left, right)
        return self.view

    def default_sides(self) -> tuple[CompareSide, CompareSide]:
        """The chat's model on both sides; with an adapter on: the base model vs the adapter."""
        entry = self.page.current_entry()
        model = entry.name if entry is not None else ""
        params = self.page.params.form.values().to_dict()
        adapter, scale = self.page.current_adapter()
        docs = self.page.docs_toggle.collection()
        if adapter:
            return CompareSide(model, docs=docs, params=params), CompareSide(model, adapter, scale, docs, params)
        return CompareSide(model, docs=docs, params=params), CompareSide(model, docs=docs, params=params)

    def _collections(self) -> list[str]:
        """The document collections (read from disk: the Knowledge page may not have been opened yet)."""
        from core.docs.store import DocsLibrary

        return DocsLibrary().names()

    def _enter(self) -> None:
        if self.active:
            return
        current = self.page.current_id
        self._previous = current if current is not None and not self.store.get(current).compare_group else None
        splitter = self.page.splitter
        self._sizes = splitter.sizes()
        self._hidden = [w for w in (self._center, self._params) if w.isVisible()]
        for w in (self._center, self._params):
            w.hide()
        self.view.show()
        # The conversation list keeps its width (at least enough for a title); the comparison takes the rest.
        total, listed = sum(self._sizes), max(self._sizes[0], 200)
        splitter.setSizes([listed, 0, max(total - listed, 1), 0])
        self.active = True

    def leave(self) -> None:
        if not self.active:
            return
        self.view.hide()
        for w in self._hidden:
            w.show()
        self.page.splitter.setSizes(self._sizes)
        self.active = False
        self.controller.release()  # a second model kept loaded for the comparison is not needed by the chat

    def back(self) -> None:
        """Back to the chat that was open before (or a new one): the list's selection must not stay on the
        comparison, or the chat's composer would send into one of its sides."""
        if self._previous is not None and self.page.conversations.model.row_of(self._previous) >= 0:
            self.page.open_conversation(self._previous)  # chat_shown: leaves the mode
        else:
            self.page.new_chat()

    def _continue(self, conversation_id: int) -> None:
        self.leave()
        self.page.conversations.refresh()
        self.page.open_conversation(conversation_id)

    def _saved(self) -> None:
        self.page.conversations.refresh()
        if self.active and self.view.group is not None:
            self.page.conversations.select(self.view.group, emit=False)

    def set_palette(self, palette: Palette) -> None:
        self.view.set_palette(palette)

    def shutdown(self) -> None:
        """Leave the mode (the window saves the chat page's layout as the user left it) and stop the second engine."""
        self.leave()
        self.controller.shutdown()
