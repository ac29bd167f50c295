"""LoRA+: LoRA with a higher learning rate for B than for A (Hayou et al., arXiv:2402.12354)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.finetune.methods.lora_common import LoraOptions
from core.finetune.methods.registry import Method, opt, register_method


@dataclass
class LoraPlusSettings(LoraOptions):
    """LoRA+ options."""

    lr_ratio: float = opt(16.0, "Learning rate of B divided by that of A.", min=1.0, max=1000.0)


def prepare(model: Any, cfg: LoraPlusSettings, ctx: Any) -> Any:
    from core.finetune.methods.base import Prepared, wrap_peft
    from core.finetune.methods.lora_common import lora_config

    class LoraPlusPrepared(Prepared):
        def make_optimizer(self) -> Any:
            import torch
            from peft.optimizers import create_loraplus_optimizer

            return create_loraplus_optimizer(
                self.model,  # type: ignore[arg-type]
                torch.optim.AdamW,
                lr=self.ctx.lr,
                loraplus_lr_ratio=cfg.lr_ratio,
                weight_decay=self.ctx.weight_decay,
            )

    peft_model = wrap_peft(model, lora_config(model, cfg))
    return LoraPlusPrepared(peft_model, peft_model.get_base_model(), ctx)


METHOD = register_method(
    Method(
        name="lora-plus",
        title="LoRA+",
        summary="LoRA whose B matrices learn faster than A: often converges in fewer steps.",
        reference="https://arxiv.org/abs/2402.12354",
        config_cls=LoraPlusSettings,
        prepare=prepare,
        default_lr=1e-4,
        order=3,
    )
)
