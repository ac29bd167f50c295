"""The one owner of the engine: loads models and streams answers on a single worker thread.

Everything that touches ``core.engine.Engine`` runs on ``engine_executor`` (one thread), so the
llama.cpp worker never sees two requests at once and the GUI thread never waits on it. Tokens come
back to the GUI through ``Op`` progress reports (queued signals); ``stop()`` calls
``Engine.cancel()``, which is safe from any thread.

The engine is shared with the local API server (``desktop.server_control``): each use of it here
holds ``lock`` (a first-come-first-served ``FairLock``) as "window", and since a request from another
app may have loaded another model or adapter meanwhile, what is loaded is checked again under the
lock before every answer.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QTimer, Signal

from core.chats import ChatStore
from core.chats.session import ChatSession, ToolCallRequest, ToolCallResult
from core.engine import Completion, Engine, LoadOptions, ModelStatus, TextChunk
from core.engine.gate import FairLock
from core.errors import HearthError
from core.finetune.adapters import AdapterEntry, ensure_lora_gguf
from core.library import ModelEntry, load_options_for
from core.settings import ChatParameters
from desktop.ops import Executor, Op, error_text

if TYPE_CHECKING:  # core.docs imports numpy: loaded with the first question asked with documents
    from core.docs import DocsLibrary, DocsTurn, Embedder, EngineEmbedder
    from core.media import PreparedImage
    from desktop.tools_control import ToolsControl


def _load_options(entry: ModelEntry, params: ChatParameters) -> LoadOptions:
    """How the chat loads ``entry``: the parameters' options, with the entry's vision projector (if any)."""
    return load_options_for(entry, params.load_options())


@dataclass(frozen=True)
class _Loaded:
    path: str
    options: LoadOptions


@dataclass(frozen=True)
class Committed:
    """The store now holds the user's message; the answer is about to stream."""


@dataclass(frozen=True)
class LoadStarting:
    """The engine is ours now and ``name`` needs (re)loading (it waited for another app's request first)."""

    name: str


@dataclass(frozen=True)
class ActiveAdapter:
    """The adapter applied to the loaded model (``name`` '' = none), as the engine reports it."""

    name: str
    scale: float
    loras: list[tuple[str, float]]


