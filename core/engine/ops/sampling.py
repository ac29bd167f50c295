"""Sampling: llama.cpp's sampler chain for SamplingParams, grammars, and OpenAI-style log-probabilities."""

from __future__ import annotations

import codecs
import ctypes
import os
from typing import TYPE_CHECKING, Any

import llama_cpp as L

from core.engine.ops.base import RequestError
from core.engine.ops.tokens import eog_ids, piece
from core.engine.params import SamplingParams

if TYPE_CHECKING:
    from core.engine.worker import Worker


def check_params(params: SamplingParams) -> None:
    """Refuse sampling settings the engine cannot honour, with what to change."""
    if params.logprobs and not 0 <= params.top_logprobs <= 20:
        raise RequestError("bad_request", f"top_logprobs must be between 0 and 20, not {params.top_logprobs}.")


def sampler_chain(w: Worker, params: SamplingParams) -> Any:
    """llama.cpp's sampler chain for ``params``, in llama.cpp's default order (the caller frees it)."""
    chain_params = L.llama_sampler_chain_default_params()
    chain_params.no_perf = True
    chain = L.llama_sampler_chain_init(chain_params)
    n_vocab = int(L.llama_vocab_n_tokens(w.vocab))
    if params.ignore_eos:
        ids = eog_ids(w)
        biases = (L.llama_logit_bias * len(ids))()
        for i, t in enumerate(ids):
            biases[i].token = t  # type: ignore[assignment]
            biases[i].bias = float("-inf")
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_logit_bias(n_vocab, len(ids), biases))
    repeat = params.repeat_penalty if params.repeat_last_n != 0 else 1.0
    last_n = w.n_ctx if params.repeat_last_n < 0 else params.repeat_last_n
    if params.presence_penalty or params.frequency_penalty:
        last_n = last_n or w.n_ctx  # OpenAI's penalties count the whole answer
    if repeat != 1.0 or params.presence_penalty or params.frequency_penalty:
        L.llama_sampler_chain_add(
            chain,
            L.llama_sampler_init_penalties(n_vocab, last_n, repeat, params.frequency_penalty, params.presence_penalty),
        )
    if params.temperature <= 0:
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        return chain
    if params.top_k > 0:
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(params.top_k))
    if 0 < params.top_p < 1:
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(params.top_p, 1))
    if params.min_p > 0:
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_min_p(params.min_p, 1))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(params.temperature))
    seed = params.seed if params.seed >= 0 else int.from_bytes(os.urandom(4), "little")
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed))
    return chain


def grammar_sampler(w: Worker, params: SamplingParams) -> Any:
    """The grammar sampler of ``params.grammar`` (None without one); a grammar that does not parse is refused."""
    if not params.grammar:
        return None
    w.log.lines.clear()
    grammar = L.llama_sampler_init_grammar(w.vocab, params.grammar.encode(), b"root")
    if not grammar:
        reason = w.log.reason() or "it does not parse"
        raise RequestError(
            "bad_request",
            f"The grammar is not valid GBNF ({reason}): fix it (its start rule must be named 'root').",
        )
    return grammar


class GrammarSampling:
    """Sampling under a grammar as llama.cpp's own ``common_sampler`` does it.

    The chain picks a token from the raw logits; the grammar checks that one token, and only when it
    refuses it are all the logits passed through the grammar and the token picked again. Checking the
    whole vocabulary against the grammar at every step costs several times the step itself on a
    large vocabulary (Gemma's 262k tokens).
    """

    def __init__(self, grammar: Any, chain: Any, n_vocab: int) -> None:
        import numpy as np

        self.grammar, self.chain, self.n_vocab = grammar, chain, n_vocab
        self.data = (L.llama_token_data * n_vocab)()
        self.view = np.ctypeslib.as_array(self.data)  # the same memory, as a structured array
        self.ids = np.arange(n_vocab, dtype=np.int32)
        self.candidates = L.llama_token_data_array(self.data, n_vocab, -1, False)
        self.one = (L.llama_token_data * 1)()
        self.single = L.llama_token_data_array(self.one, 1, -1, False)

    def _apply(self, logits: Any, *samplers: Any) -> int:
        self.view["id"] = self.ids
        self.view["logit"] = logits
        self.view["p"] = 0.0
        arr = self.candidates
        arr.data, arr.size, arr.selected, arr.sorted = self.data, self.n_vocab, -1, False
        for sampler in samplers:
            L.llama_sampler_apply(sampler, ctypes.byref(arr))
        return int(arr.data[arr.selected].id)

    def sample(self, ctx: Any) -> int:
        import numpy as np

        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), shape=(self.n_vocab,))
        token = self._apply(logits, self.chain)
        self.one[0].id, self.one[0].logit, self.one[0].p = token, float(logits[token]), 0.0  # type: ignore[assignment]
        self.single.data, self.single.size, self.single.selected, self.single.sorted = self.one, 1, -1, False
        L.llama_sampler_apply(self.grammar, ctypes.byref(self.single))
        if self.one[0].logit == float("-inf"):  # refused: pick among the tokens the grammar allows
            token = self._apply(logits, self.grammar, self.chain)
        L.llama_sampler_accept(self.grammar, token)
        L.llama_sampler_accept(self.chain, token)
        return token


def token_logprobs(w: Worker, token: int, text: bytes, top_n: int, n_vocab: int) -> dict[str, Any]:
    """OpenAI's logprobs entry for ``token``: the log-softmax of the raw logits it was sampled from."""
    import numpy as np

    logits = np.ctypeslib.as_array(L.llama_get_logits_ith(w.ctx, -1), shape=(n_vocab,)).astype(np.float64)
    top = float(logits.max())
    logsoftmax = logits - (top + float(np.log(np.exp(logits - top).sum())))
    entry: dict[str, Any] = {**token_entry(text, float(logsoftmax[token])), "top_logprobs": []}
    if top_n:
        best = np.argpartition(-logsoftmax, min(top_n, n_vocab) - 1)[:top_n]
        best = best[np.argsort(-logsoftmax[best], kind="stable")]
        entry["top_logprobs"] = [token_entry(piece(w, int(t)), float(logsoftmax[t])) for t in best]
    return entry


def token_entry(text: bytes, logprob: float) -> dict[str, Any]:
    return {"token": text.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(text)}


def tokens_within(entries: list[dict[str, Any]], n_chars: int) -> int:
    """How many of ``entries`` (token logprobs, in order) the first ``n_chars`` characters of their text hold."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    length = 0
    for i, entry in enumerate(entries):
        length += len(decoder.decode(bytes(entry["bytes"])))
        if length > n_chars:
            return i
    return len(entries)
