"""The conversation: one bubble per message, Markdown rendered, streaming into the last one."""

from __future__ import annotations

import math

from PySide6.QtCore import QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QGuiApplication, QResizeEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from core.chats import Message
from desktop.markdown import render_markdown
from desktop.theme import LIGHT, Palette
from desktop.views.chat_tools import stored_calls
from desktop.views.image_view import ImageLoader, image_row
from desktop.views.tool_call_card import ToolCallCard
from desktop.views.widgets import flat_button

FINISH_WORDS = {"cancelled": "stopped", "interrupted": "interrupted", "length": "hit max tokens", "context": "context full"}


class MessageText(QTextBrowser):
    """Rendered Markdown that grows to fit its text (no scroll bar of its own)."""

    copy_code = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("messageText")
        self.setOpenLinks(False)
        self.setOpenExternalLinks(False)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.document().setDocumentMargin(2)
        self.code_blocks: list[str] = []
        self.anchorClicked.connect(self._anchor)

    def set_markdown(self, text: str, palette: Palette) -> None:
        rendered = render_markdown(text, palette)
        self.code_blocks = rendered.code_blocks
        self.setHtml(rendered.html)
        self._fit()

    def _anchor(self, url: QUrl) -> None:
        target = url.toString()
        if target.startswith("copy-code:"):
            index = int(target.split(":", 1)[1])
            if 0 <= index < len(self.code_blocks):
                self.copy_code.emit(self.code_blocks[index])
        elif url.scheme() in ("http", "https"):
            from PySide6.QtGui import QDesktopServices

            QDesktopServices.openUrl(url)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        self.document().setTextWidth(max(50, self.viewport().width()))
        height = self._height()
        if self.height() != height:
            self.setFixedHeight(height)

    def _height(self) -> int:
        # The window's style sheet pads every QTextEdit (4 px above and below): without counting that
        # padding the viewport came out 4 px short of the text and cut the last line's descenders.
        margins = self.contentsMargins()
        return math.ceil(self.document().size().height()) + margins.top() + margins.bottom() + 1

    def sizeHint(self) -> QSize:
        return QSize(400, self._height())


class MessageBubble(QFrame):
    """One message: who, the text, stats under answers, and its actions."""

    copy_text = Signal(str)
    edit_requested = Signal(int)
    regenerate_requested = Signal()

    def __init__(self, message: Message, palette: Palette, *, last: bool, image_loader: ImageLoader | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.message = message
        self.palette_ = palette
        user = message.role == "user"
        self.setObjectName("bubbleUser" if user else "bubbleAssistant")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 10, 14, 8)
        layout.setSpacing(4)
        who = QLabel("You" if user else "Assistant")
        who.setObjectName("sectionTitle")
        layout.addWidget(who)
        # The message's pictures, as thumbnails (a click opens one larger), above its text.
        shas = list(getattr(message, "images", None) or [])
        self.images = image_row([(sha, image_loader(sha) if image_loader else None) for sha in shas]) if shas else None
        if self.images is not None:
            layout.addWidget(self.images)
        self.text = MessageText()
        self.text.copy_code.connect(self.copy_text)
        layout.addWidget(self.text)
        footer = QHBoxLayout()
        footer.setSpacing(2)
        self.stats = QLabel(self._stats_text())
        self.stats.setObjectName("muted")
        # Wraps rather than widening the bubble: a long line ("… · hit max tokens") in a narrow window
        # would otherwise push the whole transcript past the chat column's right edge.
        self.stats.setWordWrap(True)
        footer.addWidget(self.stats, 1)
        footer.addWidget(flat_button("Copy", lambda: self.copy_text.emit(self.message.content), "Copy this message"))
        self.edit_button = None
        self.regenerate_button = None
        if user and message.id is not None:
            self.edit_button = flat_button("Edit", lambda: self.edit_requested.emit(self.message.id or 0),
                                           "Change this message and answer again from here")
            footer.addWidget(self.edit_button)
        if not user and last:
            self.regenerate_button = flat_button("Regenerate", self.regenerate_requested.emit, "Answer again")
            footer.addWidget(self.regenerate_button)
        layout.addLayout(footer)
        self.set_content(message.content)
        if self.images is not None and not message.content.strip():
            self.text.hide()  # a picture sent without words: no "…" under it

    def set_content(self, text: str) -> None:
        self.message.content = text
        self.text.set_markdown(text or "…", self.palette_)

    def _stats_text(self) -> str:
        m = self.message
        if m.role != "assistant" or m.finish_reason is None:
            return ""
        parts = []
        if m.tokens_per_second:
            parts.append(f"{m.tokens_per_second:.1f} tok/s")
        if m.completion_tokens:
            parts.append(f"{m.completion_tokens} tokens")
        used, n_ctx = m.meta.get("context_used"), m.meta.get("n_ctx")
        if used and n_ctx:
            parts.append(f"context {used:,} / {n_ctx:,}")
        if m.meta.get("drafted_tokens"):
            parts.append(f"drafted {m.meta['drafted_tokens']}, accepted {m.meta.get('accepted_tokens', 0)}")
        if m.meta.get("dropped_messages"):
            parts.append(f"{m.meta['dropped_messages']} older messages left out")
        if m.finish_reason in FINISH_WORDS:
            parts.append(FINISH_WORDS[m.finish_reason])
        if m.meta.get("tools_stopped"):  # the tool loop's cap on calls per answer was reached
            parts.append(str(m.meta["tools_stopped"]))
        return "  ·  ".join(parts)


