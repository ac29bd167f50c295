"""IA3: trained vectors that rescale keys, values and the MLP's activations (Liu et al., arXiv:2205.05638)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.finetune.methods.registry import Method, opt, register_method


@dataclass
class IA3Settings:
    """IA3 options."""

    scale_mlp: bool = opt(True, "Also rescale the MLP (its down projection), not only keys and values.")


def prepare(model: Any, cfg: IA3Settings, ctx: Any) -> Any:
    from peft import IA3Config

    from core.finetune.methods.base import Prepared, linear_targets, wrap_peft

    present = set(linear_targets(model))
    attention: list[str] = [str(n) for n in ("k_proj", "v_proj") if n in present]
    mlp: list[str] = [str(n) for n in ("down_proj", "fc2", "w2") if n in present][:1]
    if not cfg.scale_mlp:
        mlp = []
    if not attention:
        raise RuntimeError("IA3 needs k_proj/v_proj layers, which this model does not have")
    config = IA3Config(target_modules=attention + mlp, feedforward_modules=mlp, task_type="CAUSAL_LM")
    peft_model = wrap_peft(model, config)
    return Prepared(peft_model, peft_model.get_base_model(), ctx)


METHOD = register_method(
    Method(
        name="ia3",
        title="IA3",
        summary="Learned rescaling vectors: tiny adapters, a gentle change; use a higher learning rate.",
        reference="https://arxiv.org/abs/2205.05638",
        config_cls=IA3Settings,
        prepare=prepare,
        default_lr=3e-3,
        order=7,
    )
)
