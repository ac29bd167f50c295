"""A first-come, first-served lock: the window and the API server take turns on one engine.

``threading.Lock`` promises no order, so a busy client could starve the window's chat; this lock
hands itself to waiters strictly in the order they asked (a ticket queue).
"""

from __future__ import annotations

import collections
import threading
from types import TracebackType


class FairLock:
    """FIFO mutual exclusion. Not re-entrant. ``busy`` and ``waiting`` are for display."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._queue: collections.deque[threading.Event] = collections.deque()
        self._held = False
        self.holder = ""  # who holds it, for display ("window", "server: 127.0.0.1")

    def acquire(self, holder: str = "") -> None:
        with self._mutex:
            if not self._held and not self._queue:
                self._held = True
                self.holder = holder
                return
            turn = threading.Event()
            self._queue.append(turn)
        turn.wait()
        self.holder = holder  # the releaser handed the lock straight to us (``_held`` stays True)

    def release(self) -> None:
        with self._mutex:
            if not self._held:
                raise RuntimeError("FairLock released while not held")
            self.holder = ""
            if self._queue:
                self._queue.popleft().set()
            else:
                self._held = False

    def __call__(self, holder: str) -> _Holding:
        return _Holding(self, holder)

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()

    @property
    def busy(self) -> bool:
        return self._held

    @property
    def waiting(self) -> int:
        return len(self._queue)


class _Holding:
    def __init__(self, lock: FairLock, holder: str) -> None:
        self.lock, self.name = lock, holder

    def __enter__(self) -> FairLock:
        self.lock.acquire(self.name)
        return self.lock

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None) -> None:
        self.lock.release()
