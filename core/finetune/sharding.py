"""FSDP sharding of a training model, as the exported accelerate config asks for it.

``accelerate launch`` with ``distributed_type: FSDP`` sets ``ACCELERATE_USE_FSDP=true`` and ``FSDP_*``
variables in every process (``accelerate/utils/launch.py``, ``prepare_multi_gpu_env``). ``settings_from_env``
reads them as accelerate's ``FullyShardedDataParallelPlugin`` does; ``shard_model`` applies PyTorch's
FSDP2 (``torch.distributed.fsdp.fully_shard``: per-parameter sharding, so a frozen 16-bit base and fp32
adapter weights shard side by side) to every decoder layer, then to the whole model; ``full_state_dict``
gathers the weights whole on rank 0 (a collective: every rank calls it) so an adapter saves as usual.
``core.finetune.job`` uses the rest when accelerate asks for FSDP: ``save_prepared`` (the method's result,
gathered), ``checkpoint_state``/``load_checkpoint_state`` (a checkpoint keyed by name, whole), and
``clip_grad_norm`` (the norm over every rank's shards).

Gradients are summed over the ranks, not averaged (``set_gradient_divide_factor(1)``): Hearth's ranks
divide each loss by the whole step's token count (``core.finetune.distributed``), so a sum is the
gradient one process would have computed. Runs in training processes only (torch).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import TrainingError


def _true(value: str | None) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


def fsdp_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the launcher asked for FSDP (``ACCELERATE_USE_FSDP``, set by ``accelerate launch``)."""
    return _true((os.environ if environ is None else environ).get("ACCELERATE_USE_FSDP"))


@dataclass(frozen=True)
class ShardSettings:
    """What the accelerate config says about sharding (the ``FSDP_*`` variables)."""

    layer_classes: tuple[str, ...]  # FSDP_TRANSFORMER_CLS_TO_WRAP: one shard unit per such module
    min_params: int  # FSDP_MIN_NUM_PARAMS, for SIZE_BASED_WRAP (no layer class known)
    reshard_after_forward: bool  # FULL_SHARD (True) or SHARD_GRAD_OP (False)
    activation_checkpointing: bool
    version: int


def settings_from_env(environ: Mapping[str, str] | None = None) -> ShardSettings:
    """The sharding the launcher asked for; ``TrainingError`` for FSDP1, which Hearth does not shard with."""
    env = os.environ if environ is None else environ
    version = int(env.get("FSDP_VERSION", "1") or 1)
    if version != 2:
        raise TrainingError("This accelerate config asks for FSDP version 1; Hearth shards with FSDP2: set "
                            "fsdp_version: 2 in accelerate.yaml, or export the launch again.")
    policy = str(env.get("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP")).upper()
    classes = tuple(c.strip() for c in str(env.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "")).split(",") if c.strip())
    reshard = str(env.get("FSDP_RESHARD_AFTER_FORWARD", "true")).strip().upper()
    return ShardSettings(
        layer_classes=classes if policy == "TRANSFORMER_BASED_WRAP" else (),
        min_params=int(env.get("FSDP_MIN_NUM_PARAMS", "0") or 0) if policy == "SIZE_BASED_WRAP" else 0,
        reshard_after_forward=reshard in ("TRUE", "1", "FULL_SHARD", "HYBRID_SHARD"),
        activation_checkpointing=_true(env.get("FSDP_ACTIVATION_CHECKPOINTING")),
        version=version,
    )


def shard_model(model: Any, settings: ShardSettings) -> Any:
    """Shard ``model`` in place over the process group: each decoder layer, then the whole; returns it.

    Call after the method has added its trainable weights and before the optimizer is built (the
    optimizer must see the sharded parameters). ``TrainingError`` when the config names a layer class
    this model does not have (a config exported for another model).
    """
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    if not dist.is_initialized():
        raise TrainingError("FSDP needs the training processes' group: start them with accelerate launch or torchrun.")
    def is_unit(module: Any) -> bool:
        if settings.layer_classes:
            return type(module).__name__ in settings.layer_classes
        # SIZE_BASED_WRAP: the leaf modules holding at least min_params weights each
        return bool(settings.min_params) and module is not model and not list(module.children()) and sum(
            p.numel() for p in module.parameters()) >= settings.min_params

    units = [module for module in model.modules() if is_unit(module)]
    if settings.layer_classes and not units:
        raise TrainingError(f"The accelerate config shards {', '.join(settings.layer_classes)} layers, which this model "
                            "does not have: export the launch again for this model.")
    for module in units:
        fully_shard(module, reshard_after_forward=settings.reshard_after_forward)
    fully_shard(model, reshard_after_forward=settings.reshard_after_forward)
    for module in [*units, model]:
        module.set_gradient_divide_factor(1.0)  # a sum over the ranks: see the module's docstring
        # Plain SUM collectives: gloo has no PREMUL_SUM, and NCCL's zero-copy transfers want SUM too.
        module.set_force_sum_reduction_for_comms(True)
    if callable(getattr(model, "generate", None)):
        # generate() runs the inner model's forward, not the root's: without this the root's own weights
        # (embeddings, output layer) would stay sharded (torch.distributed.fsdp.register_fsdp_forward_method).
        from torch.distributed.fsdp import register_fsdp_forward_method

        register_fsdp_forward_method(model, "generate")
    return model


