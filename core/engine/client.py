"""The chat engine as the rest of Hearth sees it: a handle on a worker process.

``Engine`` starts ``core.engine.worker`` in a child process (spawn), sends it requests over a pipe
and turns its answers into Python results and streamed ``TextChunk``s. If the worker dies (native
crash, out of memory, killed) the caller gets ``EngineCrashedError`` and the next request starts a
fresh worker; nothing the caller keeps (such as the chat history) is affected.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.engine import rpc_state
from core.engine.backends import gpu_disabled
from core.engine.crash import describe_exit, exit_words, oom_kills
from core.engine.params import (
    GPU_LAYERS_AUTO,
    Completion,
    EmbedResult,
    GenerationStats,
    LoadOptions,
    ModelStatus,
    SamplingParams,
    TextChunk,
)
from core.errors import (
    ContextOverflowError,
    EngineCrashedError,
    EngineError,
    EngineInternalError,
    HearthError,
    ImageError,
    InvalidModelError,
    NoVisionError,
    WorkerError,
    WorkerLostError,
)

START_TIMEOUT = 120.0


class Engine:
    """One model at a time in one worker process. Thread-safe: requests run one after another."""

    def __init__(self) -> None:
        self._process: Any = None
        self._conn: Any = None
        self._cancel: Any = None
        self._lock = threading.RLock()
        self.status: ModelStatus | None = None
        self._load_request: tuple[str, LoadOptions] | None = None
        self._oom_kills: int | None = None  # the OS's count when the worker started, to tell OOM from other kills
        self.workers = rpc_state.WorkerState()  # other machines the model uses (LoadOptions.rpc_workers)
        self.gpus: list[str] = []  # the worker's GPU devices ("Vulkan0"), as its llama.cpp lists them
        # Set when the GPU backend failed (a driver that crashed or refused the model): this engine's workers
        # then load no GPU backend and run on the CPU, and ``gpu_note`` says why in one sentence.
        self.gpu_off = False
        self.gpu_note = ""
        self._exit_code: int | None = None  # how the last worker ended, when it died
        self._worker_gpu_off = False  # the running worker was started without GPU backends

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.is_alive() else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def _start(self) -> None:
        try:
            self._spawn()
        except EngineCrashedError:
            # A GPU driver that crashes when llama.cpp asks it for its devices takes the worker down before it
            # is ready: start again without the GPU backends.
            if self._cpu_only or self._exit_code == -signal.SIGKILL:
                raise
            self._fall_back_to_cpu(f"the GPU driver crashed when llama.cpp started ({exit_words(self._exit_code)})")
            self._spawn()

    def _spawn(self) -> None:
        import multiprocessing  # here, not at the top: the window starts without it (loaded with the first model)

        from core.engine import worker

        self._ctx = multiprocessing.get_context("spawn")
        parent, child = self._ctx.Pipe(duplex=True)
        self._oom_kills = oom_kills()
        self._cancel = self._ctx.Value("i", 0, lock=False)
        self._process = self._ctx.Process(
            target=worker.main, args=(child, self._cancel, self.gpu_off), name="hearth-engine", daemon=True
        )
        self._process.start()
        child.close()  # so that the worker's death shows up as EOF here
        self._conn = parent
        answer = self._receive(timeout=START_TIMEOUT)
        if answer.get("type") != "ready":
            self._kill()
            raise EngineError(answer.get("message", "The engine could not start."))
        self.gpus = [str(g) for g in answer.get("gpus", [])]
        self._worker_gpu_off = self._cpu_only

    @property
    def _cpu_only(self) -> bool:
        """Whether this engine's workers load no GPU backend: the GPU failed here, or the user turned it off."""
        return self.gpu_off or gpu_disabled()

    def _fall_back_to_cpu(self, why: str) -> None:
        """From now on this engine's workers load no GPU backend; ``gpu_note`` says why and what to do."""
        self._kill()
        self.gpu_off = True
        self.gpu_note = (f"Running on the CPU: {why}. To keep the GPU off, turn it off in Settings > System "
                         "(or set HEARTH_GPU=off); a driver update may fix it.")

    def _ensure_started(self) -> None:
        if not self.alive:
            self._kill()
            self._start()

    def _kill(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
        if self._process is not None and self._process.pid is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(timeout=5)
        self._process = None
        self._conn = None
        self.status = None
        self.workers.process_endpoints.clear()  # a new worker process starts with ggml's registry empty

    def close(self) -> None:
        """Stop the worker (politely, then by force)."""
        with self._lock:
            if self.alive:
                try:
                    self._conn.send({"op": "shutdown"})
                    self._receive(timeout=10)
                except (EngineError, OSError):
                    pass
            self._kill()
            self.workers.forget()

    # -- plumbing ------------------------------------------------------------------------------
    def _receive(self, timeout: float | None = None) -> dict[str, Any]:
        conn = self._conn
        try:
            if timeout is not None and not conn.poll(timeout):
                self._kill()
                raise EngineCrashedError("The engine stopped answering and was restarted; try again.")
            message: dict[str, Any] = conn.recv()
        except (EOFError, OSError, BrokenPipeError) as exc:
            code = self._process.exitcode if self._process is not None else None
            self._process and self._process.join(timeout=2)
            code = self._process.exitcode if self._process is not None else code
            self._exit_code = code
            status = self.status
            self._kill()
            # ggml aborts the worker when an RPC worker stops answering: say which one went away.
            self.workers.raise_if_lost(self._load_request, status)
            raise EngineCrashedError(describe_exit(code, self._oom_kills)) from exc
        return message

    def _request(
        self, request: dict[str, Any], on_progress: Callable[[float], None] | None = None
    ) -> dict[str, Any]:
        self._ensure_started()
        try:
            self._conn.send(request)
        except (OSError, BrokenPipeError) as exc:
            self._kill()
            raise EngineCrashedError("The engine process is gone; load the model again.") from exc
        answer = self._receive()
        while answer.get("type") == "load_progress":
            if on_progress is not None:
                on_progress(float(answer["fraction"]))
            answer = self._receive()
        if answer.get("type") == "error":
            self._raise(answer)
        return answer

    @staticmethod
    def _raise(answer: dict[str, Any]) -> None:
        kind, message = answer.get("kind"), answer.get("message", "engine error")
        if kind == "load_failed":
            error = InvalidModelError(message)
            error.reason = str(answer.get("reason") or "")  # llama.cpp's own words, without the advice
            raise error
        if kind == "context_overflow":
            raise ContextOverflowError(message)
        if kind == "internal":
            raise EngineInternalError(message)
        if kind == "no_vision":
            raise NoVisionError(message)
        if kind == "image":
            raise ImageError(message)
        if kind == "worker":
            raise WorkerError(message)
        raise EngineError(message)

    # -- model ---------------------------------------------------------------------------------
    def load(
        self,
        path: str | Path,
        options: LoadOptions | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> ModelStatus:
        """Load a GGUF model (replacing the current one); returns what the worker reports.

        ``progress`` gets the loaded fraction of the weights (0..1, rising) while they load.
        """
        options = options or LoadOptions()
        path = Path(path)
        if not path.exists():
            raise InvalidModelError(f"{path} does not exist: check the path or pick a model from the library.")
        from core.library.gguf_meta import read_gguf_info

        read_gguf_info(path)  # a clear message for a bad file before llama.cpp sees it
        with self._lock:
            options = self.workers.before_load(options)  # without workers lost earlier that still do not answer
            if self.alive and self._worker_gpu_off != self._cpu_only:
                self._kill()  # the GPU was turned off or on (Settings > System) since this worker started
            wanted_gpu = options.n_gpu_layers != 0
            if options.n_gpu_layers == GPU_LAYERS_AUTO:
                options = replace(options, n_gpu_layers=self._auto_layers(path, options))
            if self.gpu_off and options.n_gpu_layers != 0:
                options = replace(options, n_gpu_layers=0)  # the GPU failed in this engine: the CPU, and say why
            if self.alive and self.workers.needs_new_process(options):
                self._kill()  # ggml's registry keeps added workers: a load without them starts a clean process
            self.status = None
            self._load_request = (str(path), options)
            self.workers.loading(options)
            try:
                try:
                    answer = self._request({"op": "load", "path": str(path), "options": options.to_dict()}, progress)
                except (InvalidModelError, EngineCrashedError) as exc:
                    why = self._gpu_failure(options, exc)
                    if why is None:
                        raise
                    # The GPU backend refused the model or its driver crashed: the same load on the CPU, once.
                    self._fall_back_to_cpu(why)
                    options = replace(options, n_gpu_layers=0)
                    self._load_request = (str(path), options)
                    answer = self._request({"op": "load", "path": str(path), "options": options.to_dict()}, progress)
            except EngineCrashedError:
                raise
            except Exception:
                self.workers.in_use = []
                raise
            status = answer["status"]
            status["loras"] = [tuple(x) for x in status.get("loras", [])]
            status["split"] = [tuple(x) for x in status.get("split", [])]
            status["offload"] = [tuple(x) for x in status.get("offload", [])]
            status["gpu_note"] = self.gpu_note if self.gpu_off and wanted_gpu else ""
            self.status = ModelStatus(**status)
            return self.status

    def _auto_layers(self, path: Path, options: LoadOptions) -> int:
        """``GPU_LAYERS_AUTO`` resolved: none where the worker lists no GPU (nothing else is asked), else what
        the fit estimate says fits (core.fit.offload)."""
        if self._cpu_only:
            return 0
        self._ensure_started()
        if not self.gpus:
            return 0
        from core.fit.offload import auto_gpu_layers

        return auto_gpu_layers(path, options)

    def _gpu_failure(self, options: LoadOptions, exc: HearthError) -> str | None:
        """Why a failed load is the GPU's fault, in words, or None when it is not (then nothing is retried):
        the load used this machine's GPU, and the worker failed in a way a CPU load may not."""
        if self._cpu_only or options.n_gpu_layers == 0 or options.rpc_workers or not self.gpus:
            return None
        if isinstance(exc, WorkerLostError):
            return None
        if isinstance(exc, EngineCrashedError):
            if self._exit_code == -signal.SIGKILL:  # out of memory, or killed: the CPU would fare no better
                return None
            return f"the GPU driver crashed while loading the model ({exit_words(self._exit_code)})"
        # The worker's sentence names the file and guesses at damage; here only llama.cpp's reason matters.
        return f"the GPU ({', '.join(self.gpus)}) could not load the model ({exc.reason if isinstance(exc, InvalidModelError) and exc.reason else exc})"

    def unload(self) -> None:
        with self._lock:
            if self.alive:
                self._request({"op": "unload"})
            self.status = None
            self.workers.forget()

    def set_loras(self, loras: Sequence[tuple[str | Path, float]]) -> list[tuple[str, float]]:
        """Apply GGUF LoRA adapters with a scale each, without reloading the base model."""
        with self._lock:
            self._need_model()
            answer = self._request({"op": "set_loras", "loras": [(str(p), float(s)) for p, s in loras]})
            active = [(str(p), float(s)) for p, s in answer["loras"]]
            if self.status:
                self.status.loras = active
            return active

    def tokenize(self, text: str, add_bos: bool = False) -> list[int]:
        with self._lock:
            self._need_model()
            return list(self._request({"op": "tokenize", "text": text, "add_bos": add_bos})["tokens"])

    def score(self, context: str, continuations: Sequence[str]) -> list[dict[str, Any]]:
        """Log-likelihood of each continuation after ``context`` (raw text, no chat template).

        Each result has ``logprob`` (the sum over the continuation's tokens), ``tokens`` and ``greedy``
        (whether greedy decoding would have written exactly it).
        """
        with self._lock:
            self._need_model()
            answer = self._request({"op": "score", "context": context, "continuations": list(continuations)})
            return list(answer["scores"])

    def _need_model(self) -> None:
        reload = self.workers.take_reload() if self.status is None or not self.alive else None
        if reload is not None:  # a worker went away during the last request: load on what is left
            rpc_state.reload_on_what_is_left(self, *reload)
        if self.status is None or not self.alive:
            raise EngineError("No model is loaded: pick a model first.")

    # -- generation ----------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the answer being generated at its next token (safe from any thread)."""
        if self._cancel is not None:
            self._cancel.value = 1

    def stream_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        params: SamplingParams | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> Iterator[TextChunk | Completion]:
        """Answer a conversation: yields ``TextChunk``s as they come, then one ``Completion``.

        Messages are OpenAI-style dicts: ``role`` and ``content`` (a string, or a list of parts:
        ``{"type": "text", "text": str}`` and ``{"type": "image", "data": bytes}``, an encoded PNG, JPEG or WebP;
        images need a projector, ``LoadOptions.mmproj``, else ``NoVisionError``), an assistant's ``tool_calls``
        (``function.arguments`` a JSON string or a dict), a ``tool`` message's ``tool_call_id``/``name``.
        ``tools`` (OpenAI function schemas) reach the chat template; ``status.supports_tools`` says
        whether the model's template reads them. Stopping to read the stream cancels the answer.
        """
        request = {
            "op": "chat",
            "messages": [dict(m) for m in messages],
            "params": (params or SamplingParams()).to_dict(),
            "tools": [dict(t) for t in tools] if tools else None,
        }
        return self._stream(request)

    def stream_complete(self, prompt: str, params: SamplingParams | None = None) -> Iterator[TextChunk | Completion]:
        """Continue raw text (no chat template)."""
        return self._stream({"op": "complete", "prompt": prompt, "params": (params or SamplingParams()).to_dict()})

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        params: SamplingParams | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> Completion:
        return _last(self.stream_chat(messages, params, tools))

    def complete(self, prompt: str, params: SamplingParams | None = None) -> Completion:
        return _last(self.stream_complete(prompt, params))

    def embed(self, texts: Sequence[str]) -> EmbedResult:
        """One L2-normalised embedding per text; the model must be loaded with ``LoadOptions(embedding=True)``.

        Embedding models (bert, nomic-bert...) pool as the model says; causal LMs average over the tokens.
        A text longer than the context raises ``ContextOverflowError``.
        """
        texts = [str(t) for t in texts]
        if not texts:
            return EmbedResult([], 0)
        with self._lock:
            self._need_model()
            answer = self._request({"op": "embed", "texts": texts})
            return EmbedResult([list(v) for v in answer["vectors"]], int(answer["prompt_tokens"]))

    def _stream(self, request: dict[str, Any]) -> Iterator[TextChunk | Completion]:
        with self._lock:
            self._need_model()
            if self._cancel is not None:
                self._cancel.value = 0
            try:
                self._conn.send(request)
            except (OSError, BrokenPipeError) as exc:
                self._kill()
                raise EngineCrashedError("The engine process is gone; load the model again.") from exc
            finished = False
            try:
                while True:
                    message = self._receive()
                    kind = message["type"]
                    if kind == "chunk":
                        yield TextChunk(message["text"], message["n"], message.get("logprobs"))
                    elif kind == "done":
                        finished = True
                        yield Completion(
                            message["text"], message["finish_reason"], GenerationStats(**message["stats"]),
                            message.get("logprobs"),
                        )
                        return
                    elif kind == "error":
                        finished = True
                        self._raise(message)
            finally:
                if not finished and self.alive:
                    # The caller stopped reading early: stop the worker and drain its answer.
                    self.cancel()
                    try:
                        while self._receive(timeout=30)["type"] not in ("done", "error"):
                            pass
                    except EngineError:
                        pass


def _last(stream: Iterator[TextChunk | Completion]) -> Completion:
    result: Completion | None = None
    for item in stream:
        if isinstance(item, Completion):
            result = item
    assert result is not None
    return result
