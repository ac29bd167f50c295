"""One training process among several (torch.distributed): who it is, and the few collectives the trainer needs.

``Dist.from_env()`` reads what a launcher sets for each process it starts (torchrun, ``accelerate launch``:
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``; see
torch/distributed/run.py). Without them it is the single process (``world == 1``) and every collective
here is a no-op, so the trainer calls them unconditionally.

What runs where (the data-parallel split of DDP, written out so it fits Hearth's own loop): every rank
holds the whole model and the same trainable weights (broadcast from rank 0 at the start, as DDP's
constructor does); each optimizer step's rows are shared out among the ranks; each rank's loss is its rows'
summed NLL divided by the whole step's count of trained tokens, so after an all-reduce (SUM) of the
gradients every rank holds the gradient of the same loss one process would have computed, clips it the
same way and takes the same step. Rank 0 alone speaks (events), measures, checkpoints and saves.
Under accelerate's FSDP config the model is sharded instead (``core.finetune.sharding``): FSDP reduces the
gradients it owns, and every rank takes part in every forward (measuring too); rank 0 still writes alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from core.errors import TrainingError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

# A collective that waits this long for the other processes means one of them is stuck: fail, don't hang.
COLLECTIVE_TIMEOUT = timedelta(minutes=5)
# Waits while rank 0 alone works (measuring the base model, a checkpoint, the held-out loss) can be long
# on a big model; they run on their own group with a generous timeout. A rank that dies ends them at
# once (the launcher stops every process), and a dead parent job is noticed by the rank's watcher.
PATIENT_TIMEOUT = timedelta(hours=24)
BUCKET_ELEMENTS = 32 * 1024 * 1024  # gradients are summed in flat buckets of at most this many values


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class Dist:
    """This process's place among the training processes (``world == 1``: alone, nothing to talk to)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    backend: str = ""  # "gloo" or "nccl" once ``init`` has joined the group, "" before

    @classmethod
    def from_env(cls) -> Dist:
        """The place torchrun / accelerate gave this process (the single process when none did)."""
        world = _env_int("WORLD_SIZE", 1)
        if world <= 1 or "RANK" not in os.environ:
            return cls()
        local_world = _env_int("LOCAL_WORLD_SIZE", world)
        return cls(rank=_env_int("RANK", 0), world=world, local_rank=_env_int("LOCAL_RANK", 0),
                   local_world=local_world)

    @property
    def main(self) -> bool:
        """Rank 0: the process that speaks, measures and saves."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def describe(self) -> str:
        return f"process {self.rank + 1} of {self.world} (rank {self.rank})"

    # -- joining -----------------------------------------------------------------------------------
    def init(self, device_type: str) -> Dist:
        """Join the process group: NCCL for CUDA, gloo on the CPU; returns this place with its backend."""
        if not self.enabled or self.backend:
            return self
        import torch
        import torch.distributed as dist

        if device_type == "mps":
            raise TrainingError("Several processes cannot share Apple's GPU (MPS): use --nproc 1, or --device cpu.")
        backend = "nccl" if device_type == "cuda" else "gloo"
        if backend == "nccl":
            if self.local_rank >= torch.cuda.device_count():
                raise TrainingError(f"{self.local_world} processes on this machine need {self.local_world} GPUs, and "
                                    f"it has {torch.cuda.device_count()}: use --nproc {torch.cuda.device_count()}.")
            torch.cuda.set_device(self.local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
        # Barriers while rank 0 works alone: gloo (no GPU spinning) with a long timeout.
        _PATIENT[0] = dist.new_group(backend="gloo", timeout=PATIENT_TIMEOUT)
        return dataclasses.replace(self, backend=backend)

    def close(self) -> None:
        if self.backend:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def device(self, device_type: str) -> torch.device:
        """The torch device this process trains on: its own GPU (``cuda:LOCAL_RANK``) among several."""
        import torch

        if device_type == "cuda" and self.enabled:
            return torch.device("cuda", self.local_rank)
        return torch.device(device_type)

    # -- collectives (no-ops alone) ----------------------------------------------------------------
    def broadcast(self, value: T | None) -> T:
        """Rank 0's ``value`` on every rank (any picklable object; the other ranks pass ``None``)."""
        if not self.enabled:
            assert value is not None
            return value
        import torch.distributed as dist

        box: list[Any] = [value if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[no-any-return]

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's yes/no on every rank."""
        return bool(self.broadcast(bool(flag)))

    def barrier(self) -> None:
        """Wait for every rank, however long rank 0 works alone (measuring, saving) before it arrives."""
        if not self.enabled:
            return
        import torch.distributed as dist

        dist.barrier(group=_PATIENT[0])

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the ranks, in place."""
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_reduce_grads(self, params: Sequence[torch.Tensor], extras: Sequence[float] = ()) -> list[float]:
        """Sum every parameter's gradient over the ranks (in flat buckets), and ``extras`` with the first.

        A parameter with no gradient on this rank (it got no rows this step) counts as zeros. Returns
        the summed ``extras`` (the step's loss, a stop request): one collective carries both.
        """
        if not self.enabled:
            return list(extras)
        import torch

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        for p, g in zip(params, grads, strict=True):
            if p.grad is None:
                p.grad = g
        device = grads[0].device if grads else torch.device("cpu")
        summed: list[float] = []
        for index, bucket in enumerate(_buckets(grads)):
            parts = [g.reshape(-1).float() for g in bucket]
            if index == 0:
                parts.append(torch.tensor(list(extras), dtype=torch.float32, device=device))
            flat = self.all_reduce(torch.cat(parts))
            offset = 0
            for g in bucket:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()
            if index == 0:
                summed = [float(x) for x in flat[offset:].tolist()]
        # No gradient of its own to sum (FSDP reduced them all): the extras alone, on the backend's device.
        return summed if grads else [float(x) for x in self.all_reduce(
            torch.tensor(list(extras), dtype=torch.float32, device=self._wire())).tolist()]

    def _wire(self) -> torch.device:
        """Where this backend's collectives take tensors: NCCL only from this rank's GPU, gloo from the CPU."""
        import torch

        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def sync_parameters(self, params: Iterable[torch.Tensor]) -> None:
        """Every rank starts from rank 0's values of ``params`` (the trainable weights), as DDP does."""
        if not self.enabled:
            return
        import torch.distributed as dist

        wire = self._wire()
        for p in params:
            if p.device == wire:
                dist.broadcast(p.data, src=0)
            else:  # weights still in RAM (to be sharded onto the GPUs) travel through the GPU under NCCL
                moved = p.data.to(wire)
                dist.broadcast(moved, src=0)
                p.data.copy_(moved)

    def check_same(self, fingerprint: str, what: str) -> None:
        """Refuse to train when a rank's ``fingerprint`` of ``what`` differs from rank 0's."""
        if not self.enabled:
            return
        import torch.distributed as dist

        seen: list[Any] = [None] * self.world
        dist.all_gather_object(seen, fingerprint)
        for rank, other in enumerate(seen):
            if other != seen[0]:
                raise TrainingError(f"Process {rank + 1} of {self.world} (rank {rank}) loaded a different {what} than "
                                    f"rank 0: give every machine the same files, then start again.")

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's contiguous share of ``items`` (sizes differ by at most one; the last ranks may get none)."""
        if not self.enabled:
            return list(items)
        size, extra = divmod(len(items), self.world)
        start = self.rank * size + min(self.rank, extra)
        return list(items[start : start + size + (1 if self.rank < extra else 0)])


_PATIENT: list[Any] = [None]


def _buckets(grads: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    buckets: list[list[torch.Tensor]] = [[]]
    count = 0
    for g in grads:
        if buckets[-1] and count + g.numel() > BUCKET_ELEMENTS:
            buckets.append([])
            count = 0
        buckets[-1].append(g)
        count += g.numel()
    return buckets if buckets[0] else []


def model_fingerprint(model: Any) -> str:
    """A cheap fingerprint of a model's frozen weights: names, shapes and the first values of a few tensors.

    Ranks on other machines load the base from their own disks; a different file would train wrongly
    without a word, so ``Dist.check_same`` compares this before training.
    """
    digest = hashlib.sha256()
    frozen = [(name, p) for name, p in model.named_parameters() if not p.requires_grad]
    for name, p in frozen:
        digest.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
    for _name, p in [*frozen[:3], *frozen[-3:]]:
        digest.update(pickle.dumps(p.detach().reshape(-1)[:4096].float().cpu().tolist()))
    return digest.hexdigest()
