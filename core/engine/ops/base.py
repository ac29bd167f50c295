"""What every op module shares: the error a request fails with, and filling a llama.cpp batch."""

from __future__ import annotations

from typing import Any

import llama_cpp as L


class RequestError(Exception):
    """A request the worker refuses or cannot do; ``kind`` tells the client which error to raise."""

    def __init__(self, kind: str, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.reason = reason  # the cause in llama.cpp's words, where the message wraps it in advice


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


def rewind_to_prefix(mem: Any, kv_tokens: list[int], tokens: list[int]) -> int:
    """Keep the longest start of the cache that ``tokens`` share, leaving at least their last token to evaluate
    (its logits start what comes next); returns how many tokens are kept.

    The rest is dropped from llama.cpp's memory (sequence 0) and from ``kv_tokens``, in place; where the
    memory cannot be cut there, both are cleared.
    """
    common = 0
    limit = min(len(tokens), len(kv_tokens))
    while common < limit and tokens[common] == kv_tokens[common]:
        common += 1
    if common == len(tokens):
        common -= 1
    if common < len(kv_tokens):
        if common <= 0 or not L.llama_memory_seq_rm(mem, 0, common, -1):
            L.llama_memory_clear(mem, True)
            common = 0
        del kv_tokens[common:]
    return common
