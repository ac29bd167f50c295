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
import itertools
import logging
import queue
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Generic, TypeVar

import shiboken6
from PySide6.QtCore import QCoreApplication, QObject, Signal

from core.errors import HearthError

T = TypeVar("T")
log = logging.getLogger(__name__)


class _Relay(QObject):
    """The one relay of every op: lives on the GUI thread for good, so signals a worker emits arrive there queued.

    One long-lived object rather than one per op, and messages that carry an op's number rather than
    the op: a worker thread then never holds the last reference to a Qt object, an op or the widgets
    its callbacks capture. Dropping that last reference on a worker thread would delete a widget (or
    a relay with a deferred delete still pending) off the GUI thread, which crashes Qt natively, at
    random and rarely: exactly the crashes the window's tests used to show between two ops.
    """

    delivered = Signal(object)  # (op number, "progress" | "ok" | "error", payload)


_relay: _Relay | None = None


def _the_relay() -> _Relay:
    global _relay
    if _relay is None or not shiboken6.isValid(_relay):
        _relay = _Relay()
        app = QCoreApplication.instance()
        if app is not None and _relay.thread() is not app.thread():
            _relay.moveToThread(app.thread())
        _relay.delivered.connect(_dispatch)
    return _relay


def _dispatch(message: tuple[int, str, Any]) -> None:
    key, kind, payload = message
    op = Op._running.get(key)
    if op is not None:
        op._deliver(kind, payload)


class _Task:
    """What a worker runs for one op. It gives up its references to the op's callable before it reports,
    so the op (kept in ``Op._running`` until the GUI thread has delivered) is always freed there."""

    __slots__ = ("fn", "key", "relay", "wants_report")

    def __init__(self, key: int, fn: Callable[..., Any], wants_report: bool, relay: _Relay) -> None:
        self.key, self.fn, self.wants_report, self.relay = key, fn, wants_report, relay

    def __call__(self) -> None:
        fn, self.fn = self.fn, None
        key, emit = self.key, self.relay.delivered.emit
        assert fn is not None
        try:
            result = fn(report=lambda value: emit((key, "progress", value))) if self.wants_report else fn()
        except BaseException as exc:
            if not isinstance(exc, HearthError):
                log.error("background operation failed:\n%s", traceback.format_exc())
            _drop_frames(exc)  # the frames hold the call's locals (widgets among them): freed here, now
            del fn
            emit((key, "error", exc))
        else:
            del fn
            emit((key, "ok", result))


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
        while (task := self._queue.get()) is not None:
            task()
            del task  # holds nothing by now (``_Task``); dropped before waiting all the same

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

    _running: ClassVar[dict[int, Op[Any]]] = {}  # keeps ops (and their callbacks) alive until they report
    _numbers: ClassVar[Iterator[int]] = itertools.count(1)

    def __init__(self, fn: Callable[..., T]) -> None:
        self._fn = fn
        self._wants_report = "report" in inspect.signature(fn).parameters
        self._success: Callable[[T], None] | None = None
        self._failure: Callable[[BaseException], None] | None = None
        self._progress: Callable[[Any], None] | None = None
        self._key = 0

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
        """Queue the call (from the GUI thread); its callbacks run there when it reports."""
        self._key = next(Op._numbers)
        Op._running[self._key] = self
        executor.submit(_Task(self._key, self._fn, self._wants_report, _the_relay()))
        return self

    def _deliver(self, kind: str, payload: Any) -> None:
        if kind == "progress":
            if self._progress is not None and _alive(self._progress):
                self._progress(payload)
            return
        try:
            if kind == "ok":
                if self._success is not None and _alive(self._success):
                    self._success(payload)
            elif self._failure is not None:
                if _alive(self._failure):
                    self._failure(payload)
            elif not isinstance(payload, HearthError):
                log.error("unhandled background error: %r", payload)
        finally:
            Op._running.pop(self._key, None)


def _drop_frames(exc: BaseException) -> None:
    """Forget the tracebacks of ``exc`` and of the exceptions chained to it (the GUI side only shows the text)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = None
        stack += [e.__cause__, e.__context__]


def _alive(callback: Callable[..., Any]) -> bool:
    """False for a method of a widget Qt has deleted meanwhile (its page was closed while the op ran)."""
    owner = getattr(callback, "__self__", None)
    return not isinstance(owner, QObject) or shiboken6.isValid(owner)


def error_text(exc: BaseException) -> str:
    """What to show the user for an error: a HearthError's own message, else its type and text."""
    if isinstance(exc, HearthError):
        return str(exc)
    return f"Something went wrong ({type(exc).__name__}: {exc}). Details are in the log."
