"""Which models the server offers and which one the shared engine holds.

``ModelHost`` names every library model by its library name and every adapter whose base model is
in the library as ``BASE+ADAPTER``; nothing a request sends is ever taken as a file path. A request
takes the engine with ``host.use(name, holder)``: it waits its turn on the ``FairLock`` it shares with
the window (first come, first served), then loads the model or switches the adapter only when the
engine does not already hold exactly that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from core.engine import Engine, LoadOptions
from core.engine.gate import FairLock
from core.errors import InvalidModelError
from core.server.errors import ModelNotFound

if TYPE_CHECKING:
    from core.finetune.adapters import AdapterEntry
    from core.library import ModelEntry

log = logging.getLogger("hearth.server")


@dataclass(frozen=True)
class ServedModel:
    """A name the server answers to: a library model, or a library model with one of its adapters."""

    name: str
    base: ModelEntry
    adapter: AdapterEntry | None = None

    @property
    def created(self) -> int:
        if self.adapter is not None:
            return int(float(self.adapter.manifest.get("created_at", 0) or 0))
        return int(self.base.added_at)

    @property
    def size_bytes(self) -> int:
        return int(self.base.size_bytes)

    @property
    def mmproj(self) -> str | None:
        """The vision projector paired with the base model in the library, if its file is there."""
        return self.base.mmproj if self.base.vision else None

    @property
    def vision(self) -> bool:
        """The model reads images: a projector is paired with it (an adapter's model uses its base's)."""
        return self.mmproj is not None


def _same_path(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return a == b


class ModelHost:
    """Model selection for the server over one shared ``Engine`` (its own when none is given).

    ``only``: serve just these names (``hearth serve --model``). A model the server loaded is unloaded
    after ``idle_unload_s`` unused, unless someone (the window) loaded something else meanwhile.
    """

    def __init__(self, engine: Engine | None = None, lock: FairLock | None = None, *,
                 only: Sequence[str] | None = None, idle_unload_s: float = 600.0) -> None:
        self._own_engine = engine is None
        self.engine = engine if engine is not None else Engine()
        self.lock = lock if lock is not None else FairLock()
        self.only = list(only) if only else None
        self.idle_unload_s = idle_unload_s
        self._loaded: tuple[str, list[tuple[str, float]], bool] | None = None  # what the server itself loaded
        self._last_used = time.monotonic()
        self._stop = threading.Event()
        self._idle_thread: threading.Thread | None = None
        self._state = threading.Lock()

    # -- names ---------------------------------------------------------------------------------
    def models(self) -> list[ServedModel]:
        """Every name the server answers to: library models, then ``BASE+ADAPTER`` for each adapter."""
        from core.finetune.adapters import find_base, list_adapters
        from core.library import Library

        entries = [e for e in Library().models() if e.exists]
        served = [ServedModel(e.name, e) for e in entries]
        for adapter in list_adapters():
            base = find_base(adapter, entries)
            if base is not None:
                served.append(ServedModel(f"{base.name}+{adapter.name}", base, adapter))
        if self.only is not None:
            wanted = {n.lower() for n in self.only}
            served = [s for s in served if s.name.lower() in wanted]
        return served

    def resolve(self, name: str) -> ServedModel:
        """The served model called ``name`` (Ollama's ``:latest`` tag ignored); else ``ModelNotFound`` (404)."""
        models = self.models()
        wanted = name.strip()
        if wanted.endswith(":latest"):
            wanted = wanted[: -len(":latest")]
        for model in models:
            if model.name == wanted:
                return model
        for model in models:
            if model.name.lower() == wanted.lower():
                return model
        raise ModelNotFound(name, [m.name for m in models])

    def load_options(self, model: ServedModel) -> LoadOptions:
        """The user's load settings for the model (its preset, else the defaults), as the window uses them,
        with the model's paired vision projector."""
        from core.library import load_options_for
        from core.settings import load_settings

        return load_options_for(model.base, load_settings().parameters_for(model.base.name).load_options())

    # -- the engine ----------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.lock.busy

    @property
    def holder(self) -> str:
        return self.lock.holder

    @contextmanager
    def use(self, name: str | ServedModel, holder: str, *, embedding: bool = False,
            vision: bool = False) -> Iterator[Engine]:
        """Wait for the engine, make it hold ``name`` (loaded for embeddings, or with its vision projector
        reading images, if asked), and yield it."""
        model = name if isinstance(name, ServedModel) else self.resolve(name)
        with self.lock(holder):
            try:
                self._ensure(model, embedding, vision)
                yield self.engine
            finally:
                self._last_used = time.monotonic()
        self._start_idle_watch()

    def preload(self, name: str) -> ServedModel:
        model = self.resolve(name)
        with self.use(model, "server: preload"):
            pass
        return model

    def _loras_for(self, model: ServedModel) -> list[tuple[str, float]]:
        if model.adapter is None:
            return []
        from core.finetune.adapters import ensure_lora_gguf

        return [(str(ensure_lora_gguf(model.adapter, model.base.path)), 1.0)]

    def _ensure(self, model: ServedModel, embedding: bool, vision: bool = False) -> None:
        engine = self.engine
        loras = self._loras_for(model)
        status = engine.status if engine.alive else None
        # The model as someone else loaded it (the window, without its projector) serves text; a request with
        # images needs it loaded with the projector.
        same_model = (status is not None and _same_path(status.path, model.base.path)
                      and bool(status.embedding) == embedding and (status.vision or not vision))
        if not same_model:
            options = replace(self.load_options(model), loras=loras, embedding=embedding)
            if embedding and options.mmproj:  # embeddings read text only: the projector's memory is not needed
                options = replace(options, mmproj=None)
            try:
                engine.load(model.base.path, options)
            except InvalidModelError as exc:
                if vision or not options.mmproj:
                    raise
                # The projector was refused (one of another model, a build without libmtmd): the model still
                # answers text; a request with images tries again and gets the reason.
                log.warning("%s: its projector did not load (%s); serving it without images", model.name, exc)
                engine.load(model.base.path, replace(options, mmproj=None))
        elif status is not None and [(str(p), float(s)) for p, s in status.loras] != loras:
            engine.set_loras(loras)
        else:
            return
        with self._state:
            self._loaded = (model.base.path, loras, embedding)

    # -- idle unload ---------------------------------------------------------------------------
    def _start_idle_watch(self) -> None:
        with self._state:
            if self._idle_thread is not None or self.idle_unload_s <= 0 or self._stop.is_set():
                return
            self._idle_thread = threading.Thread(target=self._idle_watch, name="hearth-server-idle", daemon=True)
            self._idle_thread.start()

    def _idle_watch(self) -> None:
        while not self._stop.wait(max(0.05, min(5.0, self.idle_unload_s / 4))):
            if self.idle_unload_s > 0 and not self.lock.busy and self._loaded is not None \
                    and time.monotonic() - self._last_used >= self.idle_unload_s:
                self.unload_if_ours()

    def unload_if_ours(self) -> bool:
        """Unload the model the server loaded, unless the engine now holds something else. True if unloaded."""
        with self.lock("server: idle unload"):
            loaded, status = self._loaded, self.engine.status
            if loaded is None:
                return False
            self._loaded = None
            ours = (status is not None and _same_path(status.path, loaded[0])
                    and [(str(p), float(s)) for p, s in status.loras] == loaded[1])
            if ours and self.engine.alive:
                self.engine.unload()
            return ours

    def close(self) -> None:
        """Stop the idle watch; close the engine if this host created it."""
        self._stop.set()
        thread = self._idle_thread
        if thread is not None:
            thread.join(timeout=10)
        if self._own_engine:
            self.engine.close()