class ChatController(QObject):
    """Model loading and streaming for the chat page; emits what happened, holds no widgets."""

    model_loading = Signal(str)  # model name
    model_load_progress = Signal(float)  # fraction of the weights loaded, 0..1
    model_loaded = Signal(object)  # ModelStatus
    model_failed = Signal(str)  # message
    stream_started = Signal()
    history_changed = Signal()  # messages were committed: reload them from the store
    chunk_arrived = Signal(str)
    stream_finished = Signal(object)  # Completion, or None when the stream broke off
    stream_failed = Signal(str)
    adapter_applying = Signal(str)  # adapter name ('' = removing it)
    adapter_applied = Signal(object)  # ActiveAdapter
    adapter_failed = Signal(str)  # message
    serving_changed = Signal(bool)  # the engine is (or no longer is) answering another app's request
    docs_used = Signal(object)  # DocsTurn: the passages put in the question asked with documents
    tool_call_requested = Signal(object)  # ToolCallRequest: its card asks the user (answer_tool_call)
    tool_call_finished = Signal(object)  # ToolCallResult

    HOLDER = "window"

    def __init__(
        self, store: ChatStore, engine_executor: Executor, engine: Engine | None = None, lock: FairLock | None = None,
        docs: DocsLibrary | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self._docs = docs
        self._embedder: EngineEmbedder | None = None  # a documents collection's embedding model, engine thread
        self._embedder_stack = contextlib.ExitStack()  # keeps that model's engine open between questions
        self.executor = engine_executor
        self.engine = engine or Engine()
        self.lock = lock or FairLock()
        self._loaded: _Loaded | None = None
        self._status: ModelStatus | None = None  # the engine's status object from our own load
        self._stop_asked = False
        self.serving = False
        self._watch = QTimer(self)
        self._watch.setInterval(250)  # cheap: two attribute reads
        self._watch.timeout.connect(self._check_serving)
        self._watch.start()
        self.streaming = False
        self.loading = False
        # The adapter wanted on the loaded model: (name, GGUF LoRA path, scale). Written on the engine
        # thread only, so a send queued after a pick always sees the pick.
        self._adapter: tuple[str, str, float] | None = None
        # Tools (Settings > Tools): offered while ``use_tools``; each call waits on the engine thread
        # for the user's answer on its card, which ``answer_tool_call`` hands over through an Event.
        self.tools: ToolsControl | None = None
        self.use_tools = True
        self.always_allowed: set[str] = set()  # tools answered "Always allow", until the window closes
        self.answered_calls: set[str] = set()  # calls the user allowed (their cards show them running)
        self._answers: dict[str, tuple[threading.Event, list[str]]] = {}
        self._answers_lock = threading.Lock()

    # -- model ---------------------------------------------------------------------------------
    def load(self, entry: ModelEntry, params: ChatParameters) -> None:
        """Load ``entry`` now (in the background), unless it is already loaded with these options."""
        if self._needs_load(entry, params):
            self.loading = True
            self.model_loading.emit(entry.name)
            Op(lambda report: self._locked(lambda: self._load_blocking(entry, params, report))).on_progress(
                self._on_progress
            ).on_success(self._did_load).on_failure(self._load_failed).run(self.executor)

    def _needs_load(self, entry: ModelEntry, params: ChatParameters) -> bool:
        wanted = _Loaded(str(Path(entry.path)), _load_options(entry, params))
        return self._loaded != wanted or self.engine.status is None or self.engine.status is not self._status

    def _load_blocking(
        self, entry: ModelEntry, params: ChatParameters, report: Callable[[Any], None]
    ) -> ModelStatus:
        # Runs on the engine thread holding the lock, so _loaded is only written there (and read for a
        # hint here). Load progress goes out through ``report`` as floats (answers' text goes as str).
        # ``engine.status`` is a new object after every load, whoever asked for it: if it is not the
        # one our load returned, the server loaded another model (or unloaded ours) meanwhile.
        wanted = _Loaded(str(Path(entry.path)), _load_options(entry, params))
        status = self.engine.status
        if self._loaded == wanted and status is not None and status is self._status and self.engine.alive:
            self._sync_adapter()
            return status
        self._loaded = self._status = None
        status = self.engine.load(entry.path, wanted.options, progress=report)
        self._loaded, self._status = wanted, status
        self._sync_adapter()
        return status

    # -- adapter -------------------------------------------------------------------------------
    def use_adapter(self, adapter: AdapterEntry | None, base: ModelEntry | None, scale: float = 1.0) -> None:
        """Apply ``adapter`` (trained on ``base``) at ``scale`` without reloading the model; None removes it.

        The first use of an adapter exports its GGUF LoRA (on the engine thread, so an answer asked
        for meanwhile waits for it and then uses the adapter). With no model loaded yet it is applied
        right after the next load.
        """
        self.adapter_applying.emit(adapter.name if adapter else "")

        def work() -> ActiveAdapter:
            if adapter is None:
                self._adapter = None
            else:
                path = ensure_lora_gguf(adapter, base.path if base else None)
                self._adapter = (adapter.name, str(path), float(scale))
            with self.lock(self.HOLDER):
                self._sync_adapter()
            return self.active_adapter()

        Op(work).on_success(self.adapter_applied.emit).on_failure(
            lambda exc: self.adapter_failed.emit(error_text(exc))
        ).run(self.executor)

    def active_adapter(self) -> ActiveAdapter:
        name, scale = (self._adapter[0], self._adapter[2]) if self._adapter else ("", 1.0)
        status = self.engine.status
        return ActiveAdapter(name, scale, list(status.loras) if status else [])

    def _sync_adapter(self) -> None:
        # Engine thread: make the worker's adapters what is wanted (set_loras keeps the model loaded).
        status = self.engine.status
        if status is None or not self.engine.alive:
            return
        wanted = [(self._adapter[1], self._adapter[2])] if self._adapter else []
        if [(str(p), float(s)) for p, s in status.loras] != wanted:
            self.engine.set_loras(wanted)

    def _did_load(self, status: ModelStatus) -> None:
        self.loading = False
        self.model_loaded.emit(status)

    def _load_failed(self, exc: BaseException) -> None:
        self.loading = False
        self.model_failed.emit(error_text(exc))

    # -- answers -------------------------------------------------------------------------------
    def send(
        self, conversation_id: int, text: str, entry: ModelEntry, params: ChatParameters, docs: str = "",
        images: Sequence[PreparedImage] = (),
    ) -> None:
        """Answer ``text``; with ``docs`` (a collection's name) the question carries its best passages.

        ``images`` (checked and scaled by ``core.media``) are saved with the message and shown to the
        model, which is loaded with its projector (``load_options_for``).
        """
        pictures = {"images": list(images)} if images else {}
        self._stream(entry, params, lambda s, **kw: s.send(self._question(s, text, docs, params), params.sampling(),
                                                           **pictures, **kw), conversation_id)

    def regenerate(self, conversation_id: int, entry: ModelEntry, params: ChatParameters) -> None:
        self._stream(entry, params, lambda s, **kw: s.regenerate(params.sampling(), **kw), conversation_id)

    def edit_and_rerun(
        self, conversation_id: int, message_id: int, text: str, entry: ModelEntry, params: ChatParameters,
        docs: str = "", images: Sequence[PreparedImage] | None = None,
    ) -> None:
        """Replace a message and answer again; it keeps its pictures unless ``images`` replaces them."""
        pictures = {"images": list(images)} if images is not None else {}
        self._stream(entry, params, lambda s, **kw: s.edit_and_rerun(
            message_id, self._question(s, text, docs, params), params.sampling(), **pictures, **kw), conversation_id)

    @property
    def docs(self) -> DocsLibrary:
        """The document collections (opened on the first question asked with documents)."""
        if self._docs is None:
            from core.docs import DocsLibrary

            self._docs = DocsLibrary()
        return self._docs

    def _question(self, session: ChatSession, text: str, docs: str, params: ChatParameters) -> str:
        """The message to send: ``text``, or with ``docs`` the question with the collection's passages.

        Runs on the engine thread under the lock, after the load, the way ``hearth chat --docs`` asks
        (``core.docs.prepare_question``): the passages fit a budget of the loaded context.
        """
        if not docs:
            return text
        status = self.engine.status
        n_ctx = status.n_ctx if status is not None else params.n_ctx
        from core.docs import prepare_question

        with self.docs.open(docs) as collection:
            embedder, note = self._embedder_for(collection.embed_model)
            turn: DocsTurn = prepare_question(
                collection, text, count_tokens=lambda t: len(self.engine.tokenize(t)), n_ctx=n_ctx,
                answer_tokens=params.max_tokens, embedder=embedder)
        if note:
            turn.notes.append(note)
        if not session.conversation.title:  # the question names the chat, not the instructions before it
            line = " ".join(text.split())
            self.store.rename(session.conversation_id, line if len(line) <= 60 else line[:59].rstrip() + "…")
        self.docs_used.emit(turn)  # queued to the GUI thread
        return turn.message

    def _embedder_for(self, model: str) -> tuple[Embedder | None, str]:
        """The collection's embedding model in an engine of its own (kept for the next question), or why not.

        Engine thread. A collection without vectors, or whose model left the library, is searched by
        keywords only (the note says so).
        """
        if not model:
            return None, ""
        if self._embedder is not None and self._embedder.model_name == model:
            return self._embedder, ""
        self._close_embedder()
        from core.docs import load_embedder

        try:
            self._embedder = self._embedder_stack.enter_context(load_embedder(model))
        except HearthError as exc:
            return None, f"searched by keywords only: the embedding model {model} is not usable ({exc})"
        return self._embedder, ""

    def _close_embedder(self) -> None:
        self._embedder_stack.close()
        self._embedder = None

    def stop(self) -> None:
        """Stop the answer being generated (it is kept, marked as stopped), or not start one still waiting."""
        if self.streaming:
            self._stop_asked = True
            if self.lock.holder == self.HOLDER:  # never cancel another app's answer
                self.engine.cancel()

    def _stream(
        self,
        entry: ModelEntry,
        params: ChatParameters,
        start: Callable[..., Iterator[Any]],  # (session, **tool options) -> the session's stream
        conversation_id: int,
    ) -> None:
        if self.streaming:
            return
        self.streaming = True
        self._stop_asked = False
        # While another app holds the engine, "Loading…" would be wrong: it is said once the engine is ours.
        if self._needs_load(entry, params) and not self.lock.busy:
            self.loading = True
            self.model_loading.emit(entry.name)
        self.stream_started.emit()

        def work(report: Callable[[Any], None]) -> Completion | None:
            with self.lock(self.HOLDER):
                if self._stop_asked:  # stopped while waiting for another app's answer
                    return None
                if self._needs_load(entry, params):
                    report(LoadStarting(entry.name))
                status = self._load_blocking(entry, params, report)
                report(status)
                self.store.update(conversation_id, model=entry.name)
                session = ChatSession(self.store, self.engine, conversation_id)
                stream = start(session, **self._tool_options())
                report(Committed())
                completion: Completion | None = None
                cancelled = False
                for item in stream:
                    if self._stop_asked and not cancelled:  # asked while the lock was changing hands
                        cancelled = True
                        self.engine.cancel()
                    if isinstance(item, TextChunk):
                        report(item.text)
                    elif isinstance(item, (ToolCallRequest, ToolCallResult)):
                        report(item)
                    else:
                        completion = item
                return completion

        Op(work).on_progress(self._on_progress).on_success(self._finished).on_failure(self._failed).run(self.executor)

    # -- tools ---------------------------------------------------------------------------------
    def _tool_options(self) -> dict[str, Any]:
        """The session's tool keywords: the running registry and the approval, while tools are on."""
        registry = self.tools.registry if self.tools is not None and self.use_tools else None
        return {"tools": registry, "approve": self._approve} if registry is not None else {}

    def _approve(self, request: ToolCallRequest) -> str:
        """Engine thread: wait until the user answers the call's card (Stop answers "deny")."""
        if request.tool in self.always_allowed:
            return "always"
        event, answer = self._answer_slot(request.id)
        while not event.wait(0.1):
            if self._stop_asked:
                break
        with self._answers_lock:
            self._answers.pop(request.id, None)
        return answer[0] if answer else "deny"

    def answer_tool_call(self, call_id: str, tool: str, decision: str) -> None:
        """GUI thread: the user's answer to a waiting call: "once", "always" or "deny"."""
        if decision == "always":
            self.always_allowed.add(tool)
        if decision != "deny":
            self.answered_calls.add(call_id)
        event, answer = self._answer_slot(call_id)
        answer[:] = [decision]
        event.set()

    def _answer_slot(self, call_id: str) -> tuple[threading.Event, list[str]]:
        # Either side may come first (a quick click, or the engine thread reaching approve): one slot each.
        with self._answers_lock:
            return self._answers.setdefault(call_id, (threading.Event(), []))

    def _locked(self, fn: Callable[[], ModelStatus]) -> ModelStatus:
        with self.lock(self.HOLDER):
            return fn()

    def _check_serving(self) -> None:
        serving = self.lock.busy and self.lock.holder not in ("", self.HOLDER)
        if serving != self.serving:
            self.serving = serving
            self.serving_changed.emit(serving)

    def _on_progress(self, item: object) -> None:
        if isinstance(item, str):
            self.chunk_arrived.emit(item)
        elif isinstance(item, float):
            self.model_load_progress.emit(item)
        elif isinstance(item, ModelStatus):
            if self.loading:
                self._did_load(item)
        elif isinstance(item, LoadStarting):
            if not self.loading:
                self.loading = True
                self.model_loading.emit(item.name)
        elif isinstance(item, Committed):
            self.history_changed.emit()
        elif isinstance(item, ToolCallRequest):
            self.tool_call_requested.emit(item)
        elif isinstance(item, ToolCallResult):
            self.tool_call_finished.emit(item)

    def _finished(self, completion: Completion | None) -> None:
        self.streaming = False
        if self.loading:  # stopped while waiting for the engine, before the model was (re)loaded
            self.loading = False
            if self.engine.status is not None:
                self.model_loaded.emit(self.engine.status)
            else:
                self.model_failed.emit("Stopped before the model was loaded: send again to load it.")
        self.stream_finished.emit(completion)
        self.history_changed.emit()

    def _failed(self, exc: BaseException) -> None:
        self.streaming = False
        if self.loading:
            self._load_failed(exc)
        self.stream_failed.emit(error_text(exc))
        self.history_changed.emit()

    # -- shutdown ------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop any answer, wait for the engine thread, stop the worker process (stop the server first)."""
        self._watch.stop()
        self._stop_asked = True
        self.engine.cancel()
        self.executor.shutdown(wait=True)
        self._close_embedder()
        self.engine.close()
