"""Scoring: the log-likelihood of continuations after a context (multiple-choice evaluation)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import llama_cpp as L

from core.engine.ops.base import RequestError
from core.engine.ops.tokens import prompt_tokens

if TYPE_CHECKING:
    from core.engine.worker import Worker


def op_score(w: Worker, request: dict[str, Any]) -> None:
    """Log-likelihood of each continuation after a context (multiple-choice scoring).

    The context and each continuation are tokenized together and split where the context's own
    tokens end (so a word that the tokenizer fuses across the boundary counts for the continuation);
    the shared context is evaluated once and reused from the cache.
    """
    w.require_generative()
    import numpy as np

    context = str(request["context"])
    ctx_tokens = prompt_tokens(w, context)
    n_vocab = int(L.llama_vocab_n_tokens(w.vocab))
    results = []
    for continuation in request["continuations"]:
        full = prompt_tokens(w, context + str(continuation))
        split = 0
        while split < min(len(ctx_tokens), len(full)) and ctx_tokens[split] == full[split]:
            split += 1
        split = max(1, split)
        if len(full) > w.n_ctx:
            raise RequestError("context_overflow", f"The text to score needs {len(full)} tokens, more than "
                               f"the {w.n_ctx}-token context.")
        if split >= len(full):
            results.append({"logprob": 0.0, "tokens": 0, "greedy": True})
            continue
        w.evaluate_prompt(full[:split])
        cont = full[split:]
        logprob, greedy = 0.0, True
        # The logits after the context's last token score the first continuation token; each
        # continuation token evaluated gives the logits for the next one.
        rows = [last_logits(w, n_vocab)]
        if len(cont) > 1:
            rows += decode_all_logits(w, cont[:-1], n_vocab)
        for token, logits in zip(cont, rows, strict=True):
            top = float(logits.max())
            logprob += float(logits[token]) - (top + float(np.log(np.exp(logits - top).sum())))
            greedy = greedy and int(logits.argmax()) == token
        results.append({"logprob": logprob, "tokens": len(cont), "greedy": greedy})
    w.conn.send({"type": "scores", "scores": results})


def last_logits(w: Worker, n_vocab: int) -> Any:
    import numpy as np

    ptr = L.llama_get_logits_ith(w.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)


def decode_all_logits(w: Worker, tokens: list[int], n_vocab: int) -> list[Any]:
    """Evaluate ``tokens`` after the cache, keeping the logits of every one of them."""
    import numpy as np

    out = []
    for start in range(0, len(tokens), w.n_batch):
        chunk = tokens[start : start + w.n_batch]
        w.fill_batch(chunk)
        for i in range(len(chunk)):
            w.batch.logits[i] = True
        if L.llama_decode(w.ctx, w.batch) != 0:
            w.reset_cache()
            raise RequestError("decode_failed", "llama.cpp could not evaluate the text to score.")
        w.kv_tokens.extend(chunk)
        for i in range(len(chunk)):
            ptr = L.llama_get_logits_ith(w.ctx, i)
            out.append(np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64))
    return out
