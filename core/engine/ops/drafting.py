"""Speculative decoding inside generation: draft a few tokens cheaply, verify them in one batch.

A drafter proposes the next tokens; the model evaluates [last token + draft] in one ``llama_decode``
with logits at every position, and the request's own sampler chain samples each position in turn
(``llama_sampler_sample(chain, ctx, i)``). Drafted tokens are accepted while they equal what was
sampled; the first sample that differs is taken instead and ends the step, and the cache is rolled
back past the accepted tokens (``llama_memory_seq_rm``). Each output token is therefore sampled by
the same chain from the model's logits for the same context as without drafting, so sampling keeps
its distribution and greedy output is the same up to rounding: llama.cpp computes a batch of
positions with other kernels than one position at a time (on x86 CPUs, from 4 positions on, a
logit can move by ~0.5), which can tip a near-tie. This is the scheme of llama.cpp's
``common/speculative.cpp`` and ``examples/speculative-simple``.

Two drafters: prompt lookup (the tokens that followed the latest earlier occurrence of the
conversation's last n-gram, no second model; the idea of llama.cpp's ``common/ngram-map`` and
llama-cpp-python's ``LlamaPromptLookupDecoding``) and a draft model (a second, small GGUF with the
same vocabulary, loaded beside the main model, drafting greedily).
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

import llama_cpp as L

from core.engine.ops.base import RequestError, fill_batch, rewind_to_prefix
from core.engine.params import DRAFT_MODES, SamplingParams

if TYPE_CHECKING:
    from core.engine.worker import Worker

NGRAM_SIZES = (4, 3)  # n-gram lengths prompt lookup matches, longest first (a 2-gram predicts poorly)
# Shorter drafts are not verified: on a CPU a batch of 2 positions costs about 2.2 plain steps and one of
# 3 about 2.7 (the starter model, whose output layer over 262k tokens runs once per position).
DRAFT_MIN = 3
VOCAB_SIZE_SLACK = 128  # llama.cpp's SPEC_VOCAB_MAX_SIZE_DIFFERENCE: padded vocabularies still match
VOCAB_CHECK_START = 5  # llama.cpp's SPEC_VOCAB_CHECK_START_TOKEN_ID: the first ids are control tokens
VOCAB_SAMPLE = 4096  # token texts compared (evenly spread over the shared ids)
# Pacing: verifying a draft costs more than one plain step (on a CPU, the output layer runs once per
# position), so drafting pays only when enough of it is accepted. Seconds per token of drafting steps
# and of plain steps are kept as decaying averages; while drafting costs more, it pauses for a number
# of tokens that doubles with each loss in a row (free chat), and is back at full pace after a win.
PACE_DECAY = 0.8
PAUSE_MIN, PAUSE_MAX = 8, 256


class Drafter(Protocol):
    def draft(self, history: list[int], limit: int) -> list[int]:
        """Up to ``limit`` tokens likely to follow ``history`` (may be empty)."""
        ...


class LookupDrafter:
    """Prompt lookup: continue the last n-gram as it went on at its latest earlier occurrence.

    An index maps each n-gram of the history to the position right after its latest occurrence and
    grows with the history, so a draft costs a few dict look-ups, not a scan of the conversation.
    """

    def __init__(self, sizes: tuple[int, ...] = NGRAM_SIZES) -> None:
        self.sizes = sizes
        self.follower: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in sizes}
        self.indexed = 1  # positions below this have been registered as followers

    def draft(self, history: list[int], limit: int) -> list[int]:
        for p in range(self.indexed, len(history)):
            for n in self.sizes:
                if p >= n:
                    self.follower[n][tuple(history[p - n : p])] = p
        self.indexed = max(self.indexed, len(history))
        for n in self.sizes:
            if len(history) > n:
                start = self.follower[n].get(tuple(history[-n:]))
                if start is not None:
                    return history[start : start + limit]
        return []


class DraftModel:
    """A second, small model beside the main one that drafts greedily (``LoadOptions.draft_model``).

    It keeps its own context and cache, brought to the conversation's tokens before each draft with
    the longest shared prefix reused, as the main context is.
    """

    def __init__(self, path: str, main_vocab: Any, *, n_ctx: int, n_batch: int, n_threads: int,
                 n_threads_batch: int, n_gpu_layers: int, flash_attn: bool | None, log: Any) -> None:
        self.path = path
        self.model: Any = None
        self.ctx: Any = None
        self.batch: Any = None
        self.greedy: Any = None
        mparams = L.llama_model_default_params()
        mparams.n_gpu_layers = 999 if n_gpu_layers < 0 else n_gpu_layers
        log.lines.clear()
        self.model = L.llama_model_load_from_file(path.encode(), mparams)
        name = os.path.basename(path)
        if not self.model:
            reason = log.reason() or "llama.cpp could not read it"
            raise RequestError("load_failed", f"Could not load the draft model {name}: {reason}. "
                                              "Pick another draft model, or turn drafting off.")
        self.vocab = L.llama_model_get_vocab(self.model)
        try:
            check_compatible(main_vocab, self.vocab, name)
            self.n_vocab_main = int(L.llama_vocab_n_tokens(main_vocab))
            cparams = L.llama_context_default_params()
            cparams.n_ctx = min(n_ctx, int(L.llama_model_n_ctx_train(self.model)))
            cparams.n_batch = cparams.n_ubatch = n_batch
            cparams.n_threads = n_threads
            cparams.n_threads_batch = n_threads_batch
            cparams.swa_full = True  # roll back to any shared prefix, as the main context does
            if flash_attn is not None:
                cparams.flash_attn_type = (
                    L.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
                )
            self.ctx = L.llama_init_from_model(self.model, cparams)
            if not self.ctx:
                reason = log.reason() or "not enough memory for its context"
                raise RequestError("load_failed", f"Could not create a context for the draft model {name}: "
                                                  f"{reason}. Try a smaller context length, or turn drafting off.")
        except BaseException:
            self.free()
            raise
        self.mem = L.llama_get_memory(self.ctx)
        self.n_ctx = int(L.llama_n_ctx(self.ctx))
        self.n_batch = n_batch
        self.batch = L.llama_batch_init(n_batch, 0, 1)
        chain_params = L.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self.greedy = L.llama_sampler_chain_init(chain_params)
        L.llama_sampler_chain_add(self.greedy, L.llama_sampler_init_greedy())
        self.kv_tokens: list[int] = []

    def free(self) -> None:
        if self.greedy is not None:
            L.llama_sampler_free(self.greedy)
            self.greedy = None
        if self.batch is not None:
            L.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx is not None:
            L.llama_free(self.ctx)
            self.ctx = None
        if self.model is not None:
            L.llama_model_free(self.model)
            self.model = None
        self.kv_tokens = []

    def _decode(self, tokens: list[int]) -> bool:
        batch = self.batch
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            fill_batch(batch, chunk, len(self.kv_tokens))
            if L.llama_decode(self.ctx, batch) != 0:
                L.llama_memory_clear(self.mem, True)
                self.kv_tokens = []
                return False
            self.kv_tokens.extend(chunk)
        return True

    def draft(self, history: list[int], limit: int) -> list[int]:
        limit = min(limit, self.n_ctx - len(history))
        if limit <= 0 or not history:
            return []
        common = rewind_to_prefix(self.mem, self.kv_tokens, history)
        if not self._decode(history[common:]):
            return []
        out: list[int] = []
        while True:
            token = int(L.llama_sampler_sample(self.greedy, self.ctx, -1))
            if token >= self.n_vocab_main:  # a padded id the main model does not have
                break
            out.append(token)
            if len(out) >= limit or L.llama_vocab_is_eog(self.vocab, token) or not self._decode([token]):
                break
        return out


def check_compatible(main_vocab: Any, draft_vocab: Any, name: str) -> None:
    """Refuse a draft model whose tokens mean something else (llama.cpp's ``common_speculative_are_compatible``)."""
    fix = "pick a draft model of the same family (the same tokenizer), or turn drafting off."
    if L.llama_vocab_type(main_vocab) != L.llama_vocab_type(draft_vocab):
        raise RequestError("load_failed", f"The draft model {name} uses another kind of tokenizer: {fix}")
    n_main, n_draft = int(L.llama_vocab_n_tokens(main_vocab)), int(L.llama_vocab_n_tokens(draft_vocab))
    if abs(n_main - n_draft) > VOCAB_SIZE_SLACK:
        raise RequestError("load_failed", f"The draft model {name} has a different vocabulary ({n_draft:,} tokens, "
                                          f"the model {n_main:,}): {fix}")
    for getter, what in ((L.llama_vocab_bos, "start"), (L.llama_vocab_eos, "end")):
        if getter(main_vocab) != getter(draft_vocab):
            raise RequestError("load_failed", f"The draft model {name} has a different {what}-of-text token: {fix}")
    shared = min(n_main, n_draft)
    step = max(1, (shared - VOCAB_CHECK_START) // VOCAB_SAMPLE)
    ids = [*range(VOCAB_CHECK_START, shared, step), shared - 1]
    for token in ids:
        ours, theirs = L.llama_vocab_get_text(main_vocab, token), L.llama_vocab_get_text(draft_vocab, token)
        if ours != theirs:
            shown = (theirs or b"").decode("utf-8", errors="replace")[:20]
            mine = (ours or b"").decode("utf-8", errors="replace")[:20]
            raise RequestError("load_failed", f"The draft model {name} has a different vocabulary (token {token} is "
                                              f"{shown!r} there and {mine!r} in the model): {fix}")


class Speculation:
    """Drafting during one answer: the tokens already sampled by a verification and not yet handed out."""

    def __init__(self, w: Worker, drafter: Drafter, draft_max: int) -> None:
        self.w, self.drafter, self.draft_max = w, drafter, draft_max
        self.queue: deque[int] = deque()  # sampled by the last verification, in order
        self.ahead = 0  # how many of the queue's first tokens are in the cache already (accepted drafts)
        self.drafted = 0
        self.accepted = 0
        self.costs = {False: [0.0, 0.0], True: [0.0, 0.0]}  # drafted? -> decayed [seconds, tokens]
        self.mark: float | None = None  # when the last step began
        self.last_step = (False, 1)  # (drafted, tokens it gave) of the step that began at ``mark``
        self.pause = 0  # steps left without drafting
        self.next_pause = PAUSE_MIN

    def next_token(self) -> int | None:
        return self.queue.popleft() if self.queue else None

    def in_cache(self) -> bool:
        """Whether the token just handed out is an accepted draft token (no decode needed)."""
        if self.ahead:
            self.ahead -= 1
            return True
        return False

    def step(self, token: int, chain: Any, room: int) -> bool:
        """Decode ``token`` with a draft after it and sample the positions; False: no draft, decode it plainly.

        ``room``: the most tokens a draft may hold (answer length and context left).
        """
        w = self.w
        now = time.perf_counter()
        if self.mark is not None:
            self._pace(now - self.mark)
        self.mark, self.last_step = now, (False, 1)
        if self.pause:
            self.pause -= 1
            return False
        draft = self.drafter.draft([*w.kv_tokens, token], min(self.draft_max, room)) if room > 0 else []
        if len(draft) < DRAFT_MIN:
            return False
        seq = [token, *draft]
        n_past = len(w.kv_tokens)
        w.fill_batch(seq)
        for i in range(len(seq)):
            w.batch.logits[i] = True
        if L.llama_decode(w.ctx, w.batch) != 0:
            return False  # no room for the draft: the plain step decides (it ends the answer if it fails too)
        samples = []
        for i in range(len(seq)):
            sampled = int(L.llama_sampler_sample(chain, w.ctx, i))
            samples.append(sampled)
            if i == len(draft) or sampled != draft[i]:
                break
        accepted = len(samples) - 1
        self.drafted += len(draft)
        self.accepted += accepted
        if accepted < len(draft) and not L.llama_memory_seq_rm(w.mem, 0, n_past + 1 + accepted, -1):
            # This cache cannot drop a tail (recurrent models): rebuild it and stop drafting.
            kept = [*w.kv_tokens, *seq[: 1 + accepted]]
            w.reset_cache()
            w.decode(kept)
            self.drafter = _NoDrafter()
        else:
            w.kv_tokens.extend(seq[: 1 + accepted])
        self.queue.extend(samples)
        self.ahead = accepted
        self.last_step = (True, len(samples))
        return True

    def _pace(self, seconds: float) -> None:
        """Account the step that just ended (it took ``seconds``, its tokens handed out included)."""
        drafted, tokens = self.last_step
        totals = self.costs[drafted]
        totals[0] = totals[0] * PACE_DECAY + seconds
        totals[1] = totals[1] * PACE_DECAY + tokens
        if not drafted:
            return
        plain_seconds, plain_tokens = self.costs[False]
        if not plain_tokens:
            self.pause = 1  # one plain step to compare with
        elif totals[0] / totals[1] > plain_seconds / plain_tokens:
            self.pause, self.next_pause = self.next_pause, min(self.next_pause * 2, PAUSE_MAX)
        else:
            self.next_pause = PAUSE_MIN


class _NoDrafter:
    def draft(self, history: list[int], limit: int) -> list[int]:
        return []


def check_draft_params(params: SamplingParams) -> None:
    if params.draft not in DRAFT_MODES:
        raise RequestError("bad_request", f"draft must be one of {', '.join(DRAFT_MODES)}, not {params.draft!r}.")
    if not 1 <= params.draft_max <= 64:
        raise RequestError("bad_request", f"draft_max must be between 1 and 64 tokens, not {params.draft_max}.")


def speculation_for(w: Worker, params: SamplingParams) -> Speculation | None:
    """The drafting this answer uses, or None: drafting off, with a grammar or log-probabilities, or "model"
    with no draft model loaded."""
    if params.draft == "off" or params.grammar or params.logprobs:
        return None
    draft_max = min(params.draft_max, w.n_batch - 1)
    if params.draft == "lookup":
        return Speculation(w, LookupDrafter(), draft_max)
    if w.draft_model is None:
        # Drafting is a matter of speed, never a reason to fail an answer: a model loaded without its draft
        # model (the API server reusing what the window loaded) answers plainly, and its stats say so.
        return None
    return Speculation(w, w.draft_model, draft_max)