class TranscriptView(QScrollArea):
    """The messages of one conversation, newest at the bottom, following the stream."""

    copy_text = Signal(str)
    edit_requested = Signal(int)
    regenerate_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        inner = QWidget()
        inner.setObjectName("transcript")
        self._layout = QVBoxLayout(inner)
        self._layout.setContentsMargins(24, 16, 24, 16)
        self._layout.setSpacing(12)
        self._layout.addStretch(1)
        self.setWidget(inner)
        self.palette_ = LIGHT
        self.image_loader: ImageLoader | None = None  # a stored picture's bytes by sha256 (the page's chat store)
        self.bubbles: list[MessageBubble] = []
        self.tool_cards: list[ToolCallCard] = []
        self.streaming: MessageBubble | None = None
        self._pending = ""
        self._render_timer = QTimer(self)
        self._render_timer.setSingleShot(True)
        self._render_timer.setInterval(50)  # re-render the growing answer at most 20 times a second
        self._render_timer.timeout.connect(self._render_stream)
        self.empty = QLabel("Send a message to start the conversation.")
        self.empty.setObjectName("muted")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._layout.insertWidget(0, self.empty)

    def set_palette(self, palette: Palette) -> None:
        self.palette_ = palette
        for card in self.tool_cards:  # a card waiting for the user is not rebuilt by a reload
            card.set_palette(palette)

    def set_messages(self, messages: list[Message]) -> None:
        opened = {c.call_id for c in self.tool_cards if not c.result.isHidden()}  # kept open through a reload
        self._clear()
        last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
        calls = stored_calls(messages)  # tool calls show as finished cards, not as bubbles
        for i, m in enumerate(messages):
            if m.role not in ("system", "tool") and not (i in calls and m.role == "assistant" and not m.content.strip()):
                self._add(MessageBubble(m, self.palette_, last=i == last_assistant and i == len(messages) - 1,
                                        image_loader=self.image_loader))
            for call in calls.get(i, []):
                card = ToolCallCard(call.id, call.tool, call.arguments, self.palette_)
                card.set_result(call.text, call.status)
                if call.id in opened and card.result.isHidden():
                    card.toggle_result()
                self.add_tool_card(card)
        self.empty.setVisible(not self.bubbles and not self.tool_cards)
        self._scroll_to_end()

    def add_tool_card(self, card: ToolCallCard) -> None:
        """Put a tool call's card at the end; text streamed after it starts a new answer bubble below."""
        if self.streaming is not None:
            self._render_timer.stop()
            if self._pending.strip():
                self.streaming.set_content(self._pending)
            else:
                self._drop(self.streaming)  # nothing was said before the call: no empty bubble above it
            self.streaming = None
            self._pending = ""
        row = QHBoxLayout()
        row.addWidget(card, 6)
        row.addStretch(1)
        self._layout.insertLayout(self._layout.count() - 1, row)
        self.tool_cards.append(card)
        self.empty.hide()
        self._scroll_to_end()

    def tool_card(self, call_id: str) -> ToolCallCard | None:
        return next((c for c in reversed(self.tool_cards) if c.call_id == call_id), None)

    def _drop(self, bubble: MessageBubble) -> None:
        for index in range(self._layout.count()):
            item = self._layout.itemAt(index)
            row = item.layout() if item is not None else None
            if row is not None and row.indexOf(bubble) >= 0:
                self._layout.takeAt(index)
                bubble.hide()
                bubble.deleteLater()
                row.deleteLater()
                break
        if bubble in self.bubbles:
            self.bubbles.remove(bubble)

    def begin_answer(self) -> None:
        """Show an empty answer bubble that the stream fills."""
        self.streaming = MessageBubble(Message(role="assistant", content=""), self.palette_, last=False)
        self._pending = ""
        self._add(self.streaming)
        self.empty.hide()
        self._scroll_to_end()

    def append(self, text: str) -> None:
        if self.streaming is None:
            self.begin_answer()
        self._pending += text
        if not self._render_timer.isActive():
            self._render_timer.start()

    def streamed_text(self) -> str:
        return self._pending

    def _render_stream(self) -> None:
        if self.streaming is not None:
            bar = self.verticalScrollBar()
            at_end = bar.value() >= bar.maximum() - 40
            self.streaming.set_content(self._pending)
            if at_end:
                self._scroll_to_end()

    def _add(self, bubble: MessageBubble) -> None:
        bubble.copy_text.connect(self._copy)
        bubble.edit_requested.connect(self.edit_requested)
        bubble.regenerate_requested.connect(self.regenerate_requested)
        row = QHBoxLayout()
        if bubble.message.role == "user":
            row.addStretch(1)
            row.addWidget(bubble, 6)
        else:
            row.addWidget(bubble, 6)
            row.addStretch(1)
        self._layout.insertLayout(self._layout.count() - 1, row)
        self.bubbles.append(bubble)

    def _copy(self, text: str) -> None:
        QGuiApplication.clipboard().setText(text)
        self.copy_text.emit(text)

    def _clear(self) -> None:
        self._render_timer.stop()
        self.streaming = None
        self._pending = ""
        self.bubbles = []
        self.tool_cards = []
        while self._layout.count() > 2:
            item = self._layout.takeAt(1)
            row = item.layout() if item is not None else None
            if row is None:
                continue
            while row.count():
                child = row.takeAt(0)
                widget = child.widget() if child is not None else None
                if widget is not None:
                    widget.hide()  # at once: deleteLater waits for the event loop, and it would still paint
                    widget.deleteLater()
            row.deleteLater()

    def _scroll_to_end(self) -> None:
        QTimer.singleShot(0, self, lambda: self.verticalScrollBar().setValue(self.verticalScrollBar().maximum()))
