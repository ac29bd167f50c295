"""Generation: chat and completion requests, streamed to the client in small batches of text."""

from __future__ import annotations

import codecs
import time
from typing import TYPE_CHECKING, Any, Protocol

import llama_cpp as L

from core.engine.ops import vision
from core.engine.ops.base import RequestError
from core.engine.ops.drafting import check_draft_params, speculation_for
from core.engine.ops.sampling import (
    GrammarSampling,
    check_params,
    grammar_sampler,
    sampler_chain,
    token_logprobs,
    tokens_within,
)
from core.engine.ops.tokens import chat_prompt, piece, prompt_tokens, template_message
from core.engine.params import GenerationStats, SamplingParams

if TYPE_CHECKING:
    from core.engine.worker import Worker

class Prompt(Protocol):
    """What generation answers after: a prompt that brings the KV cache to itself (``evaluate``)."""

    n_tokens: int
    draftable: bool  # speculative drafting may be used after it (not after images)

    def evaluate(self, w: Worker, stats: GenerationStats) -> None:
        """Evaluate the prompt after what the cache keeps of it; set ``stats.cached_tokens`` (and image stats)."""
        ...


class TextPrompt:
    """A prompt of text tokens, evaluated in the worker's batches after the longest prefix the cache shares."""

    draftable = True

    def __init__(self, tokens: list[int]) -> None:
        self.tokens = tokens
        self.n_tokens = len(tokens)

    def evaluate(self, w: Worker, stats: GenerationStats) -> None:
        stats.cached_tokens = w.evaluate_prompt(self.tokens)


FLUSH_SECONDS = 0.03  # stream batching: send text at least this often while generating
FLUSH_TOKENS = 16


