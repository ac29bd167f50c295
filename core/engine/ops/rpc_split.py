"""A model split across this machine and RPC workers: which device holds which layers.

llama.cpp decides it in ``llama_model_base::load_tensors`` (src/llama-model.cpp): the last
``n_gpu_layers`` "layers" (the repeating ones plus the output layer) go to the model's devices, cut at
the running sums of ``tensor_split`` (or of the devices' free memory); the rest, and the input layer,
stay on the CPU. The engine passes the devices itself (``llama_model_params.devices``, a NULL-terminated
array; src/llama.cpp ``llama_prepare_model_devices``), so only the workers asked for are used:
- this machine on its CPU: devices = the workers' devices, ``n_gpu_layers`` = their layers + 1;
- this machine with a GPU (``LoadOptions.n_gpu_layers`` != 0): devices = local GPUs + the workers',
  everything offloaded, ``tensor_split`` carrying this machine's share too.
:func:`assign_layers` repeats llama.cpp's arithmetic (in float32, as it does) so ``ModelStatus.split``
says what llama.cpp did.
"""

from __future__ import annotations

import ctypes
import math
import os
import struct
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

from core.engine.ops.base import RequestError
from core.engine.params import LoadOptions
from core.errors import WorkerError

THIS_MACHINE = "this computer"


def _f32(x: float) -> float:
    return float(struct.unpack("f", struct.pack("f", x))[0])


def assign_layers(n_layer: int, n_gpu_layers: int, weights: list[float]) -> tuple[int, list[int]]:
    """(repeating layers on the CPU, repeating layers per device) as llama.cpp assigns them.

    ``weights``: ``tensor_split`` per device (any scale). Mirrors ``load_tensors``: ``i_gpu_start =
    n_layer + 1 - n_gpu_layers``, and layer ``il`` goes to the first device whose cumulative share exceeds
    ``(il - i_gpu_start) / act_gpu_layers``.
    """
    n_dev = len(weights)
    counts = [0] * n_dev
    if n_dev == 0:
        return n_layer, counts
    cum: list[float] = []
    total = 0.0
    for w in weights:
        total = _f32(total + _f32(w))
        cum.append(total)
    if total <= 0:  # llama.cpp would divide by zero; the callers never pass all zeros
        raise ValueError("weights must not all be zero")
    cum = [_f32(c / total) for c in cum]
    i_gpu_start = max(n_layer + 1 - n_gpu_layers, 0)
    act = min(n_gpu_layers, n_layer + 1)
    cpu = 0
    for il in range(n_layer):
        if il < i_gpu_start or il - i_gpu_start >= act:
            cpu += 1
            continue
        fraction = _f32(float(il - i_gpu_start) / act)
        counts[min(bisect_right(cum, fraction), n_dev - 1)] += 1
    return cpu, counts


@dataclass
class Place:
    """This machine or one worker: its devices (ggml handles; none for this machine's CPU) and free memory."""

    name: str
    devices: list[int] = field(default_factory=list)
    free: list[int] = field(default_factory=list)  # per device; this machine's CPU: one entry, free RAM

    @property
    def free_bytes(self) -> int:
        return sum(self.free)


@dataclass
class SplitPlan:
    devices: list[int]  # for llama_model_params.devices, in order
    tensor_split: list[float]  # per device
    n_gpu_layers: int
    split: list[tuple[str, int]]  # (place, repeating layers) for ModelStatus.split


def _shares(places: list[Place], wanted: list[float] | None) -> list[float]:
    if wanted is None:
        shares = [float(p.free_bytes) for p in places]
        return shares if sum(shares) > 0 else [1.0] * len(places)
    if len(wanted) != len(places):
        raise RequestError("bad_request", f"tensor_split needs one share per place ({len(places)}: this machine, "
                           f"then each worker in order), not {len(wanted)}.")
    if any(not math.isfinite(s) or s < 0 for s in wanted) or sum(wanted) <= 0:
        raise RequestError("bad_request", "tensor_split shares must be numbers of zero or more, not all zero.")
    return [float(s) for s in wanted]


def _per_device(share: float, place: Place) -> list[float]:
    """A place's share spread over its devices by their free memory (equally when they report none)."""
    total = place.free_bytes
    if total <= 0:
        return [share / len(place.devices)] * len(place.devices)
    return [share * f / total for f in place.free]


