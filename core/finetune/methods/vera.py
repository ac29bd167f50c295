"""VeRA: one pair of frozen random matrices shared by all layers, with small trained scaling vectors.

Kopiczko et al., "VeRA: Vector-based Random Matrix Adaptation" (arXiv:2310.11454); peft's VeraConfig.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.finetune.methods.registry import Method, opt, register_method


@dataclass
class VeraSettings:
    """VeRA options."""

    rank: int = opt(256, "Rank of the shared random matrices (VeRA uses a high rank cheaply).", min=1, max=4096)
    dropout: float = opt(0.0, "Dropout on the adapter's input while training.", min=0.0, max=0.9)
    d_initial: float = opt(0.1, "Starting value of the trained scaling vector d.", min=0.0, max=10.0)
    targets: str = opt(
        "attention", "Which layers get an adapter: attention only, MLP only, or every linear layer.",
        choices=("all-linear", "attention", "mlp"),
    )


def prepare(model: Any, cfg: VeraSettings, ctx: Any) -> Any:
    from peft import VeraConfig

    from core.finetune.methods.base import Prepared, wrap_peft
    from core.finetune.methods.lora_common import target_modules

    config = VeraConfig(
        r=cfg.rank,
        vera_dropout=cfg.dropout,
        d_initial=cfg.d_initial,
        target_modules=target_modules(model, cfg.targets),
        save_projection=True,
        task_type="CAUSAL_LM",
    )
    peft_model = wrap_peft(model, config)
    return Prepared(peft_model, peft_model.get_base_model(), ctx)


METHOD = register_method(
    Method(
        name="vera",
        title="VeRA",
        summary="Shared random matrices with trained scaling vectors: the smallest adapters.",
        reference="https://arxiv.org/abs/2310.11454",
        config_cls=VeraSettings,
        prepare=prepare,
        default_lr=4e-3,
        order=6,
    )
)
