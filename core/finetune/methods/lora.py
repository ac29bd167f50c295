"""LoRA: a trainable low-rank update B·A beside each frozen linear layer (arXiv:2106.09685)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.finetune.methods.lora_common import LoraOptions
from core.finetune.methods.registry import Method, register_method


@dataclass
class LoraSettings(LoraOptions):
    """LoRA options."""


def prepare(model: Any, cfg: LoraSettings, ctx: Any) -> Any:
    from core.finetune.methods.base import Prepared, wrap_peft
    from core.finetune.methods.lora_common import lora_config

    peft_model = wrap_peft(model, lora_config(model, cfg))
    return Prepared(peft_model, peft_model.get_base_model(), ctx)


METHOD = register_method(
    Method(
        name="lora",
        title="LoRA",
        summary="Low-rank adapters on every linear layer: small, fast, the usual choice.",
        reference="https://arxiv.org/abs/2106.09685",
        config_cls=LoraSettings,
        prepare=prepare,
        order=0,
    )
)
