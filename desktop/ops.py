"""Running core calls off the GUI thread and getting their results back by signals.

Shaped after Anki's ``QueryOp`` (qt/aqt/operations/__init__.py) and its task manager
(qt/aqt/taskman.py): one single-worker executor for everything that touches the engine (llama.cpp
is not thread-safe and the worker process serves one request at a time), one pool for the rest
(Hub calls, imports, probes).

    Op(lambda: library.models()).on_success(model.set_entries).on_failure(show_error).run(pool)

The callable may take a ``report`` argument: calling ``report(x)`` from the worker delivers ``x`` to
``on_progress`` on the GUI thread, in order (the engine's stream uses it for tokens).
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
import traceback
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

import shiboken6
from PySide6.QtCore import QObject, Signal

from core.errors import HearthError

T = TypeVar("T")
log = logging.getLogger(__name__)


class _Relay(QObject):
    """Lives on the GUI thread; signals emitted from a worker thread arrive there queued."""

    succeeded = Signal(object)
    failed = Signal(object)
    progressed = Signal(object)


class Executor:
    """A named pool of daemon threads; ``Executor(1)`` runs its ops one after another.

    Daemon threads (unlike ``ThreadPoolExecutor``'s, which the interpreter joins at exit) let the
    app quit at once while a Hub request is still retrying; ``shutdown(wait=True)`` is for the
    engine thread, whose work must end cleanly.
    """

    def __init__(self, workers: int, name: str) -> None:
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(workers)
        ]
        for t in self._threads:
            t.start()
        self.closed = False

    def _loop(self) -> None:
        while (fn := self._queue.get()) is not None:
            fn()

    def submit(self, fn: Callable[[], None]) -> None:
        if not self.closed:
            self._queue.put(fn)

    def shutdown(self, wait: bool = True, timeout: float = 60.0) -> None:
        """Drop queued work and stop the threads; ``wait`` waits for the work running now."""
        self.closed = True
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for t in self._threads:
                t.join(timeout)


class Op(Generic[T]):
    """One call to run in the background, with what to do on the GUI thread when it ends."""

    _running: ClassVar[set[Op[Any]]] = set()  # keeps ops (and their relays) alive until they report

    def __init__(self, fn: Callable[..., T]) -> None:
        self._fn = fn
        self._wants_report = "report" in inspect.signature(fn).parameters
        self._success: Callable[[T], None] | None = None
        self._failure: Callable[[BaseException], None] | None = None
        self._progress: Callable[[Any], None] | None = None
        self._relay: _Relay | None = None

    def on_success(self, callback: Callable[[T], None]) -> Op[T]:
        self._success = callback
        return self

    def on_failure(self, callback: Callable[[BaseException], None]) -> Op[T]:
        self._failure = callback
        return self

    def on_progress(self, callback: Callable[[Any], None]) -> Op[T]:
        self._progress = callback
        return self

    def run(self, executor: Executor) -> Op[T]:
        relay = _Relay()
        self._relay = relay
        relay.succeeded.connect(self._deliver_success)
        relay.failed.connect(self._deliver_failure)
        if self._progress is not None:
            relay.progressed.connect(self._progress)
        Op._running.add(self)
        executor.submit(self._work)
        return self

    def _work(self) -> None:
        relay = self._relay
        assert relay is not None
        try:
            result = self._fn(report=relay.progressed.emit) if self._wants_report else self._fn()
        except BaseException as exc:
            if not isinstance(exc, HearthError):
                log.error("background operation failed:\n%s", traceback.format_exc())
            relay.failed.emit(exc)
        else:
            relay.succeeded.emit(result)

    def _finish(self) -> None:
        Op._running.discard(self)
        if self._relay is not None:
            self._relay.deleteLater()
            self._relay = None

    def _deliver_success(self, result: Any) -> None:
        try:
            if self._success is not None and _alive(self._success):
                self._success(result)
        finally:
            self._finish()

    def _deliver_failure(self, exc: Any) -> None:
        try:
            if self._failure is not None:
                if _alive(self._failure):
                    self._failure(exc)
            elif not isinstance(exc, HearthError):
                log.error("unhandled background error: %r", exc)
        finally:
            self._finish()


def _alive(callback: Callable[..., Any]) -> bool:
    """False for a method of a widget Qt has deleted meanwhile (its page was closed while the op ran)."""
    owner = getattr(callback, "__self__", None)
    return not isinstance(owner, QObject) or shiboken6.isValid(owner)


def error_text(exc: BaseException) -> str:
    """What to show the user for an error: a HearthError's own message, else its type and text."""
    if isinstance(exc, HearthError):
        return str(exc)
    return f"Something went wrong ({type(exc).__name__}: {exc}). Details are in the log."
