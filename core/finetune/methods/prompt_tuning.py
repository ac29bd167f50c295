"""Prompt tuning: trained 'virtual token' embeddings put before every input (Lester et al., arXiv:2104.08691)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.finetune.methods.registry import Method, opt, register_method


@dataclass
class PromptTuningSettings:
    """Prompt tuning options."""

    virtual_tokens: int = opt(20, "How many trained embeddings go before each input.", min=1, max=512)
    init_text: str = opt(
        "", "Start the virtual tokens from the embeddings of this text (empty: random start)."
    )


def prepare(model: Any, cfg: PromptTuningSettings, ctx: Any) -> Any:
    from peft import PromptTuningConfig, PromptTuningInit

    from core.finetune.methods.base import Prepared, wrap_peft

    kwargs: dict[str, Any] = {}
    if cfg.init_text:
        kwargs = {
            "prompt_tuning_init": PromptTuningInit.TEXT,
            "prompt_tuning_init_text": cfg.init_text,
            "tokenizer_name_or_path": ctx.tokenizer_path,
        }
    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.virtual_tokens, **kwargs)
    peft_model = wrap_peft(model, config)
    return Prepared(peft_model, peft_model.get_base_model(), ctx)


METHOD = register_method(
    Method(
        name="prompt-tuning",
        title="Prompt tuning",
        summary="Trains a few virtual-token embeddings put before each input; the model is unchanged.",
        reference="https://arxiv.org/abs/2104.08691",
        config_cls=PromptTuningSettings,
        prepare=prepare,
        default_lr=3e-2,
        order=8,
        packing=False,
    )
)
