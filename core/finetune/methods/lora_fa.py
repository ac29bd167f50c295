"""LoRA-FA: LoRA with the down-projection A frozen at its random start; only B is trained.

Zhang et al., "LoRA-FA: Memory-efficient Low-rank Adaptation" (arXiv:2308.03303): freezing A halves
the adapter's optimizer state and removes the need to keep the layer inputs for A's gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.finetune.methods.lora_common import LoraOptions
from core.finetune.methods.registry import Method, register_method


@dataclass
class LoraFASettings(LoraOptions):
    """LoRA-FA options (those of LoRA)."""


def prepare(model: Any, cfg: LoraFASettings, ctx: Any) -> Any:
    from core.finetune.methods.base import Prepared, wrap_peft
    from core.finetune.methods.lora_common import lora_config

    peft_model = wrap_peft(model, lora_config(model, cfg))
    for name, param in peft_model.named_parameters():
        if ".lora_A." in name:
            param.requires_grad_(False)
    return Prepared(peft_model, peft_model.get_base_model(), ctx)


METHOD = register_method(
    Method(
        name="lora-fa",
        title="LoRA-FA",
        summary="LoRA with A frozen: only B is trained, for less memory.",
        reference="https://arxiv.org/abs/2308.03303",
        config_cls=LoraFASettings,
        prepare=prepare,
        order=4,
    )
)
