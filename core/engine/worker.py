"""The engine's worker process: it alone owns llama.cpp, the model and its KV cache.

It talks to ``core.engine.client.Engine`` over a ``multiprocessing`` pipe: requests are dicts with
an ``op``; answers are dicts with a ``type``. This module holds the model, the context and the cache
(loading, and the cache primitives every op uses); each family of requests lives in its own module
under ``core.engine.ops`` (tokens, sampling, generation, scoring, embeddings, adapters), and ``OPS``
maps a request's ``op`` to it, as llama.cpp's server keeps its task kinds apart. A native crash here
kills only this process.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import llama_cpp as L

from core.engine.backends import load_backends
from core.engine.llama_flags import use_extra_buffers
from core.engine.llama_log import LlamaLog
from core.engine.ops import adapters, embed, generate, rpc_split, score, tokens, vision
from core.engine.ops.adapters import apply_loras
from core.engine.ops.base import RequestError, fill_batch, rewind_to_prefix
from core.engine.ops.drafting import DraftModel
from core.engine.ops.placement import gpu_offload
from core.engine.ops.tokens import is_special_token, token_text
from core.engine.params import LoadOptions
from core.engine.templates import ChatFormat, choose_format
from core.errors import ContextOverflowError, HearthError, InvalidModelError


class Worker:
    """The state one worker process owns: the model, its context, the KV cache and the adapters."""

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
        self.kv_tokens: list[int] = []  # tokens whose keys/values are in the cache, in order (images: ops.vision)
        self.kv_images: list[tuple[int, int, int]] = []  # images in the cache: (first cell, cells, positions)
        self.pos_shift = 0  # positions minus cells of those images (M-RoPE models give an image fewer positions)
        self.mtmd: Any = None  # the vision projector's mtmd context (LoadOptions.mmproj), ops.vision
        self.mmproj: str | None = None
        self.fmt = ChatFormat("plain", "plain", None)
        self.bos_text = ""
        self.eos_text = ""
        self.adapters: dict[str, Any] = {}
        self.active_loras: list[tuple[str, float]] = []
        self.piece_buf = ctypes.create_string_buffer(256)
        self.batch: Any = None
        self.eog_cache: list[int] | None = None  # the vocabulary's end-of-generation ids (ops.tokens.eog_ids)
        self.embedding = False  # the context computes embeddings (LoadOptions.embedding)
        self.model_pooling = False  # the model pools its embeddings itself (bert...); else the worker averages
        self.generative = True  # False for encoder-only models (bert): no chat, completion or scoring
        self.draft_model: DraftModel | None = None  # LoadOptions.draft_model, drafting for SamplingParams.draft

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
                handler = OPS.get(op) if isinstance(op, str) else None
                if handler is None:
                    raise RequestError("bad_request", f"unknown engine request '{op}'")
                handler(self, request)
            except RequestError as exc:
                self.conn.send({"type": "error", "kind": exc.kind, "message": str(exc), "reason": exc.reason})
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
            self.reset_cache()
        except Exception:
            self.kv_tokens = []

    # -- model ---------------------------------------------------------------------------------
    def unload(self) -> None:
        if self.draft_model is not None:
            self.draft_model.free()
            self.draft_model = None
        vision.free_projector(self)
        if self.batch is not None:
            L.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx is not None:
            L.llama_free(self.ctx)
            self.ctx = None
        adapters.free_adapters(self)
        if self.model is not None:
            L.llama_model_free(self.model)
            self.model = None
        self.kv_tokens, self.kv_images, self.pos_shift = [], [], 0

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
        # Other machines (LoadOptions.rpc_workers): their devices, the split and the offload.
        _arrays, split = rpc_split.configure(mparams, opts, path)
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
                reason,
            )
        self.model = model
        self.vocab = L.llama_model_get_vocab(model)
        n_ctx_train = int(L.llama_model_n_ctx_train(model))
        arch = self.meta("general.architecture") or ""
        # Encoder-only models (bert and kin) attend both ways and have no language-model head.
        self.generative = bool(L.llama_model_has_decoder(model)) and self.meta(f"{arch}.attention.causal") != "false"
        pooling = self.meta(f"{arch}.pooling_type")
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
        self.eog_cache = None
        self.bos_text = token_text(self, L.llama_vocab_bos(self.vocab))
        self.eos_text = token_text(self, L.llama_vocab_eos(self.vocab))
        template_ptr = L.llama_model_chat_template(model, None)
        template = template_ptr.decode("utf-8", errors="replace") if template_ptr else None
        self.fmt = choose_format(arch, template, lambda text: is_special_token(self, text))
        apply_loras(self, [(str(p), float(s)) for p, s in opts.loras])
        if opts.draft_model:
            try:
                self.draft_model = DraftModel(
                    str(opts.draft_model), self.vocab, n_ctx=self.n_ctx, n_batch=n_batch, n_threads=threads,
                    n_threads_batch=cparams.n_threads_batch, n_gpu_layers=opts.n_gpu_layers,
                    flash_attn=opts.flash_attn, log=self.log,
                )
            except RequestError:
                self.unload()  # all or nothing: the caller asked for both models
                raise
        if opts.mmproj:
            try:
                vision.load_projector(self, str(opts.mmproj), n_threads=threads, use_gpu=opts.n_gpu_layers != 0,
                                      flash_attn=opts.flash_attn)
            except (RequestError, HearthError):
                self.unload()  # all or nothing, as with the draft model
                raise
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
                    "draft_model": self.draft_model.path if self.draft_model else None,
                    "vision": self.mtmd is not None,
                    "mmproj": self.mmproj,
                    "split": split,
                    "offload": [] if split else gpu_offload(int(L.llama_model_n_layer(model)), mparams.n_gpu_layers),
                },
            }
        )

    def meta(self, key: str) -> str | None:
        """A GGUF metadata value of the loaded model, as text (None when the model lacks it)."""
        buf = ctypes.create_string_buffer(256)
        n = L.llama_model_meta_val_str(self.model, key.encode(), buf, ctypes.sizeof(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None

    def require_model(self) -> None:
        if self.ctx is None:
            raise RequestError("no_model", "No model is loaded: load one first.")

    def require_generative(self) -> None:
        """Chat, completion and scoring need a model that writes text, with the context in its text mode."""
        self.require_model()
        if not self.generative:
            raise RequestError(
                "not_generative",
                f"{os.path.basename(self.path)} is an embedding model: it turns text into vectors and cannot "
                "write text. Use it for embeddings, and pick a chat model to chat.",
            )
        if self.embedding:
            L.llama_set_embeddings(self.ctx, False)

    # -- KV cache ------------------------------------------------------------------------------
    def reset_cache(self) -> None:
        if self.mem is not None:
            L.llama_memory_clear(self.mem, True)
        self.kv_tokens, self.kv_images, self.pos_shift = [], [], 0

    def fill_batch(self, tokens: list[int]) -> None:
        """Put ``tokens`` at the next positions of sequence 0; logits only for the last one."""
        fill_batch(self.batch, tokens, len(self.kv_tokens) + self.pos_shift)

    def add_image_cells(self, keys: list[int], n_pos: int) -> None:
        """Record an image just decoded into the cache: its cells' keys and the positions it took."""
        self.kv_images.append((len(self.kv_tokens), len(keys), n_pos))
        self.pos_shift += n_pos - len(keys)
        self.kv_tokens.extend(keys)

    def position_of(self, cell: int) -> int:
        """The position of the ``cell``-th cell of the cache (cells and positions differ after M-RoPE images)."""
        return cell + sum(n_pos - n for start, n, n_pos in self.kv_images if start + n <= cell)

    def forget_after(self, cell: int) -> None:
        """Drop the record of cells from ``cell`` on (the caller removed them from llama.cpp's memory)."""
        del self.kv_tokens[cell:]
        self.kv_images = [span for span in self.kv_images if span[0] + span[1] <= cell]
        self.pos_shift = sum(n_pos - n for _start, n, n_pos in self.kv_images)

    def decode(self, tokens: list[int], logits: bool = True) -> None:
        """Evaluate ``tokens`` after the cache, in batches; logits of the last one only (none: ``logits`` False;
        an output row costs a pass over the vocabulary, 262k tokens for Gemma)."""
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            self.fill_batch(chunk)
            if not logits or start + self.n_batch < len(tokens):
                self.batch.logits[len(chunk) - 1] = False
            rc = L.llama_decode(self.ctx, self.batch)
            if rc != 0:
                self.reset_cache()
                raise RequestError("decode_failed", f"llama.cpp could not evaluate the prompt (code {rc}).")
            self.kv_tokens.extend(chunk)

    def evaluate_prompt(self, prompt: list[int]) -> int:
        """Bring the cache to ``prompt``, reusing the longest shared prefix; returns tokens reused."""
        common = rewind_to_prefix(self.mem, self.kv_tokens, prompt)
        if self.kv_images:  # a text prompt never shares an image's cells (their keys are negative)
            self.forget_after(common)
        self.decode(prompt[common:])
        return common


