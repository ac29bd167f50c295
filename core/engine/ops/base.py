"""What every op module shares: the error a request fails with, and filling a llama.cpp batch."""

from __future__ import annotations

from typing import Any


class RequestError(Exception):
    """A request the worker refuses or cannot do; ``kind`` tells the client which error to raise."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def fill_batch(batch: Any, tokens: list[int], n_past: int) -> None:
    """Put ``tokens`` at positions ``n_past``... of sequence 0 of ``batch``; logits only for the last one."""
    for i, token in enumerate(tokens):
        batch.token[i] = token
        batch.pos[i] = n_past + i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = False
    batch.logits[len(tokens) - 1] = True
    batch.n_tokens = len(tokens)
