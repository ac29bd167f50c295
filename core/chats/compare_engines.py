"""Which engine answers which side of a comparison, and when models are loaded (``CompareEngines``).

The two sides are answered one after the other, never at once: on one machine two answers at the
same time would share the cores (and the memory bandwidth) and each side's tokens/s would say half
of what the set-up does alone. So each side runs at full speed, and the question is only what it
costs to switch from one side to the other:

- **shared**: both sides use the same model file with the same load options (base vs tuned: the
  same base, with an adapter at some scale on one side, at scale 0 or none on the other). One engine,
  loaded once; only the adapter and its scale change per side (``Engine.set_loras``, no reload; the
  cache is recomputed because its keys and values were made with the other adapter).
- **both**: different models (or load options) that fit in memory together, as ``core.fit``
  estimates them against the RAM (and GPU memory) available now: two engine processes stay loaded,
  so switching sides costs nothing.
- **reload**: different models that do not fit together: one engine loads each side's model in
  its turn (the second engine, if one was kept from an earlier turn, is closed first).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from core.engine import Engine, LoadOptions, ModelStatus

ProgressCallback = Callable[[float], None]


@dataclass(frozen=True)
class LoadKey:
    """What a side needs loaded, adapters aside: the model file and its load options (``loras`` empty)."""

    path: str
    options: LoadOptions

    def same_load(self, other: LoadKey) -> bool:
        return self.path == other.path and self.options.to_dict() == other.options.to_dict()


def fit_together(keys: Sequence[LoadKey]) -> bool:
    """Whether all ``keys`` fit in memory at the same time, by ``core.fit``'s estimates.

    Compared with the RAM available now (and, when layers are offloaded, the free memory of the
    GPU with the most), so models already loaded are not counted twice: pass only those still to load.
    """
    from core.engine.params import GPU_LAYERS_AUTO
    from core.fit import ModelShape, estimate_memory
    from core.hardware import detect_hardware

    if not keys:
        return True
    hardware = detect_hardware(with_llama=False)
    ram = gpu = 0
    for key in keys:
        layers = key.options.n_gpu_layers
        if layers == GPU_LAYERS_AUTO:  # what the engine will offload
            from core.fit.offload import auto_gpu_layers

            layers = auto_gpu_layers(key.path, key.options)
        estimate = estimate_memory(ModelShape.from_gguf(key.path), n_ctx=key.options.n_ctx,
                                   n_gpu_layers=layers, n_batch=key.options.n_batch)
        ram += estimate.ram_bytes
        gpu += estimate.gpu_bytes
    gpus = hardware.usable_gpus
    gpu_free = max((g.free_bytes for g in gpus), default=0)
    return ram <= hardware.ram_available_bytes and (gpu == 0 or gpu <= gpu_free)


class CompareEngines:
    """One or two engines for the sides of a comparison (see the module's docstring for the plan).

    ``primary`` is the caller's engine (the window's, shared with the chat and the server); it is
    used for every plan. A second engine is started only for the "both" plan and is owned here
    (``close`` stops it, and the primary too when it was made here). Not thread-safe: one caller at a time.
    """

    def __init__(self, primary: Engine | None = None, *,
                 fits: Callable[[Sequence[LoadKey]], bool] | None = None) -> None:
        self.primary = primary or Engine()
        self._own_primary = primary is None
        self.second: Engine | None = None
        self._fits = fits or fit_together
        self.plan = ""  # "shared", "both" or "reload", decided by plan_for
        # What we loaded into each engine, with the status object the load returned: anyone else's load
        # (the chat, the server) makes a new status object, so "still ours" is an identity check.
        self._loaded: dict[int, tuple[LoadKey, ModelStatus]] = {}

    # -- planning ------------------------------------------------------------------------------
    def plan_for(self, keys: Sequence[LoadKey]) -> str:
        """Decide how the sides' ``keys`` run (and close the second engine when it is no longer needed)."""
        if len(keys) < 2 or keys[0].same_load(keys[1]):
            self.plan = "shared"
        else:
            to_load = [k for k in keys if self._holder(k) is None]
            self.plan = "both" if self._fits(to_load) else "reload"
        if self.plan != "both":
            self._close_second()
        return self.plan

    def _holder(self, key: LoadKey) -> Engine | None:
        for engine in (self.primary, self.second):
            if engine is not None and self._holds(engine, key):
                return engine
        return None

    def _holds(self, engine: Engine, key: LoadKey) -> bool:
        mine = self._loaded.get(id(engine))
        return (mine is not None and mine[0].same_load(key) and engine.status is mine[1] and engine.alive)

    # -- per side ------------------------------------------------------------------------------
    def needs_load(self, key: LoadKey) -> bool:
        """Whether answering with ``key`` loads a model first (the window says "Loading…" then)."""
        return self._holder(key) is None

    def engine_for(
        self, key: LoadKey, loras: Sequence[tuple[str, float]], other: LoadKey | None = None,
        progress: ProgressCallback | None = None,
    ) -> tuple[Engine, ModelStatus]:
        """The engine that answers this side, loaded with ``key`` and with exactly ``loras`` applied.

        ``other`` is the other side's key: with two engines, this side never takes the one holding it.
        """
        engine = self._pick(key, other)
        if not self._holds(engine, key):
            self._loaded.pop(id(engine), None)
            self._loaded[id(engine)] = (key, engine.load(key.path, replace(key.options, loras=[]), progress=progress))
        status = engine.status
        assert status is not None
        wanted = [(str(p), float(s)) for p, s in loras]
        if [(str(p), float(s)) for p, s in status.loras] != wanted:
            engine.set_loras(wanted)  # keeps the model loaded; the status object is updated in place
        return engine, status

    def _pick(self, key: LoadKey, other: LoadKey | None) -> Engine:
        holder = self._holder(key)
        if holder is not None:
            return holder
        if self.plan != "both":
            return self.primary
        if self.second is None:
            self.second = Engine()
        if other is not None and self._holds(self.primary, other):
            return self.second
        return self.primary

    # -- control -------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the answer being generated (safe from any thread)."""
        for engine in (self.primary, self.second):
            if engine is not None:
                engine.cancel()

    def engines(self) -> list[Engine]:
        return [e for e in (self.primary, self.second) if e is not None]

    def release_second(self) -> None:
        """Stop the second engine now (the next comparison starts it again if its plan needs it)."""
        self._close_second()

    def _close_second(self) -> None:
        if self.second is not None:
            self._loaded.pop(id(self.second), None)
            self.second.close()
            self.second = None

    def close(self) -> None:
        """Stop the second engine (and the primary when it was made here)."""
        self._close_second()
        if self._own_primary:
            self.primary.close()
        self._loaded.clear()

    def describe(self) -> str:
        """The plan in a user's words (the CLI prints it, the window shows it under the columns)."""
        return PLAN_WORDS.get(self.plan, "")

    def __enter__(self) -> CompareEngines:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()


PLAN_WORDS = {
    "shared": "One model for both sides: only the adapter changes between them, no reload.",
    "both": "Both models stay loaded (they fit in memory together), so switching sides costs nothing.",
    "reload": "The two models do not fit in memory together: each side loads its model in turn.",
}
