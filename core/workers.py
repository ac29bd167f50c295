"""Other machines for inference: the user's registry of ``hearth rpc-worker`` endpoints.

A worker is another computer running llama.cpp's RPC server (``hearth rpc-worker``, see
``core.engine.rpc``). The registry lives in the settings file (``Settings.workers``); every place a chat
model loads goes through ``core.library.load_options_for``, which calls :func:`with_workers`, so the
chat, the window and the server split a model across the same enabled workers. ``HEARTH_WORKERS=off``
in the environment turns the workers off everywhere (loads and fit verdicts) without touching the list.

Functions that change the registry take an optional ``settings`` object: given one (the window's), they
change it in place and the caller saves it; without one they read the settings file and write it back.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import HearthError, NotFoundError

if TYPE_CHECKING:
    from core.engine.params import LoadOptions
    from core.engine.rpc import WorkerInfo
    from core.settings import Settings

ENV_SWITCH = "HEARTH_WORKERS"
PROBE_CACHE_SECONDS = 30.0  # Discover judges many quants in a row: one probe per worker serves them all
LOCAL_PLACE = "this computer"  # the name core.engine's ModelStatus.split gives this machine
# When a model loads across the workers (Settings.workers_use): "needed" only when it does not fit in this
# computer's free memory (a model that fits runs faster here than over the network), "always" for every model.
WORKER_USES: tuple[str, ...] = ("needed", "always")


@dataclass
class WorkerEntry:
    """One registered worker: its ``host:port``, an optional name the user gave it, and whether it is used."""

    endpoint: str
    name: str = ""
    enabled: bool = True

    @property
    def label(self) -> str:
        """The name when there is one, else the address."""
        return self.name or self.endpoint

    def to_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "name": self.name, "enabled": self.enabled}

    @classmethod
    def from_dict(cls, data: Any) -> WorkerEntry | None:
        """An entry read from the settings file, or None when it is damaged (no usable address)."""
        if not isinstance(data, dict) or not isinstance(data.get("endpoint"), str):
            return None
        try:
            endpoint = parse_endpoint(data["endpoint"])
        except HearthError:
            return None
        name = data.get("name")
        enabled = data.get("enabled")
        return cls(endpoint, name.strip() if isinstance(name, str) else "",
                   enabled if isinstance(enabled, bool) else True)


def parse_endpoint(text: str) -> str:
    """``host[:port]`` as ``host:port`` (``core.engine.rpc.parse_endpoint``); ``WorkerError`` when malformed."""
    from core.engine.rpc import parse_endpoint as parse

    return parse(text)


def workers_from_json(data: Any) -> list[WorkerEntry]:
    """The ``workers`` list of the settings file: damaged entries and repeated addresses are left out."""
    result: list[WorkerEntry] = []
    seen: set[str] = set()
    for item in data if isinstance(data, list) else []:
        entry = WorkerEntry.from_dict(item)
        if entry is not None and entry.endpoint not in seen:
            seen.add(entry.endpoint)
            result.append(entry)
    return result


def workers_switched_off() -> bool:
    """True when ``HEARTH_WORKERS=off`` (or 0/no/false) is set: no worker is used or counted."""
    return os.environ.get(ENV_SWITCH, "").strip().lower() in ("off", "0", "no", "false")


# -- the registry -------------------------------------------------------------------------------------
def _settings(settings: Settings | None) -> tuple[Settings, bool]:
    """The settings to change, and whether this module must save them (it read them itself)."""
    if settings is not None:
        return settings, False
    from core.settings import load_settings

    return load_settings(), True


def _save(settings: Settings, own: bool) -> None:
    if own:
        from core.settings import save_settings

        save_settings(settings)


def list_workers(settings: Settings | None = None) -> list[WorkerEntry]:
    """The registered workers, in the order they were added."""
    return list(_settings(settings)[0].workers)


def find_worker(endpoint_or_name: str, settings: Settings | None = None) -> WorkerEntry:
    """The worker with this name or address; ``NotFoundError`` saying which ones exist when there is none."""
    entries = list_workers(settings)
    text = endpoint_or_name.strip()
    for entry in entries:
        if entry.name and entry.name == text:
            return entry
    try:
        endpoint = parse_endpoint(text)
    except HearthError:
        endpoint = text
    for entry in entries:
        if entry.endpoint == endpoint:
            return entry
    known = ", ".join(e.label for e in entries)
    raise NotFoundError(f"No worker is named or at '{text}': "
                        + (f"the workers are {known}." if known else "add one with 'hearth workers add HOST:PORT'."))


def check_new_worker(endpoint: str, name: str = "", *, settings: Settings | None = None) -> str:
    """The address ``endpoint`` as ``host:port`` when it may be added under ``name``; ``WorkerError`` when the
    address is malformed or the name belongs to another worker."""
    from core.errors import WorkerError

    if not endpoint.strip():
        raise WorkerError("Type the other computer's address, e.g. 192.168.1.20:50052.")
    endpoint = parse_endpoint(endpoint)
    name = name.strip()
    for other in list_workers(settings):
        if name and other.name == name and other.endpoint != endpoint:
            raise WorkerError(f"The name '{name}' is taken by the worker at {other.endpoint}: pick another name.")
    return endpoint


def add_worker(endpoint: str, name: str = "", check: bool = True, *, settings: Settings | None = None,
               timeout: float = 5.0) -> WorkerInfo:
    """Register ``endpoint`` (``host[:port]``) under ``name``; returns what the worker reported.

    With ``check`` the worker is probed first and refused (``WorkerError``) when it does not answer;
    without it, it is added as it is (the result then has ``ok=False`` and no devices). Adding an address
    that is already registered updates its name and turns it on.
    """
    from core.engine.rpc import WorkerInfo, probe
    from core.errors import WorkerError

    target, own = _settings(settings)
    endpoint = check_new_worker(endpoint, name, settings=target)
    name = name.strip()
    info = probe(endpoint, timeout=timeout) if check else WorkerInfo(endpoint, False, [], "not checked")
    if check and not info.ok:
        raise WorkerError(f"{endpoint} does not answer: {why_not(info)}; or add it with --no-check to use it once "
                          "it runs.")
    for entry in target.workers:
        if entry.endpoint == endpoint:
            entry.name = name or entry.name
            entry.enabled = True
            break
    else:
        target.workers.append(WorkerEntry(endpoint, name))
    _save(target, own)
    forget_probes()
    return info


def remove_worker(endpoint_or_name: str, *, settings: Settings | None = None) -> WorkerEntry:
    """Unregister a worker by its name or address; returns the entry removed."""
    target, own = _settings(settings)
    entry = find_worker(endpoint_or_name, target)
    target.workers = [e for e in target.workers if e.endpoint != entry.endpoint]
    _save(target, own)
    forget_probes()
    return entry


def set_enabled(endpoint_or_name: str, enabled: bool, *, settings: Settings | None = None) -> WorkerEntry:
    """Turn a worker on (models load split onto it) or off (kept in the list, not used)."""
    target, own = _settings(settings)
    entry = find_worker(endpoint_or_name, target)
    entry.enabled = bool(enabled)
    _save(target, own)
    forget_probes()
    return entry


def enabled_workers(settings: Settings | None = None) -> list[WorkerEntry]:
    """The workers a model loads onto now: the enabled ones, none when ``HEARTH_WORKERS=off``."""
    if workers_switched_off():
        return []
    return [e for e in list_workers(settings) if e.enabled]


def with_workers(options: LoadOptions, settings: Settings | None = None, *, model: str | Path | None = None) -> LoadOptions:
    """``options`` with the enabled workers' endpoints in ``rpc_workers`` when the caller set none.

    Called by ``core.library.load_options_for``, so every chat load (terminal, window, server) splits the
    same way. Options that already name workers keep them; ``HEARTH_WORKERS=off`` adds none. With the
    default use "needed" (``Settings.workers_use``), a ``model`` that fits in this computer's free memory
    loads here alone: every token of a split model crosses the network.
    """
    if getattr(options, "rpc_workers", None) or options.embedding:
        return options
    try:
        own, _ = _settings(settings)
        endpoints = [e.endpoint for e in enabled_workers(own)]
    except HearthError:
        return options  # an unreadable settings file: load here alone (the window says why elsewhere)
    if not endpoints or (own.workers_use != "always" and model is not None and fits_here(model, options)):
        return options
    return replace(options, rpc_workers=endpoints)


def fits_here(model: str | Path, options: LoadOptions) -> bool:
    """Whether ``model`` at ``options``' context fits in this computer's available RAM (the part
    ``options`` offload to a GPU left out), by the same estimate as ``hearth fit``. A file whose header
    cannot be read counts as fitting: the engine then gives its own sentence about the file."""
    import psutil

    from core.fit.estimate import estimate_memory
    from core.fit.shape import ModelShape

    try:
        shape = ModelShape.from_gguf(model)
    except (HearthError, OSError, ValueError):
        return True
    from core.engine.params import GPU_LAYERS_AUTO

    layers = options.n_gpu_layers
    if layers == GPU_LAYERS_AUTO:  # what the engine will offload (core.fit.offload)
        from core.fit.offload import auto_gpu_layers

        layers = auto_gpu_layers(model, options)
    estimate = estimate_memory(shape, n_ctx=options.n_ctx, n_gpu_layers=layers,
                               flash_attn=options.flash_attn is not False)
    return bool(estimate.ram_bytes <= psutil.virtual_memory().available)


# -- asking the workers -------------------------------------------------------------------------------
_cache_lock = threading.Lock()
_cache: dict[str, tuple[float, WorkerInfo]] = {}


def forget_probes() -> None:
    """Drop the remembered probe results (after the list changed, or before a Check the user asked for)."""
    with _cache_lock:
        _cache.clear()


def probe_workers(entries: Sequence[WorkerEntry], *, timeout: float = 5.0,
                  max_age: float = 0.0) -> list[WorkerInfo]:
    """What each worker reports (device, free and total memory), in the order given; never raises for a
    worker that does not answer (its result says why). ``max_age`` reuses results that recent."""
    from core.engine.rpc import probe_many

    now = time.monotonic()
    with _cache_lock:
        fresh = {e.endpoint: hit[1] for e in entries
                 if max_age > 0 and (hit := _cache.get(e.endpoint)) and now - hit[0] <= max_age}
    todo = [e.endpoint for e in entries if e.endpoint not in fresh]
    if todo:
        found = probe_many(todo, timeout=timeout)
        with _cache_lock:
            for info in found:
                _cache[info.endpoint] = (time.monotonic(), info)
                fresh[info.endpoint] = info
    return [fresh[e.endpoint] for e in entries]


@dataclass(frozen=True)
class WorkerProbe:
    """The enabled workers that answered (for fit verdicts) and a sentence for each one left out."""

    answering: list[WorkerInfo]
    names: dict[str, str]  # endpoint -> the user's name for it
    left_out: list[str]


def probe_enabled(settings: Settings | None = None, *, timeout: float = 5.0,
                  max_age: float = PROBE_CACHE_SECONDS) -> WorkerProbe:
    """Probe the enabled workers (``hearth fit``, Discover): the ones that answer count in a fit verdict."""
    entries = enabled_workers(settings)
    infos = probe_workers(entries, timeout=timeout, max_age=max_age) if entries else []
    answering = [i for i in infos if i.ok]
    left_out = [f"{e.label} ({e.endpoint}) is left out: it does not answer ({why_not(i)})" if e.name
                else f"{e.endpoint} is left out: it does not answer ({why_not(i)})"
                for e, i in zip(entries, infos, strict=True) if not i.ok]
    return WorkerProbe(answering, {e.endpoint: e.name for e in entries if e.name}, left_out)


def device_words(info: WorkerInfo) -> str:
    """The devices a worker reports, e.g. "1 device" ("-" when it did not answer). llama.cpp's RPC carries
    no device names (the client names them RPC0, RPC1 … and describes them by the address), so a name is
    shown only where the description says more than the address."""
    described = [d.description for d in info.devices if d.description and d.description != info.endpoint]
    if described:
        return ", ".join(described)
    n = len(info.devices)
    return f"{n} device{'s' if n != 1 else ''}" if n else "-"


def why_not(info: WorkerInfo) -> str:
    """Why a worker cannot be used, as the middle of a sentence (the probe's sentence, lower-cased, no stop)."""
    text = info.error.strip().rstrip(".") or "no reply"
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def describe_split(split: Sequence[tuple[str, int]], names: Mapping[str, str] | None = None) -> str:
    """``ModelStatus.split`` in words: "split: this computer 10 layers + studio-pc 8 layers" ("" when local)."""
    if not split:
        return ""
    if names is None:
        try:
            names = {e.endpoint: e.name for e in list_workers() if e.name}
        except HearthError:
            names = {}
    parts = [f"{names.get(place, place)} {layers} layer{'s' if layers != 1 else ''}" for place, layers in split]
    return "split: " + " + ".join(parts)


def machines_for_fit(settings: Settings | None = None) -> WorkerProbe | None:
    """The enabled workers probed for a fit verdict (``hearth fit``, Discover), or None when there are none:
    then nothing is probed and verdicts are for this machine alone."""
    if not enabled_workers(settings):
        return None
    return probe_enabled(settings)
