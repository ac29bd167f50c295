"""Small Qt-free types shared by long-running operations: progress reports and cancellation."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from core.errors import CancelledError


@dataclass(frozen=True)
class Progress:
    """One report from a long operation: ``done`` out of ``total`` units of ``stage``."""

    stage: str
    done: float = 0
    total: float | None = None
    message: str = ""

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, max(0.0, self.done / self.total))


ProgressCallback = Callable[[Progress], None]


class CancelToken:
    """Set from any thread to ask an operation to stop at its next check."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self, what: str = "The operation") -> None:
        if self._event.is_set():
            raise CancelledError(f"{what} was cancelled.")
