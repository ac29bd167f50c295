"""Will a model run here, and how: all on the GPU, split, on the CPU, or not at all."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from core.fit.estimate import MemoryEstimate, estimate_memory
from core.fit.shape import ModelShape
from core.hardware import GPU, Hardware
from core.units import human_size

if TYPE_CHECKING:
    from core.engine.rpc import WorkerInfo

# "across_machines": too large for this machine alone, fits split with the user's workers (core.workers).
FitKind = Literal["full_gpu", "partial_gpu", "cpu", "across_machines", "too_large"]
GB = 1e9


def gb(n: float) -> str:
    return f"{n / GB:.1f} GB"


@dataclass(frozen=True)
class FitVerdict:
    """The verdict for one model at one context size, with the reason in words."""

    kind: FitKind
    gpu_layers: int  # layers to offload (n_layer + 1 = every layer and the output layer)
    reason: str
    total_bytes: int
    estimate: MemoryEstimate

    @property
    def fits(self) -> bool:
        return self.kind != "too_large"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "gpu_layers": self.gpu_layers,
            "reason": self.reason,
            "total_bytes": self.total_bytes,
            "estimate": self.estimate.to_dict(),
        }


def _best_gpu(hardware: Hardware) -> GPU | None:
    gpus = hardware.usable_gpus
    return max(gpus, key=lambda g: g.free_bytes) if gpus else None


def assess(
    shape: ModelShape,
    hardware: Hardware | None = None,
    *,
    n_ctx: int = 4096,
    gpu_layers: int | None = None,
    workers: Sequence[WorkerInfo] = (),
    worker_names: Mapping[str, str] | None = None,
    **options: Any,
) -> FitVerdict:
    """Decide how ``shape`` runs on ``hardware`` (detected when None) at ``n_ctx`` tokens.

    ``gpu_layers`` fixes the offload instead of choosing the most that fits; ``options`` go to
    :func:`estimate_memory` (``cache_type_k``, ``swa_full``, ``weight_bytes`` …). One GPU is used:
    the one with the most free memory. A shape with a vision projector counts it, and the reason says so.
    ``workers`` (``core.engine.rpc.probe`` results, ``core.workers.probe_enabled``) count when the model is
    too large for this machine alone: the verdict is then "across_machines"; ``worker_names`` maps their
    endpoints to the user's names for the reason.
    """
    verdict = _assess(shape, hardware, n_ctx=n_ctx, gpu_layers=gpu_layers, workers=workers,
                      worker_names=worker_names, **options)
    projector = shape.projector
    if projector is None:
        return verdict
    compute = projector.compute_bytes
    note = (
        f" This includes the vision projector{f' {projector.name}' if projector.name else ''}: "
        f"{human_size(projector.weight_bytes)} of weights and about {human_size(compute)} to encode an image."
    )
    return replace(verdict, reason=verdict.reason + note)


def _assess(
    shape: ModelShape,
    hardware: Hardware | None = None,
    *,
    n_ctx: int = 4096,
    gpu_layers: int | None = None,
    workers: Sequence[WorkerInfo] = (),
    worker_names: Mapping[str, str] | None = None,
    **options: Any,
) -> FitVerdict:
    """:func:`assess` without the projector's note."""
    if hardware is None:
        from core.hardware import detect_hardware

        hardware = detect_hardware()
    gpu = _best_gpu(hardware)
    ram = hardware.ram_available_bytes
    n_full = shape.n_layer + 1

    def est(layers: int) -> MemoryEstimate:
        return estimate_memory(
            shape,
            n_ctx=n_ctx,
            n_gpu_layers=layers,
            gpu_vendor=gpu.vendor if gpu else None,
            unified=bool(gpu and gpu.unified),
            **options,
        )

    def gpu_ok(e: MemoryEstimate) -> bool:
        return gpu is not None and e.gpu_bytes <= gpu.free_bytes

    def ram_ok(e: MemoryEstimate) -> bool:
        return e.ram_bytes <= ram

    if gpu_layers is not None:
        return _fixed(est(gpu_layers if gpu else 0), gpu, ram, hardware)

    if gpu is not None:
        full = est(n_full)
        if gpu_ok(full) and ram_ok(full):
            return FitVerdict(
                "full_gpu",
                n_full,
                f"All {shape.n_layer} layers fit on the {gpu.name}: {gb(full.gpu_bytes)} of its "
                f"{gb(gpu.free_bytes)} free, plus {gb(full.cpu_bytes)} of RAM.",
                full.total_bytes,
                full,
            )
        # The most layers whose GPU part fits (GPU bytes grow with every layer offloaded).
        lo, hi = 0, shape.n_layer
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if gpu_ok(est(mid)):
                lo = mid
            else:
                hi = mid - 1
        if lo > 0:
            part = est(lo)
            if ram_ok(part):
                return FitVerdict(
                    "partial_gpu",
                    lo,
                    f"{lo} of {n_full} layers fit on the {gpu.name} ({gb(part.gpu_bytes)} of "
                    f"{gb(gpu.free_bytes)} free); the rest runs on the CPU from {gb(part.cpu_bytes)} of "
                    "RAM, which is slower than a full offload.",
                    part.total_bytes,
                    part,
                )
    cpu = est(0)
    why_not_gpu = _why_not_gpu(hardware, gpu)
    if cpu.ram_bytes <= ram:
        return FitVerdict(
            "cpu",
            0,
            f"Runs on the CPU: needs {gb(cpu.ram_bytes)} of the {gb(ram)} of RAM available. {why_not_gpu}".strip(),
            cpu.total_bytes,
            cpu,
        )
    if workers:
        from core.fit.across import across_machines, across_reason

        found = across_machines(est, n_full, ram, gpu, workers, worker_names)
        if found is not None:
            full, places = found
            return FitVerdict("across_machines", 0, across_reason(full, places), full.total_bytes, full)
    return FitVerdict(
        "too_large",
        0,
        f"Does not fit: needs about {gb(cpu.ram_bytes)} but only {gb(ram)} of RAM is available"
        + (f" and {gb(gpu.free_bytes)} on the {gpu.name}" if gpu else "")
        + (", and the other machines' free memory is not enough either" if any(w.ok for w in workers) else "")
        + ". Pick a smaller quant or model, or a shorter context.",
        cpu.total_bytes,
        cpu,
    )


