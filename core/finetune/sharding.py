"""FSDP sharding of a training model, as the exported accelerate config asks for it.

``accelerate launch`` with ``distributed_type: FSDP`` sets ``ACCELERATE_USE_FSDP=true`` and ``FSDP_*``
variables in every process (``accelerate/utils/launch.py``, ``prepare_multi_gpu_env``). ``settings_from_env``
reads them as accelerate's ``FullyShardedDataParallelPlugin`` does; ``shard_model`` applies PyTorch's
FSDP2 (``torch.distributed.fsdp.fully_shard``: per-parameter sharding, so a frozen 16-bit base and fp32
adapter weights shard side by side) to every decoder layer, then to the whole model; ``full_state_dict``
gathers the weights whole on rank 0 (a collective: every rank calls it) so an adapter saves as usual.

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
    return model


def full_state_dict(model: Any, *, trainable_only: bool = True) -> dict[str, Any]:
    """The model's weights gathered whole on CPU (on rank 0; the others get an empty dict). Every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if trainable_only:
        wanted = {name for name, p in model.named_parameters() if p.requires_grad}
        state = {k: v for k, v in state.items() if k in wanted}
    return dict(state)
