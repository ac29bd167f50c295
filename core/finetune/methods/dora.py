"""DoRA: LoRA on the direction of each weight plus a trained magnitude vector (arXiv:2402.09353)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.finetune.methods.lora_common import LoraOptions
from core.finetune.methods.registry import Method, register_method


@dataclass
class DoraSettings(LoraOptions):
    """DoRA options (those of LoRA)."""


def prepare(model: Any, cfg: DoraSettings, ctx: Any) -> Any:
    from core.finetune.methods.base import Prepared, wrap_peft
    from core.finetune.methods.lora_common import lora_config

    peft_model = wrap_peft(model, lora_config(model, cfg, use_dora=True))
    return Prepared(peft_model, peft_model.get_base_model(), ctx)


METHOD = register_method(
    Method(
        name="dora",
        title="DoRA",
        summary="Weight-decomposed LoRA: often closer to full fine-tuning, a little slower than LoRA.",
        reference="https://arxiv.org/abs/2402.09353",
        config_cls=DoraSettings,
        prepare=prepare,
        order=2,
    )
)
