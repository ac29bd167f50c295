"""Chat's Compare mode, off the GUI thread: one prompt to both sides of a comparison, streamed per side.

Runs on the chat's engine thread holding the engine's ``FairLock`` as "window", like every chat
answer (``desktop.chat_controller``), so the API server and the chat never meet it half-way. The
window's engine is the comparison's first engine; ``core.chats.compare_engines.CompareEngines``
adds a second one only when two different models fit in memory together, and says what it does.
Everything that happens comes back as signals tagged with the side (0 left, 1 right).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

from core.chats import ChatStore
from core.chats.compare import (
    CompareEngines,
    CompareItem,
    CompareSession,
    SideCommitted,
    SideFailed,
    SideLoading,
    SideReady,
)
from core.engine import Completion, TextChunk
from desktop.chat_controller import ChatController
from desktop.ops import Op, error_text


class CompareController(QObject):
    """Sends to a saved comparison (``send(group, text)``) and reports each side's progress; holds no widgets."""

    side_loading = Signal(int, str)  # side, model name
    side_load_progress = Signal(int, float)  # side, fraction of the weights loaded
    side_ready = Signal(int, object)  # side, ModelStatus
    side_committed = Signal(int)  # the side's conversation holds the question: its answer streams next
    side_chunk = Signal(int, str)
    side_finished = Signal(int, object)  # side, Completion
    side_failed = Signal(int, str)  # side, message (the other side still answers)
    side_docs = Signal(int, object)  # side, DocsTurn
    started = Signal()
    finished = Signal()
    failed = Signal(str)

    HOLDER = "window"

    def __init__(self, store: ChatStore, chat: ChatController) -> None:
        super().__init__()
        self.store = store
        self.chat = chat
        self.engines = CompareEngines(chat.engine)
        self.plan = ""
        self.streaming = False
        self._session: CompareSession | None = None

    def send(self, group: int, text: str) -> None:
        """Ask both sides of comparison ``group``; nothing happens while an answer (here or in the chat) runs."""
        if self.streaming or self.chat.streaming:
            return
        self.streaming = True
        self.started.emit()

        def work(report: Callable[[Any], None]) -> None:
            with self.chat.lock(self.HOLDER):
                session = CompareSession(self.store, self.engines, group, docs=self.chat.docs)
                self._session = session
                try:
                    for item in session.send(text, progress=lambda side, f: report((side, f))):
                        report(item)
                finally:
                    self._session = None
                    session.close()

        Op(work).on_progress(self._progress).on_success(lambda _r: self._done()).on_failure(self._failed).run(
            self.chat.executor)

    def stop(self) -> None:
        """Stop the answer being written; the side still waiting does not start (safe from the GUI thread)."""
        session = self._session
        if session is not None and self.chat.lock.holder == self.HOLDER:
            session.stop()

    def _progress(self, event: object) -> None:
        if isinstance(event, tuple):
            side, fraction = event
            self.side_load_progress.emit(int(side), float(fraction))
            return
        assert isinstance(event, CompareItem)
        side, item = event.side, event.item
        if isinstance(item, TextChunk):
            self.side_chunk.emit(side, item.text)
        elif isinstance(item, Completion):
            self.side_finished.emit(side, item)
        elif isinstance(item, SideLoading):
            self.side_loading.emit(side, item.name)
        elif isinstance(item, SideReady):
            self.plan = item.plan
            self.side_ready.emit(side, item.status)
        elif isinstance(item, SideCommitted):
            self.side_committed.emit(side)
        elif isinstance(item, SideFailed):
            self.side_failed.emit(side, item.message)
        else:  # a DocsTurn: the passages the question went with
            self.side_docs.emit(side, item)

    def _done(self) -> None:
        self.streaming = False
        self.finished.emit()

    def _failed(self, exc: BaseException) -> None:
        self.streaming = False
        self.failed.emit(error_text(exc))
        self.finished.emit()

    def release(self) -> None:
        """Stop the second engine (on the engine thread, after any answer still running): Compare mode was left."""
        if self.engines.second is not None:
            Op(self.engines.release_second).run(self.chat.executor)

    def describe_plan(self) -> str:
        return self.engines.describe()

    def shutdown(self) -> None:
        """Stop an answer and the second engine (the window's own engine is the chat controller's to stop)."""
        self.stop()
        self.engines.close()
