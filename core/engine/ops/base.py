"""What every op module shares: the error a request fails with."""

from __future__ import annotations


class RequestError(Exception):
    """A request the worker refuses or cannot do; ``kind`` tells the client which error to raise."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
