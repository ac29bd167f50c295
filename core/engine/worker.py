"""The engine's worker process: it alone owns llama.cpp, the model and its KV cache.

It talks to ``core.engine.client.Engine`` over a ``multiprocessing`` pipe: requests are dicts with
an ``op``; answers are dicts with a ``type``. Generation uses llama.cpp's native sampler chain
(``llama_sampler_*``), so no per-token Python work touches the logits vector, and streams text
to the client in small batches. A native crash here kills only this process.
"""

from __future__ import annotations

import codecs
import ctypes
import json
import os
import signal
import time
import traceback
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import llama_cpp as L

from core.engine.backends import load_backends
from core.engine.llama_flags import use_extra_buffers
from core.engine.llama_log import LlamaLog
from core.engine.params import GenerationStats, LoadOptions, SamplingParams
from core.engine.templates import ChatFormat, choose_format, render
from core.errors import ContextOverflowError, HearthError, InvalidModelError

FLUSH_SECONDS = 0.03  # stream batching: send text at least this often while generating
FLUSH_TOKENS = 16
EMBED_STEP = 32  # tokens per evaluation when averaging a causal model's token vectors


class RequestError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Worker:
    def __init__(self, conn: Connection, cancel: Synchronized) -> None:  # type: ignore[type-arg]
        self.conn = conn
        self.cancel = cancel
        self.log = LlamaLog()  # llama.cpp prints nothing; its recent lines explain load failures
        load_backends()  # registers the CPU variant (and GPU backends) of a GGML_BACKEND_DL build
        self.model: Any = None
        self.ctx: Any = None
        self.vocab: Any = None
        self.mem: Any = None
        self.path = ""
        self.n_ctx = 0
        self.n_ctx_train = 0
        self.n_batch = 512
        self.kv_tokens: list[int] = []  # tokens whose keys/values are in the cache, in order
        self.fmt = ChatFormat("plain", "plain", None)
        self.bos_text = ""
        self.eos_text = ""
        self.adapters: dict[str, Any] = {}
        self.active_loras: list[tuple[str, float]] = []
        self.piece_buf = ctypes.create_string_buffer(256)
        self.batch: Any = None
        self._eog_ids: list[int] | None = None
        self.embedding = False  # the context computes embeddings (LoadOptions.embedding)
        self.model_pooling = False  # the model pools its embeddings itself (bert...); else the worker averages
        self.generative = True  # False for encoder-only models (bert): no chat, completion or scoring

    # -- loop ----------------------------------------------------------------------------------
    def serve(self) -> None:
        while True:
            try:
                request = self.conn.recv()
            except (EOFError, OSError):
                return
            op = request.get("op")
            try:
                if op == "shutdown":
                    self.unload()
                    self.conn.send({"type": "ok"})
                    return
                handler = getattr(self, f"op_{op}", None)
                if handler is None:
                    raise RequestError("bad_request", f"unknown engine request '{op}'")
                handler(request)
            except RequestError as exc:
                self.conn.send({"type": "error", "kind": exc.kind, "message": str(exc)})
            except HearthError as exc:  # a user-facing failure (an unsafe or broken chat template...)
                self.conn.send({"type": "error", "kind": _error_kind(exc), "message": str(exc)})
            except Exception as exc:  # a bug: the request fails, the worker keeps serving
                self._recover()
                log = _log_internal_error(op, exc)
                self.conn.send({
                    "type": "error", "kind": "internal",
                    "message": f"Internal error in the engine: {type(exc).__name__}: {exc}"
                               + (f" (details in {log})" if log else ""),
                })

    def _recover(self) -> None:
        """After a failed request: forget the cache (a generation may have stopped half-way through it)."""
        try:
            self._reset_cache()
        except Exception:
            self.kv_tokens = []

    # -- model ---------------------------------------------------------------------------------
    def unload(self) -> None:
        if self.batch is not None:
            L.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx is not None:
            L.llama_free(self.ctx)
            self.ctx = None
        for adapter in self.adapters.values():
            L.llama_adapter_lora_free(adapter)
        self.adapters = {}
        self.active_loras = []
        if self.model is not None:
            L.llama_model_free(self.model)
            self.model = None
        self.kv_tokens = []

    def op_unload(self, _request: dict[str, Any]) -> None:
        self.unload()
        self.conn.send({"type": "ok"})

    def op_load(self, request: dict[str, Any]) -> None:
        self.unload()
        opts = LoadOptions(**request["options"])
        path = request["path"]
        started = time.perf_counter()
        mparams = L.llama_model_default_params()
        mparams.n_gpu_layers = 999 if opts.n_gpu_layers < 0 else opts.n_gpu_layers
        mparams.use_mmap = opts.use_mmap
        mparams.use_extra_bufts = use_extra_buffers()
        self.log.lines.clear()
        reported = [-1]

        def on_progress(fraction: float, _user: Any) -> bool:
            # Called by llama.cpp on this thread while tensors load; a report every 2% at most.
            percent = int(fraction * 100)
            if percent >= reported[0] + 2 or (percent == 100 and reported[0] != 100):
                reported[0] = percent
                self.conn.send({"type": "load_progress", "fraction": min(1.0, float(fraction))})
            return True

        callback = L.llama_progress_callback(on_progress)  # kept alive by this frame during the load
        mparams.progress_callback = callback
        model = L.llama_model_load_from_file(path.encode(), mparams)
        if not model:
            reason = self.log.reason() or "llama.cpp could not read it"
            raise RequestError(
                "load_failed",
                f"Could not load {os.path.basename(path)}: {reason}. The file may be damaged or of an "
                "architecture this llama.cpp does not support; try another model.",
            )
        self.model = model
        self.vocab = L.llama_model_get_vocab(model)
        n_ctx_train = int(L.llama_model_n_ctx_train(model))
        arch = self._meta("general.architecture") or ""
        # Encoder-only models (bert and kin) attend both ways and have no language-model head.
        self.generative = bool(L.llama_model_has_decoder(model)) and self._meta(f"{arch}.attention.causal") != "false"
        pooling = self._meta(f"{arch}.pooling_type")
        self.model_pooling = pooling not in (None, "", "0")
        self.embedding = opts.embedding or not self.generative
        threads = opts.n_threads or _physical_cores()
        cparams = L.llama_context_default_params()
        cparams.n_ctx = min(opts.n_ctx, n_ctx_train) if opts.n_ctx > 0 else n_ctx_train
        n_batch = opts.n_batch
        if self.embedding and self.model_pooling:
            n_batch = max(n_batch, cparams.n_ctx)  # a pooled text must be evaluated in one batch
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        if self.embedding:
            cparams.embeddings = True
            if not self.model_pooling:
                cparams.pooling_type = L.LLAMA_POOLING_TYPE_NONE  # per-token vectors, averaged here
        cparams.n_threads = threads
        cparams.n_threads_batch = opts.n_threads_batch or threads
        # A full-size sliding-window cache lets the cache roll back to any shared prefix
        # (llama.cpp PR 13194); without it, reusing a prefix on SWA models would be wrong or impossible.
        cparams.swa_full = True
        if opts.flash_attn is not None:
            cparams.flash_attn_type = (
                L.LLAMA_FLASH_ATTN_TYPE_ENABLED if opts.flash_attn else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
        ctx = L.llama_init_from_model(model, cparams)
        if not ctx:
            reason = self.log.reason() or "not enough memory for the context"
            self.unload()
            raise RequestError(
                "load_failed",
                f"Could not create a context of {cparams.n_ctx} tokens: {reason}. Try a smaller context length.",
            )
        self.ctx = ctx
        self.batch = L.llama_batch_init(n_batch, 0, 1)
        self.mem = L.llama_get_memory(ctx)
        self.n_ctx = int(L.llama_n_ctx(ctx))
        self.n_ctx_train = n_ctx_train
        self.n_batch = n_batch
        self.path = path
        self._eog_ids = None
        self.bos_text = self._token_text(L.llama_vocab_bos(self.vocab))
        self.eos_text = self._token_text(L.llama_vocab_eos(self.vocab))
        template_ptr = L.llama_model_chat_template(model, None)
        template = template_ptr.decode("utf-8", errors="replace") if template_ptr else None
        self.fmt = choose_format(arch, template, self._is_special_token)
        self._apply_loras([(str(p), float(s)) for p, s in opts.loras])
        self.conn.send(
            {
                "type": "loaded",
                "status": {
                    "path": path,
                    "n_ctx": self.n_ctx,
                    "n_ctx_train": n_ctx_train,
                    "n_layer": int(L.llama_model_n_layer(model)),
                    "n_vocab": int(L.llama_vocab_n_tokens(self.vocab)),
                    "chat_format": self.fmt.name,
                    "chat_format_source": self.fmt.source,
                    "chat_format_description": self.fmt.description,
                    "load_seconds": time.perf_counter() - started,
                    "loras": self.active_loras,
                    "supports_tools": self.fmt.source == "gguf" and "tools" in (self.fmt.template or ""),
                    "embedding": self.embedding,
                    "n_embd": int(L.llama_model_n_embd(model)),
                    "has_decoder": self.generative,
                },
            }
        )

    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(256)
        n = L.llama_model_meta_val_str(self.model, key.encode(), buf, ctypes.sizeof(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None

    def _require_model(self) -> None:
        if self.ctx is None:
            raise RequestError("no_model", "No model is loaded: load one first.")

    def _require_generative(self) -> None:
        """Chat, completion and scoring need a model that writes text, with the context in its text mode."""
        self._require_model()
        if not self.generative:
            raise RequestError(
                "not_generative",
                f"{os.path.basename(self.path)} is an embedding model: it turns text into vectors and cannot "
                "write text. Use it for embeddings, and pick a chat model to chat.",
            )
        if self.embedding:
            L.llama_set_embeddings(self.ctx, False)

    # -- adapters ------------------------------------------------------------------------------
    def _load_adapter(self, path: str) -> Any:
        if path in self.adapters:
            return self.adapters[path]
        self.log.lines.clear()
        adapter = L.llama_adapter_lora_init(self.model, path.encode())
        if not adapter:
            reason = self.log.reason() or "llama.cpp could not read it"
            raise RequestError(
                "adapter_failed",
                f"Could not load the adapter {os.path.basename(path)}: {reason}. Check that it is a GGUF LoRA "
                "exported for this base model.",
            )
        self.adapters[path] = adapter
        return adapter

    def _apply_loras(self, loras: list[tuple[str, float]]) -> None:
        chosen = [(self._load_adapter(p), float(s)) for p, s in loras]
        n = len(chosen)
        arr = (L.llama_adapter_lora_p_ctypes * max(n, 1))(*[a for a, _ in chosen])
        scales = (ctypes.c_float * max(n, 1))(*[s for _, s in chosen])
        L.llama_set_adapters_lora(self.ctx, arr if n else None, n, scales if n else None)
        if loras != self.active_loras:
            self._reset_cache()  # cached keys/values were computed with other adapters
        self.active_loras = [(p, float(s)) for p, s in loras]

    def op_set_loras(self, request: dict[str, Any]) -> None:
        self._require_model()
        self._apply_loras([(str(p), float(s)) for p, s in request["loras"]])
        self.conn.send({"type": "ok", "loras": self.active_loras})

    # -- tokens --------------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        data = text.encode("utf-8")
        size = len(data) + 16
        buf = (L.llama_token * size)()
        n = L.llama_tokenize(self.vocab, data, len(data), buf, size, add_bos, True)
        if n < 0:
            size = -n
            buf = (L.llama_token * size)()
            n = L.llama_tokenize(self.vocab, data, len(data), buf, size, add_bos, True)
        return list(buf[:n])

    def _piece(self, token: int, special: bool = False) -> bytes:
        n = L.llama_token_to_piece(self.vocab, token, self.piece_buf, 256, 0, special)
        if n < 0:
            big = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self.vocab, token, big, -n, 0, special)
            return big.raw[:n]
        return self.piece_buf.raw[:n]

    def _token_text(self, token: int) -> str:
        return self._piece(token, special=True).decode("utf-8", errors="replace") if token >= 0 else ""

    def _is_special_token(self, text: str) -> bool:
        tokens = self.tokenize(text, add_bos=False)
        return len(tokens) == 1 and bool(L.llama_vocab_is_control(self.vocab, tokens[0]))

    def eog_ids(self) -> list[int]:
        if self._eog_ids is None:
            n = int(L.llama_vocab_n_tokens(self.vocab))
            self._eog_ids = [t for t in range(n) if L.llama_vocab_is_eog(self.vocab, t)]
        return self._eog_ids

    def op_tokenize(self, request: dict[str, Any]) -> None:
        self._require_model()
        self.conn.send({"type": "tokens", "tokens": self.tokenize(request["text"], request.get("add_bos", False))})

    # -- prompts -------------------------------------------------------------------------------
    def _prompt_tokens(self, text: str) -> list[int]:
        # A template that writes the BOS token itself must not get a second one from the tokenizer.
        add_bos = bool(L.llama_vocab_get_add_bos(self.vocab)) and not (
            self.bos_text and text.startswith(self.bos_text)
        )
        return self.tokenize(text, add_bos)

    def _chat_prompt(
        self, messages: list[dict[str, Any]], reserve: int, tools: list[dict[str, Any]] | None = None
    ) -> tuple[list[int], int]:
        """Prompt tokens for ``messages``, dropping the oldest turns until ``reserve`` tokens fit after it.

        Rule: the system prompt and the newest user message are always kept; older messages are
        dropped oldest first, a user message together with the answer that followed it.
        """
        system = [m for m in messages[:1] if m["role"] == "system"]
        turns = messages[len(system) :]
        dropped = 0
        while True:
            text = render(self.fmt, system + turns, bos_token=self.bos_text, eos_token=self.eos_text, tools=tools)
            tokens = self._prompt_tokens(text)
            if len(tokens) + reserve <= self.n_ctx:
                return tokens, dropped
            if len(turns) <= 1:
                raise RequestError(
                    "context_overflow",
                    f"The message needs {len(tokens)} tokens plus {reserve} for the answer, more than the "
                    f"{self.n_ctx}-token context: shorten it, lower max tokens, or reload with a larger context.",
                )
            cut = 1
            while cut < len(turns) - 1 and turns[cut]["role"] != "user":
                cut += 1
            dropped += cut
            turns = turns[cut:]

    # -- scoring -------------------------------------------------------------------------------
    def op_score(self, request: dict[str, Any]) -> None:
        """Log-likelihood of each continuation after a context (multiple-choice scoring).

        The context and each continuation are tokenized together and split where the context's own
        tokens end (so a word that the tokenizer fuses across the boundary counts for the continuation);
        the shared context is evaluated once and reused from the cache.
        """
        self._require_generative()
        import numpy as np

        context = str(request["context"])
        ctx_tokens = self._prompt_tokens(context)
        n_vocab = int(L.llama_vocab_n_tokens(self.vocab))
        results = []
        for continuation in request["continuations"]:
            full = self._prompt_tokens(context + str(continuation))
            split = 0
            while split < min(len(ctx_tokens), len(full)) and ctx_tokens[split] == full[split]:
                split += 1
            split = max(1, split)
            if len(full) > self.n_ctx:
                raise RequestError("context_overflow", f"The text to score needs {len(full)} tokens, more than "
                                   f"the {self.n_ctx}-token context.")
            if split >= len(full):
                results.append({"logprob": 0.0, "tokens": 0, "greedy": True})
                continue
            self._evaluate_prompt(full[:split])
            cont = full[split:]
            logprob, greedy = 0.0, True
            # The logits after the context's last token score the first continuation token; each
            # continuation token evaluated gives the logits for the next one.
            rows = [self._last_logits(n_vocab)]
            if len(cont) > 1:
                rows += self._decode_all_logits(cont[:-1], n_vocab)
            for token, logits in zip(cont, rows, strict=True):
                top = float(logits.max())
                logprob += float(logits[token]) - (top + float(np.log(np.exp(logits - top).sum())))
                greedy = greedy and int(logits.argmax()) == token
            results.append({"logprob": logprob, "tokens": len(cont), "greedy": greedy})
        self.conn.send({"type": "scores", "scores": results})

    def _last_logits(self, n_vocab: int) -> Any:
        import numpy as np

        ptr = L.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)

    def _decode_all_logits(self, tokens: list[int], n_vocab: int) -> list[Any]:
        """Evaluate ``tokens`` after the cache, keeping the logits of every one of them."""
        import numpy as np

        out = []
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            self._fill_batch(chunk)
            for i in range(len(chunk)):
                self.batch.logits[i] = True
            if L.llama_decode(self.ctx, self.batch) != 0:
                self._reset_cache()
                raise RequestError("decode_failed", "llama.cpp could not evaluate the text to score.")
            self.kv_tokens.extend(chunk)
            for i in range(len(chunk)):
                ptr = L.llama_get_logits_ith(self.ctx, i)
                out.append(np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64))
        return out

    # -- generation ----------------------------------------------------------------------------
    def _reset_cache(self) -> None:
        if self.mem is not None:
            L.llama_memory_clear(self.mem, True)
        self.kv_tokens = []

    def _fill_batch(self, tokens: list[int]) -> None:
        """Put ``tokens`` at the next positions of sequence 0; logits only for the last one."""
        batch, n_past = self.batch, len(self.kv_tokens)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = n_past + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = False
        batch.logits[len(tokens) - 1] = True
        batch.n_tokens = len(tokens)

    def _decode(self, tokens: list[int]) -> None:
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            self._fill_batch(chunk)
            rc = L.llama_decode(self.ctx, self.batch)
            if rc != 0:
                self._reset_cache()
                raise RequestError("decode_failed", f"llama.cpp could not evaluate the prompt (code {rc}).")
            self.kv_tokens.extend(chunk)

    def _evaluate_prompt(self, prompt: list[int]) -> int:
        """Bring the cache to ``prompt``, reusing the longest shared prefix; returns tokens reused."""
        common = 0
        limit = min(len(prompt), len(self.kv_tokens))
        while common < limit and prompt[common] == self.kv_tokens[common]:
            common += 1
        if common == len(prompt):
            common -= 1  # re-evaluate the last token: its logits start the answer
        if common < len(self.kv_tokens):
            if common <= 0 or not L.llama_memory_seq_rm(self.mem, 0, common, -1):
                self._reset_cache()
                common = 0
            else:
                del self.kv_tokens[common:]
        self._decode(prompt[common:])
        return common

    def _sampler(self, params: SamplingParams) -> Any:
        chain_params = L.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        chain = L.llama_sampler_chain_init(chain_params)
        n_vocab = int(L.llama_vocab_n_tokens(self.vocab))
        if params.ignore_eos:
            ids = self.eog_ids()
            biases = (L.llama_logit_bias * len(ids))()
            for i, t in enumerate(ids):
                biases[i].token = t  # type: ignore[assignment]
                biases[i].bias = float("-inf")
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_logit_bias(n_vocab, len(ids), biases))
        repeat = params.repeat_penalty if params.repeat_last_n != 0 else 1.0
        last_n = self.n_ctx if params.repeat_last_n < 0 else params.repeat_last_n
        if params.presence_penalty or params.frequency_penalty:
            last_n = last_n or self.n_ctx  # OpenAI's penalties count the whole answer
        if repeat != 1.0 or params.presence_penalty or params.frequency_penalty:
            L.llama_sampler_chain_add(
                chain,
                L.llama_sampler_init_penalties(
                    n_vocab, last_n, repeat, params.frequency_penalty, params.presence_penalty
                ),
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

    def _grammar(self, params: SamplingParams) -> Any:
        """The grammar sampler of ``params.grammar`` (None without one); a grammar that does not parse is refused."""
        if not params.grammar:
            return None
        self.log.lines.clear()
        grammar = L.llama_sampler_init_grammar(self.vocab, params.grammar.encode(), b"root")
        if not grammar:
            reason = self.log.reason() or "it does not parse"
            raise RequestError(
                "bad_request",
                f"The grammar is not valid GBNF ({reason}): fix it (its start rule must be named 'root').",
            )
        return grammar

    def op_chat(self, request: dict[str, Any]) -> None:
        self._require_generative()
        params = SamplingParams.from_dict(request["params"])
        _check_params(params)
        reserve = min(max(params.max_tokens, 1), max(self.n_ctx // 4, 1))
        messages = [_template_message(m) for m in request["messages"]]
        tokens, dropped = self._chat_prompt(messages, reserve, request.get("tools") or None)
        self._generate(tokens, params, dropped, stop=self.fmt.stop + params.stop)

    def op_complete(self, request: dict[str, Any]) -> None:
        self._require_generative()
        params = SamplingParams.from_dict(request["params"])
        _check_params(params)
        tokens = self._prompt_tokens(request["prompt"])
        if len(tokens) >= self.n_ctx:
            raise RequestError(
                "context_overflow",
                f"The prompt needs {len(tokens)} tokens, more than the {self.n_ctx}-token context.",
            )
        self._generate(tokens, params, 0, stop=params.stop)

    def _generate(self, prompt: list[int], params: SamplingParams, dropped: int, stop: list[str]) -> None:
        self.cancel.value = 0
        stats = GenerationStats(prompt_tokens=len(prompt), n_ctx=self.n_ctx, dropped_messages=dropped)
        started = time.perf_counter()
        stats.cached_tokens = self._evaluate_prompt(prompt)
        stats.prompt_seconds = time.perf_counter() - started
        grammar = self._grammar(params)
        chain = self._sampler(params)
        constrained = _GrammarSampling(grammar, chain, int(L.llama_vocab_n_tokens(self.vocab))) if grammar else None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = ""
        sent = 0
        pending_tokens = 0
        last_flush = time.perf_counter()
        gen_started = last_flush
        finish = "length"
        longest_stop = max((len(s) for s in stop), default=0)
        vocab, ctx = self.vocab, self.ctx
        self._fill_batch([0])  # sequence ids and flags for the one-token steps below
        batch = self.batch
        logprobs: list[dict[str, Any]] | None = [] if params.logprobs else None
        pending_logprobs: list[dict[str, Any]] = []
        top_n = max(0, min(int(params.top_logprobs), 20))
        n_vocab = int(L.llama_vocab_n_tokens(vocab))
        try:
            for _ in range(max(params.max_tokens, 0)):
                if self.cancel.value:
                    finish = "cancelled"
                    break
                token = constrained.sample(ctx) if constrained else L.llama_sampler_sample(chain, ctx, -1)
                if not params.ignore_eos and L.llama_vocab_is_eog(vocab, token):
                    finish = "stop"
                    break
                stats.completion_tokens += 1
                piece = self._piece(token)
                if logprobs is not None:
                    entry = self._token_logprobs(token, piece, top_n, n_vocab)
                    logprobs.append(entry)
                    pending_logprobs.append(entry)
                text += decoder.decode(piece)
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
                            keep = _tokens_within(pending_logprobs, len(text) - sent)
                            del logprobs[len(logprobs) - len(pending_logprobs) + keep :]
                            pending_logprobs = pending_logprobs[:keep]
                        break
                    safe = len(text) - _partial_stop(text, stop)
                pending_tokens += 1
                now = time.perf_counter()
                if safe > sent and (stats.completion_tokens == 1 or pending_tokens >= FLUSH_TOKENS
                                    or now - last_flush >= FLUSH_SECONDS):
                    self.conn.send({"type": "chunk", "text": text[sent:safe], "n": pending_tokens,
                                    **({"logprobs": pending_logprobs} if logprobs is not None else {})})
                    sent, pending_tokens, last_flush = safe, 0, now
                    pending_logprobs = []
                if len(self.kv_tokens) >= self.n_ctx:
                    finish = "context"
                    break
                batch.token[0] = token
                batch.pos[0] = len(self.kv_tokens)
                batch.n_tokens = 1
                batch.logits[0] = True
                if L.llama_decode(ctx, batch) != 0:
                    finish = "context"
                    break
                self.kv_tokens.append(token)
        finally:
            L.llama_sampler_free(chain)
            if grammar:
                L.llama_sampler_free(grammar)
        text += decoder.decode(b"", final=True)
        if len(text) > sent or pending_logprobs:
            self.conn.send({"type": "chunk", "text": text[sent:], "n": pending_tokens,
                            **({"logprobs": pending_logprobs} if logprobs is not None else {})})
        stats.generation_seconds = time.perf_counter() - gen_started
        stats.context_used = len(self.kv_tokens)
        self.conn.send({"type": "done", "text": text, "finish_reason": finish, "stats": stats.__dict__,
                        "logprobs": logprobs})

    def _token_logprobs(self, token: int, piece: bytes, top_n: int, n_vocab: int) -> dict[str, Any]:
        """OpenAI's logprobs entry for ``token``: the log-softmax of the raw logits it was sampled from."""
        import numpy as np

        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(self.ctx, -1), shape=(n_vocab,)).astype(np.float64)
        top = float(logits.max())
        logsoftmax = logits - (top + float(np.log(np.exp(logits - top).sum())))
        entry: dict[str, Any] = {**_token_entry(piece, float(logsoftmax[token])), "top_logprobs": []}
        if top_n:
            best = np.argpartition(-logsoftmax, min(top_n, n_vocab) - 1)[:top_n]
            best = best[np.argsort(-logsoftmax[best], kind="stable")]
            entry["top_logprobs"] = [_token_entry(self._piece(int(t)), float(logsoftmax[t])) for t in best]
        return entry

    # -- embeddings ----------------------------------------------------------------------------
    def op_embed(self, request: dict[str, Any]) -> None:
        """One L2-normalised vector per text: the model's own pooling, or the mean of the token vectors."""
        self._require_model()
        if not self.embedding:
            raise RequestError(
                "not_embedding",
                "The model was loaded for chat: load it with embeddings on (LoadOptions(embedding=True)) to embed.",
            )
        import numpy as np

        L.llama_set_embeddings(self.ctx, True)
        n_embd = int(L.llama_model_n_embd(self.model))
        limit = min(self.n_ctx, self.n_batch) if self.model_pooling else self.n_ctx
        # llama.cpp pads the context to a multiple of 256, past what a model with learned positions (BERT)
        # has embeddings for: a longer text would abort the worker in ggml, so the training context caps it.
        limit = min(limit, self.n_ctx_train or limit)
        vectors, total = [], 0
        for index, text in enumerate(request["texts"]):
            tokens = self.tokenize(str(text), add_bos=True)
            if not tokens:
                raise RequestError("bad_request", f"Text {index + 1} gives no tokens to embed: give it some text.")
            if len(tokens) > limit:
                raise RequestError(
                    "context_overflow",
                    f"Text {index + 1} needs {len(tokens)} tokens, more than the {limit} this model embeds at "
                    "once: split it into shorter pieces, or reload with a larger context.",
                )
            total += len(tokens)
            self._reset_cache()
            rows = []
            # Averaging here needs every token's output, and llama.cpp keeps logits beside each: small
            # steps keep that buffer small on a large vocabulary (a pooling model takes the text at once).
            step = self.n_batch if self.model_pooling else min(self.n_batch, EMBED_STEP)
            for start in range(0, len(tokens), step):
                chunk = tokens[start : start + step]
                self._fill_batch(chunk)
                for i in range(len(chunk)):
                    self.batch.logits[i] = True  # every token's output: pooled, or averaged below
                if L.llama_decode(self.ctx, self.batch) != 0:
                    self._reset_cache()
                    raise RequestError("decode_failed", "llama.cpp could not evaluate the text to embed.")
                self.kv_tokens.extend(chunk)
                if not self.model_pooling:
                    for i in range(len(chunk)):
                        ptr = L.llama_get_embeddings_ith(self.ctx, i)
                        rows.append(np.ctypeslib.as_array(ptr, shape=(n_embd,)).astype(np.float64))
            if self.model_pooling:
                ptr = L.llama_get_embeddings_seq(self.ctx, 0)
                if not ptr:
                    raise RequestError("internal", "llama.cpp gave no pooled embedding for the text.")
                vector = np.ctypeslib.as_array(ptr, shape=(n_embd,)).astype(np.float64)
            else:
                vector = np.mean(rows, axis=0)
            norm = float(np.linalg.norm(vector))
            vectors.append((vector / norm if norm > 0 else vector).tolist())
        self._reset_cache()  # the cache holds an embedding pass, not a conversation
        self.conn.send({"type": "embeddings", "vectors": vectors, "prompt_tokens": total})


class _GrammarSampling:
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


def _check_params(params: SamplingParams) -> None:
    if params.logprobs and not 0 <= params.top_logprobs <= 20:
        raise RequestError("bad_request", f"top_logprobs must be between 0 and 20, not {params.top_logprobs}.")


def _token_entry(piece: bytes, logprob: float) -> dict[str, Any]:
    return {"token": piece.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(piece)}


def _tokens_within(entries: list[dict[str, Any]], n_chars: int) -> int:
    """How many of ``entries`` (token logprobs, in order) the first ``n_chars`` characters of their text hold."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    length = 0
    for i, entry in enumerate(entries):
        length += len(decoder.decode(bytes(entry["bytes"])))
        if length > n_chars:
            return i
    return len(entries)


def _template_message(message: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-style message as chat templates read it: tool-call arguments as a dict, not JSON text."""
    calls = message.get("tool_calls")
    if not calls:
        return message
    fixed = []
    for call in calls:
        call = dict(call)
        function = call.get("function")
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            try:
                arguments = json.loads(function["arguments"] or "{}")
            except json.JSONDecodeError:
                arguments = function["arguments"]  # not JSON: the template gets the text as it is
            call["function"] = {**function, "arguments": arguments}
        fixed.append(call)
    return {**message, "tool_calls": fixed}


def _error_kind(exc: HearthError) -> str:
    if isinstance(exc, ContextOverflowError):
        return "context_overflow"
    if isinstance(exc, InvalidModelError):
        return "load_failed"
    return "engine"


def _log_internal_error(op: object, exc: BaseException) -> str:
    """Write the traceback of an unexpected failure to the engine's log file; returns its path ('' if none)."""
    try:
        from core.paths import get_paths

        logs = get_paths().logs
        logs.mkdir(parents=True, exist_ok=True)
        path = logs / "engine.log"
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} request '{op}' failed\n")
            handle.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return str(path)
    except OSError:
        return ""


def _partial_stop(text: str, stops: list[str]) -> int:
    """Length of the longest end of ``text`` that could still grow into a stop string (held back)."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


def _physical_cores() -> int:
    try:
        import psutil

        return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except ImportError:
        return max(1, os.cpu_count() or 1)


def main(conn: Connection, cancel: Synchronized) -> None:  # type: ignore[type-arg]
    """Entry point of the worker process."""
    # Ctrl-C in a terminal reaches the whole process group: the client decides what it means
    # (the CLI cancels the answer), so the worker must not die of it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        worker = Worker(conn, cancel)
    except Exception as exc:  # the client reports it; nothing else can
        conn.send({"type": "error", "kind": "start_failed", "message": f"The engine could not start: {exc}"})
        return
    conn.send({"type": "ready", "pid": os.getpid(), "system_info": L.llama_print_system_info().decode()})
    worker.serve()
