"""What the engine's client remembers about the other machines a model uses, and what it does when one goes.

ggml aborts the engine's worker process when an RPC worker stops answering (``RPC_STATUS_ASSERT`` in
ggml/src/ggml-rpc/ggml-rpc.cpp). The client then finds, with a plain TCP connect, which workers are
gone, raises ``WorkerLostError`` naming them, and loads the same model on what is left at the next
request (same options and adapters, without the lost workers; this machine alone when none is left).
Callers that load the model themselves after a crash (the window, the server) get the same: a load that
names a lost worker that still does not answer leaves it out.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from core.engine.params import LoadOptions, ModelStatus
from core.errors import EngineCrashedError, HearthError, WorkerError, WorkerLostError

if TYPE_CHECKING:
    from core.engine.client import Engine


def _names(endpoints: list[str]) -> str:
    if len(endpoints) == 1:
        return f"the other machine {endpoints[0]}"
    return "the other machines " + ", ".join(endpoints[:-1]) + " and " + endpoints[-1]


def without(options: LoadOptions, gone: set[str]) -> LoadOptions:
    """``options`` without the workers in ``gone`` (and their ``tensor_split`` shares)."""
    from core.engine.rpc import parse_endpoint

    keep = [i for i, e in enumerate(options.rpc_workers) if parse_endpoint(e) not in gone]
    split = options.tensor_split
    if split is not None:
        split = [split[0], *(split[i + 1] for i in keep)] if len(split) == len(options.rpc_workers) + 1 else None
    workers = [options.rpc_workers[i] for i in keep]
    return replace(options, rpc_workers=workers, tensor_split=split if workers else None)


@dataclass
class WorkerState:
    in_use: list[str] = field(default_factory=list)  # the workers of the model loaded (or loading)
    process_endpoints: set[str] = field(default_factory=set)  # added to the engine process's ggml registry
    lost: set[str] = field(default_factory=set)  # went away during a request, left out while they do not answer
    reload: tuple[str, LoadOptions] | None = None  # the load to do at the next request, after a loss

    def before_load(self, options: LoadOptions) -> LoadOptions:
        """``options`` minus the lost workers that still do not answer (one that answers again is used)."""
        from core.engine.rpc import parse_endpoint, tcp_check

        self.reload = None
        if not options.rpc_workers or not self.lost:
            return options
        gone = set()
        for endpoint in options.rpc_workers:
            normal = parse_endpoint(endpoint)
            if normal in self.lost:
                if tcp_check(normal):
                    gone.add(normal)
                else:
                    self.lost.discard(normal)
        return without(options, gone) if gone else options

    def needs_new_process(self, options: LoadOptions) -> bool:
        """Whether the engine process has workers in its registry that this load does not use."""
        from core.engine.rpc import parse_endpoint

        return bool(self.process_endpoints - {parse_endpoint(e) for e in options.rpc_workers})

    def loading(self, options: LoadOptions) -> None:
        from core.engine.rpc import parse_endpoint

        self.in_use = [parse_endpoint(e) for e in options.rpc_workers]
        self.process_endpoints |= set(self.in_use)

    def forget(self) -> None:
        self.in_use, self.reload = [], None

    def take_reload(self) -> tuple[str, LoadOptions] | None:
        reload, self.reload = self.reload, None
        return reload

    def raise_if_lost(self, load_request: tuple[str, LoadOptions] | None, status: ModelStatus | None) -> None:
        """After the engine process died: raise ``WorkerLostError`` when workers in use no longer answer."""
        from core.engine.rpc import tcp_check

        if not self.in_use:
            return
        lost = [endpoint for endpoint in self.in_use if tcp_check(endpoint)]
        self.in_use = []
        if not lost:
            return
        self.lost |= set(lost)
        left = "what is left"
        if load_request is not None:
            path, options = load_request
            options = without(options, set(lost))
            if status is not None:  # the adapters as they were when it stopped (set_loras may have changed them)
                options = replace(options, loras=[(str(p), float(s)) for p, s in status.loras])
            self.reload = (path, options)
            left = "what is left" if options.rpc_workers else "this computer alone"
        doing = "The answer stopped" if status is not None else "Loading the model stopped"
        raise WorkerLostError(
            f"{doing}: {_names(lost)} stopped answering. Hearth will load the model on {left} for the next "
            f"message; start `hearth rpc-worker` there again to use it.", lost)


def reload_on_what_is_left(engine: Engine, path: str, options: LoadOptions) -> None:
    """Load ``path`` again after a worker was lost; a sentence saying what to do when it does not fit."""
    try:
        engine.load(path, options)
    except EngineCrashedError:
        raise
    except HearthError as exc:
        gone = sorted(engine.workers.lost)
        raise WorkerError(
            f"The model did not load again without {', '.join(gone)}: {str(exc).rstrip('.')}. Start `hearth "
            "rpc-worker` there again and load the model, or pick a smaller one.") from exc