def full_state_dict(model: Any, *, trainable_only: bool = True) -> dict[str, Any]:
    """The model's weights gathered whole on CPU (on rank 0; the others get an empty dict). Every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if trainable_only:
        wanted = {name for name, p in model.named_parameters() if p.requires_grad}
        state = {k: v for k, v in state.items() if k in wanted}
    return dict(state)


def is_sharded(tensor: Any) -> bool:
    """Whether ``tensor`` is a parameter FSDP2 sharded (a DTensor): its gradient is reduced by FSDP itself."""
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def gather_trainable(model: Any, *, main: bool) -> dict[str, Any]:
    """The trained weights gathered whole (``DTensor.full_tensor``, a collective: every rank calls it, in the
    same order), on CPU on rank 0; the others get an empty dict. Only the trained weights travel, not the
    frozen base (``full_state_dict`` gathers everything, then drops what is not trained)."""
    out: dict[str, Any] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        whole = p.detach().full_tensor() if is_sharded(p) else p.detach()
        if main:
            out[name] = whole.cpu().clone()
    return out


def save_prepared(prepared: Any, folder: Any, *, main: bool, whole_model: bool) -> None:
    """Save a sharded model's result as ``Prepared.save`` would: gathered whole, written by rank 0 alone.

    ``whole_model`` (a method whose output is the model) gathers every weight. An adapter gathers only its
    trained weights, plus the tensors FSDP does not shard (buffers such as VeRA's projections), and is saved
    by peft (``save_pretrained(state_dict=...)``) with the root's own weights gathered whole meanwhile: peft
    runs prompt tuning's encoder to save its prompt. Every rank calls it (collectives).
    """
    model = prepared.model
    if whole_model:
        state = full_state_dict(model, trainable_only=False)
        if main:
            model.save_pretrained(str(folder), state_dict=state, safe_serialization=True)
        return
    plain = {k: v.detach().cpu() for k, v in model.state_dict().items() if not is_sharded(v)} if main else {}
    model.unshard()
    try:
        state = gather_trainable(model, main=main)
        if main:
            model.save_pretrained(str(folder), state_dict={**plain, **state}, safe_serialization=True)
    finally:
        model.reshard()


def clip_grad_norm(params: list[Any], max_norm: float) -> float:
    """Clip the gradients of ``params`` to a total L2 norm of ``max_norm`` over every rank, as one process would.

    FSDP's gradient shards are disjoint (each rank holds its rows of every sharded gradient), so their
    squares add up over the ranks; a gradient FSDP does not own was summed already and is the same on every
    rank, so it counts once. The coefficient is ``torch.nn.utils.clip_grad_norm_``'s: max / (norm + 1e-6), at most 1.
    """
    import torch
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    device = (grads[0].to_local() if is_sharded(grads[0]) else grads[0]).device
    local = torch.zeros((), dtype=torch.float32, device=device)
    plain = torch.zeros((), dtype=torch.float32, device=device)
    for g in grads:
        if is_sharded(g):
            local += g.to_local().float().pow(2).sum()
        else:
            plain += g.float().pow(2).sum()
    dist.all_reduce(local, op=dist.ReduceOp.SUM)
    total = float((local + plain).sqrt())
    coef = min(1.0, max_norm / (total + 1e-6))
    if coef < 1.0:
        with torch.no_grad():
            for g in grads:
                g.mul_(coef)
    return total


def checkpoint_state(model: Any, optimizer: Any, *, main: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trained weights, optimizer state) gathered whole, keyed by parameter name; rank 0 gets them, every
    rank calls it (collectives). Resumable by ``load_checkpoint_state`` under any number of ranks that shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    weights = gather_trainable(model, main=main)
    optim = get_optimizer_state_dict(model, optimizer,
                                     options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return weights, (dict(optim) if main else {})


def load_checkpoint_state(model: Any, optimizer: Any, weights: dict[str, Any], optim: dict[str, Any]) -> None:
    """Put a ``checkpoint_state`` (whole, on every rank) back into the sharded model and its optimizer."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, weights, options=options)
    # The saved groups' settings (the trainer's initial_lr among them), as Optimizer.load_state_dict takes
    # them: torch's loader looks up every saved key in the new groups.
    for group, saved in zip(optimizer.param_groups, optim.get("param_groups", []), strict=False):
        group.update({k: v for k, v in saved.items() if k != "params"})
    set_optimizer_state_dict(model, optimizer, optim, options=options)
