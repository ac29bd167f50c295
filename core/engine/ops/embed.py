"""Embeddings: one L2-normalised vector per text, pooled by the model or averaged over its tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import llama_cpp as L

from core.engine.ops.base import RequestError
from core.engine.ops.tokens import tokenize

if TYPE_CHECKING:
    from core.engine.worker import Worker

EMBED_STEP = 32  # tokens per evaluation when averaging a causal model's token vectors


def op_embed(w: Worker, request: dict[str, Any]) -> None:
    """One L2-normalised vector per text: the model's own pooling, or the mean of the token vectors."""
    w.require_model()
    if not w.embedding:
        raise RequestError(
            "not_embedding",
            "The model was loaded for chat: load it with embeddings on (LoadOptions(embedding=True)) to embed.",
        )
    import numpy as np

    L.llama_set_embeddings(w.ctx, True)
    n_embd = int(L.llama_model_n_embd(w.model))
    limit = min(w.n_ctx, w.n_batch) if w.model_pooling else w.n_ctx
    # llama.cpp pads the context to a multiple of 256, past what a model with learned positions (BERT)
    # has embeddings for: a longer text would abort the worker in ggml, so the training context caps it.
    limit = min(limit, w.n_ctx_train or limit)
    vectors, total = [], 0
    for index, text in enumerate(request["texts"]):
        tokens = tokenize(w, str(text), add_bos=True)
        if not tokens:
            raise RequestError("bad_request", f"Text {index + 1} gives no tokens to embed: give it some text.")
        if len(tokens) > limit:
            raise RequestError(
                "context_overflow",
                f"Text {index + 1} needs {len(tokens)} tokens, more than the {limit} this model embeds at "
                "once: split it into shorter pieces, or reload with a larger context.",
            )
        total += len(tokens)
        w.reset_cache()
        rows = []
        # Averaging here needs every token's output, and llama.cpp keeps logits beside each: small
        # steps keep that buffer small on a large vocabulary (a pooling model takes the text at once).
        step = w.n_batch if w.model_pooling else min(w.n_batch, EMBED_STEP)
        for start in range(0, len(tokens), step):
            chunk = tokens[start : start + step]
            w.fill_batch(chunk)
            for i in range(len(chunk)):
                w.batch.logits[i] = True  # every token's output: pooled, or averaged below
            if L.llama_decode(w.ctx, w.batch) != 0:
                w.reset_cache()
                raise RequestError("decode_failed", "llama.cpp could not evaluate the text to embed.")
            w.kv_tokens.extend(chunk)
            if not w.model_pooling:
                for i in range(len(chunk)):
                    ptr = L.llama_get_embeddings_ith(w.ctx, i)
                    rows.append(np.ctypeslib.as_array(ptr, shape=(n_embd,)).astype(np.float64))
        if w.model_pooling:
            ptr = L.llama_get_embeddings_seq(w.ctx, 0)
            if not ptr:
                raise RequestError("internal", "llama.cpp gave no pooled embedding for the text.")
            vector = np.ctypeslib.as_array(ptr, shape=(n_embd,)).astype(np.float64)
        else:
            vector = np.mean(rows, axis=0)
        norm = float(np.linalg.norm(vector))
        vectors.append((vector / norm if norm > 0 else vector).tolist())
    w.reset_cache()  # the cache holds an embedding pass, not a conversation
    w.conn.send({"type": "embeddings", "vectors": vectors, "prompt_tokens": total})