# A request's ``op`` -> the function that answers it (``shutdown`` is the loop's own).
OPS: dict[str, Callable[[Worker, dict[str, Any]], None]] = {
    "load": Worker.op_load,
    "unload": Worker.op_unload,
    "set_loras": adapters.op_set_loras,
    "tokenize": tokens.op_tokenize,
    "chat": generate.op_chat,
    "complete": generate.op_complete,
    "score": score.op_score,
    "embed": embed.op_embed,
}


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


def _physical_cores() -> int:
    try:
        import psutil

        return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except ImportError:
        return max(1, os.cpu_count() or 1)


def main(conn: Connection, cancel: Synchronized, gpu_off: bool = False) -> None:  # type: ignore[type-arg]
    """Entry point of the worker process; ``gpu_off``: load no GPU backend (the engine's CPU fallback)."""
    # Ctrl-C in a terminal reaches the whole process group: the client decides what it means
    # (the CLI cancels the answer), so the worker must not die of it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if gpu_off:
        os.environ["HEARTH_GPU"] = "off"  # read by load_backends (core.engine.backends.gpu_disabled)
    try:
        worker = Worker(conn, cancel)
        from core.engine import rpc

        api = rpc.ggml()
        gpus = [api.device(d).name for d in api.local_gpus()]
    except Exception as exc:  # the client reports it; nothing else can
        conn.send({"type": "error", "kind": "start_failed", "message": f"The engine could not start: {exc}"})
        return
    conn.send({"type": "ready", "pid": os.getpid(), "system_info": L.llama_print_system_info().decode(),
               "gpus": gpus})
    worker.serve()
