"""Engine work for one request on its own thread, its results handed to the event loop.

The engine is blocking and its stream holds a thread-bound lock between tokens, so each request's
generation runs start to finish on one thread of its own, and the asyncio side reads what it
produces from a queue. ``cancel()`` (a client that went away) stops the answer at its next token.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from core.engine import Completion, Engine, TextChunk


@dataclass
class Failure:
    error: BaseException


END = object()


class Job:
    """Runs ``work(job)`` on a new thread; ``work`` calls ``job.put(item)`` for each result."""

    def __init__(self, work: Callable[[Job], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._work = work
        self._guard = threading.Lock()
        self._engine: Engine | None = None  # set while this job is generating
        self.cancelled = threading.Event()
        self.finished = False

    def start(self) -> Job:
        threading.Thread(target=self._run, name="hearth-server-request", daemon=True).start()
        return self

    def _run(self) -> None:
        try:
            self._work(self)
        except BaseException as exc:  # handed to the request, which answers it
            self.put(Failure(exc))
        finally:
            self.put(END)

    def put(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: the server stopped
            pass

    async def get(self) -> Any:
        item = await self._queue.get()
        if item is END:
            self.finished = True
        return item

    async def items(self) -> AsyncIterator[Any]:
        """Everything the work puts, until it ends (a ``Failure`` is raised as its error)."""
        while not self.finished:
            item = await self.get()
            if item is END:
                return
            if isinstance(item, Failure):
                raise item.error
            yield item

    def cancel(self) -> None:
        self.cancelled.set()
        with self._guard:
            if self._engine is not None:
                self._engine.cancel()

    def stream(self, engine: Engine, stream: Iterator[TextChunk | Completion]) -> Iterator[TextChunk | Completion]:
        """Pass ``stream`` through, stopping it (which cancels the answer) when the job is cancelled."""
        with self._guard:
            self._engine = engine
        try:
            for item in stream:
                if self.cancelled.is_set():
                    close = getattr(stream, "close", None)
                    if close is not None:
                        close()
                    return
                yield item
        finally:
            with self._guard:
                self._engine = None
