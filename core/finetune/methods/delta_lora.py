"""Delta-LoRA: LoRA that also moves the frozen weights by the change of the low-rank product.

Zhang et al., "Delta-LoRA: Fine-Tuning High-Rank Parameters with the Delta of Low-Rank Matrices"
(arXiv:2309.02411), Algorithm 1: after each optimizer step t >= K,

    W <- W + lambda * (A(t+1) B(t+1) - A(t) B(t))      (times LoRA's scale alpha / r)

and dropout is off in the LoRA branch so the product's delta is a true gradient surrogate.

The sum telescopes: after the last step T the effective weight is
W0 + s * ((1 + lambda) * B_T A_T - lambda * B_K A_K). That is a LoRA of rank 2r (rank r when B_K is
zero, as it is when K = 0), so the result is saved as an ordinary PEFT LoRA adapter that llama.cpp
and every LoRA tool can load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.finetune.methods.lora_common import LoraOptions
from core.finetune.methods.registry import Method, opt, register_method


@dataclass
class DeltaLoraSettings(LoraOptions):
    """Delta-LoRA options."""

    dropout: float = opt(0.0, "Dropout on the adapter's input (the paper turns it off).", min=0.0, max=0.9)
    update_ratio: float = opt(
        0.5, "lambda: how much of each step's change of B·A is added to the frozen weights.", min=0.0, max=10.0
    )
    start_step: int = opt(0, "K: steps of plain LoRA before the frozen weights start to move.", min=0, max=1000000)


def prepare(model: Any, cfg: DeltaLoraSettings, ctx: Any) -> Any:
    from core.finetune.methods.base import wrap_peft
    from core.finetune.methods.delta_lora_impl import DeltaLoraPrepared
    from core.finetune.methods.lora_common import lora_config

    peft_model = wrap_peft(model, lora_config(model, cfg))
    return DeltaLoraPrepared(peft_model, peft_model.get_base_model(), ctx, cfg)


METHOD = register_method(
    Method(
        name="delta-lora",
        title="Delta-LoRA",
        summary="LoRA that also updates the full weights by the change of B·A each step (higher effective rank).",
        reference="https://arxiv.org/abs/2309.02411",
        config_cls=DeltaLoraSettings,
        prepare=prepare,
        order=5,
    )
)