def plan_split(n_layer: int, local: Place, workers: list[Place], wanted: list[float] | None = None) -> SplitPlan:
    """Where each layer goes: ``local`` (with devices: its GPUs) first, then the workers, by ``wanted``
    shares (``LoadOptions.tensor_split``) or by free memory."""
    places = [local, *workers]
    shares = _shares(places, wanted)
    total = sum(shares)
    remote = [d for w in workers for d in w.devices]
    weights = [x for w, s in zip(workers, shares[1:], strict=True) for x in _per_device(s, w)]
    if local.devices:  # this machine's GPUs take part: everything is offloaded, this machine's share included
        devices = local.devices + remote
        weights = _per_device(shares[0], local) + weights
        n_gpu_layers = n_layer + 1
    else:
        local_layers = round(n_layer * shares[0] / total)
        if sum(shares[1:]) > 0:
            local_layers = min(local_layers, n_layer - 1)  # the workers were asked for: they get a layer at least
        remote_layers = n_layer - local_layers
        devices = remote
        n_gpu_layers = remote_layers + 1 if remote_layers > 0 else 0  # + 1: the output layer goes last
        if sum(weights) <= 0:
            weights = [1.0] * len(remote)
    cpu, counts = assign_layers(n_layer, n_gpu_layers, weights) if devices else (n_layer, [])
    split = [(THIS_MACHINE, cpu + sum(counts[: len(local.devices)]))]
    start = len(local.devices)
    for worker in workers:
        split.append((worker.name, sum(counts[start : start + len(worker.devices)])))
        start += len(worker.devices)
    return SplitPlan(devices, weights, n_gpu_layers, split)


def configure(mparams: Any, opts: LoadOptions, path: str) -> tuple[list[Any], list[tuple[str, int]]]:
    """Set ``mparams``' devices, split and offload for ``opts.rpc_workers``; returns the ctypes arrays to keep
    alive while the model loads, and the split to report (empty when nothing is split).

    Each worker is probed first (in a child process: ggml aborts a process whose worker does not answer);
    one that cannot be used fails the load with ``WorkerError``'s sentence.
    """
    import llama_cpp as L

    from core.engine import rpc

    if not opts.cpu_repack or opts.rpc_workers:
        # A worker's RPC server keeps weights in plain buffers (it allocates with the backend's default buffer
        # type), and llama.cpp's repacked CPU kernels round differently: a split load computes alike everywhere.
        mparams.use_extra_bufts = False
    if not opts.rpc_workers:
        if not rpc.added_endpoints():
            return [], []
        # Workers added by an earlier load stay in ggml's registry, and llama.cpp's default device list would
        # use them: name this machine's devices instead.
        gpus = rpc.ggml().local_gpus()
        own = (ctypes.c_void_p * (len(gpus) + 1))(*gpus, None)
        mparams.devices = ctypes.cast(own, ctypes.c_void_p)
        return [own], []
    # A worker that goes away makes ggml abort this process (the client says which one); without this, ggml
    # would print a debugger's backtrace of an expected event into the user's terminal.
    os.environ["GGML_NO_BACKTRACE"] = "1"
    try:
        endpoints = [rpc.parse_endpoint(e) for e in opts.rpc_workers]
        api = rpc.ggml()
        api.rpc_reg()
    except WorkerError as exc:
        raise RequestError("worker", str(exc)) from exc
    if len(set(endpoints)) != len(endpoints):
        raise RequestError("worker", "A worker is listed twice: list each `hearth rpc-worker` once.")
    infos = rpc.probe_many(endpoints)
    failed = [i for i in infos if not i.ok]
    if failed:
        raise RequestError("worker", " ".join(f"Cannot use the worker {i.endpoint}: {i.error}" for i in failed))
    workers = []
    for info in infos:
        try:
            devices = rpc.server_devices(info.endpoint)
        except WorkerError as exc:
            raise RequestError("worker", str(exc)) from exc
        workers.append(Place(info.endpoint, devices, [d.free_bytes for d in info.devices][: len(devices)]))
    gpus = api.local_gpus() if opts.n_gpu_layers != 0 else []
    free = [api.device(d).free_bytes for d in gpus] if gpus else [api.device(api.cpu()).free_bytes]
    local = Place(THIS_MACHINE, gpus, free)
    from core.library.gguf_meta import read_gguf_info

    n_layer = read_gguf_info(path).block_count or 0
    if n_layer <= 0:
        raise RequestError("load_failed", f"{path} does not say how many layers it has, so it cannot be split.")
    plan = plan_split(n_layer, local, workers, opts.tensor_split)
    n_max = int(L.llama_max_devices())
    if len(plan.devices) > n_max:
        raise RequestError("worker", f"llama.cpp splits a model over {n_max} devices at most: use fewer workers.")
    device_array = (ctypes.c_void_p * (len(plan.devices) + 1))(*plan.devices, None)  # NULL-terminated
    split_array = (ctypes.c_float * n_max)(*plan.tensor_split)  # llama.cpp copies llama_max_devices() floats
    mparams.devices = ctypes.cast(device_array, ctypes.c_void_p)
    mparams.tensor_split = ctypes.cast(split_array, ctypes.POINTER(ctypes.c_float))
    mparams.n_gpu_layers = plan.n_gpu_layers
    return [device_array, split_array], plan.split