def op_chat(w: Worker, request: dict[str, Any]) -> None:
    w.require_generative()
    params = SamplingParams.from_dict(request["params"])
    check_params(params)
    check_draft_params(params)
    reserve = min(max(params.max_tokens, 1), max(w.n_ctx // 4, 1))
    messages = [template_message(m) for m in request["messages"]]
    if vision.has_images(messages):
        prompt, dropped = vision.image_chat_prompt(w, messages, reserve, request.get("tools") or None)
        try:
            generate(w, prompt, params, dropped, stop=w.fmt.stop + params.stop)
        finally:
            prompt.free()
        return
    tokens, dropped = chat_prompt(w, messages, reserve, request.get("tools") or None)
    generate(w, TextPrompt(tokens), params, dropped, stop=w.fmt.stop + params.stop)


def op_complete(w: Worker, request: dict[str, Any]) -> None:
    w.require_generative()
    params = SamplingParams.from_dict(request["params"])
    check_params(params)
    check_draft_params(params)
    tokens = prompt_tokens(w, request["prompt"])
    if len(tokens) >= w.n_ctx:
        raise RequestError(
            "context_overflow",
            f"The prompt needs {len(tokens)} tokens, more than the {w.n_ctx}-token context.",
        )
    generate(w, TextPrompt(tokens), params, 0, stop=params.stop)


def generate(w: Worker, prompt: Prompt, params: SamplingParams, dropped: int, stop: list[str]) -> None:
    """Answer after ``prompt``: stream ``chunk`` messages, then one ``done`` with the text and stats."""
    w.cancel.value = 0
    # Before any work: a request it refuses changes nothing. Drafts are text tokens: not after images.
    spec = speculation_for(w, params) if prompt.draftable else None
    stats = GenerationStats(prompt_tokens=prompt.n_tokens, n_ctx=w.n_ctx, dropped_messages=dropped)
    started = time.perf_counter()
    prompt.evaluate(w, stats)
    # GPU and RPC backends compute asynchronously (an RPC GRAPH_COMPUTE expects no answer): wait for the
    # prompt's work, so its time is not counted in the first token's.
    L.llama_synchronize(w.ctx)
    stats.prompt_seconds = time.perf_counter() - started
    grammar = grammar_sampler(w, params)
    chain = sampler_chain(w, params)
    constrained = GrammarSampling(grammar, chain, int(L.llama_vocab_n_tokens(w.vocab))) if grammar else None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = ""
    sent = 0
    pending_tokens = 0
    last_flush = time.perf_counter()
    gen_started = last_flush
    finish = "length"
    longest_stop = max((len(s) for s in stop), default=0)
    vocab, ctx = w.vocab, w.ctx
    w.fill_batch([0])  # sequence ids and flags for the one-token steps below
    batch = w.batch
    logprobs: list[dict[str, Any]] | None = [] if params.logprobs else None
    pending_logprobs: list[dict[str, Any]] = []
    top_n = max(0, min(int(params.top_logprobs), 20))
    n_vocab = int(L.llama_vocab_n_tokens(vocab))
    try:
        for _ in range(max(params.max_tokens, 0)):
            if w.cancel.value:
                finish = "cancelled"
                break
            token = spec.next_token() if spec else None
            if token is None:
                token = constrained.sample(ctx) if constrained else L.llama_sampler_sample(chain, ctx, -1)
            if not params.ignore_eos and L.llama_vocab_is_eog(vocab, token):
                finish = "stop"
                break
            stats.completion_tokens += 1
            text_bytes = piece(w, token)
            if logprobs is not None:
                entry = token_logprobs(w, token, text_bytes, top_n, n_vocab)
                logprobs.append(entry)
                pending_logprobs.append(entry)
            text += decoder.decode(text_bytes)
            if stats.completion_tokens == 1:
                stats.time_to_first_token = time.perf_counter() - started
            safe = len(text)
            if stop:
                window_start = max(0, sent - longest_stop)
                hit = min((i for i in (text.find(s, window_start) for s in stop) if i >= 0), default=-1)
                if hit >= 0:
                    text = text[:hit]
                    finish = "stop"
                    if logprobs is not None:  # the stop string's tokens are not part of the answer
                        keep = tokens_within(pending_logprobs, len(text) - sent)
                        del logprobs[len(logprobs) - len(pending_logprobs) + keep :]
                        pending_logprobs = pending_logprobs[:keep]
                    break
                safe = len(text) - partial_stop(text, stop)
            pending_tokens += 1
            now = time.perf_counter()
            if safe > sent and (stats.completion_tokens == 1 or pending_tokens >= FLUSH_TOKENS
                                or now - last_flush >= FLUSH_SECONDS):
                w.conn.send({"type": "chunk", "text": text[sent:safe], "n": pending_tokens,
                             **({"logprobs": pending_logprobs} if logprobs is not None else {})})
                sent, pending_tokens, last_flush = safe, 0, now
                pending_logprobs = []
            if spec and spec.in_cache():
                continue
            if stats.completion_tokens >= params.max_tokens:
                break  # the last token is not evaluated: nothing would read its logits (finish stays "length")
            if len(w.kv_tokens) >= w.n_ctx:
                finish = "context"
                break
            room = min(params.max_tokens - stats.completion_tokens, w.n_ctx - len(w.kv_tokens)) - 1
            if spec and spec.step(token, chain, room):
                continue
            batch.token[0] = token
            batch.pos[0] = len(w.kv_tokens) + w.pos_shift
            batch.n_tokens = 1
            batch.logits[0] = True
            if L.llama_decode(ctx, batch) != 0:
                finish = "context"
                break
            w.kv_tokens.append(token)
    finally:
        L.llama_sampler_free(chain)
        if grammar:
            L.llama_sampler_free(grammar)
    text += decoder.decode(b"", final=True)
    if len(text) > sent or pending_logprobs:
        w.conn.send({"type": "chunk", "text": text[sent:], "n": pending_tokens,
                     **({"logprobs": pending_logprobs} if logprobs is not None else {})})
    stats.generation_seconds = time.perf_counter() - gen_started
    stats.context_used = len(w.kv_tokens)
    if spec:
        stats.drafted_tokens, stats.accepted_tokens = spec.drafted, spec.accepted
    w.conn.send({"type": "done", "text": text, "finish_reason": finish, "stats": stats.__dict__,
                 "logprobs": logprobs})


def partial_stop(text: str, stops: list[str]) -> int:
    """Length of the longest end of ``text`` that could still grow into a stop string (held back)."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best