def _why_not_gpu(hardware: Hardware, gpu: GPU | None) -> str:
    if gpu is not None:
        return f"Not even one layer fits in the {gb(gpu.free_bytes)} free on the {gpu.name}."
    if hardware.gpus and not hardware.llama.gpu_offload:
        if "Vulkan" in hardware.llama.backends:
            return "llama.cpp's Vulkan backend found no GPU to run on: install or update the GPU's Vulkan driver."
        return "The installed llama.cpp is built for the CPU only, so the GPU is not used."
    return "No GPU to offload to."


def _fixed(e: MemoryEstimate, gpu: GPU | None, ram: int, hardware: Hardware) -> FitVerdict:
    """The verdict for an offload the user chose."""
    if gpu is not None and e.n_gpu_layers > 0 and e.gpu_bytes > gpu.free_bytes:
        return FitVerdict(
            "too_large",
            e.n_gpu_layers,
            f"{e.n_gpu_layers} layers need {gb(e.gpu_bytes)} on the {gpu.name} but {gb(gpu.free_bytes)} "
            "is free: offload fewer layers.",
            e.total_bytes,
            e,
        )
    if e.ram_bytes > ram:
        return FitVerdict(
            "too_large",
            e.n_gpu_layers,
            f"Needs {gb(e.ram_bytes)} of RAM but {gb(ram)} is available: offload more layers, pick a "
            "smaller quant or a shorter context.",
            e.total_bytes,
            e,
        )
    if e.n_gpu_layers == 0:
        return FitVerdict(
            "cpu",
            0,
            f"Runs on the CPU with {gb(e.ram_bytes)} of RAM. {_why_not_gpu(hardware, gpu)}".strip(),
            e.total_bytes,
            e,
        )
    kind: FitKind = "full_gpu" if e.n_gpu_layers > e.n_layer else "partial_gpu"
    where = gpu.name if gpu else "GPU"
    return FitVerdict(
        kind,
        e.n_gpu_layers,
        f"{min(e.n_gpu_layers, e.n_layer + 1)} of {e.n_layer + 1} layers on the {where} ({gb(e.gpu_bytes)}), "
        f"{gb(e.cpu_bytes)} of RAM.",
        e.total_bytes,
        e,
    )
