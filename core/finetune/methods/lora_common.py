"""Pieces shared by the LoRA family (LoRA, DoRA, LoRA-FA, LoRA+, QLoRA, Delta-LoRA).

LoRA (Hu et al., arXiv:2106.09685): W' = W + (alpha / r) * B @ A, with A random and B zero at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.finetune.methods.registry import opt

TARGET_CHOICES = ("all-linear", "attention", "mlp")
_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "wq", "wk", "wv", "wo")


@dataclass
class LoraOptions:
    """Options every LoRA-family method has."""

    rank: int = opt(16, "Rank r of the low-rank update: higher learns more, costs more memory.", min=1, max=1024)
    alpha: float = opt(32.0, "Scale of the update (alpha / rank multiplies B·A).", min=0.01, max=8192.0)
    dropout: float = opt(0.05, "Dropout on the adapter's input while training.", min=0.0, max=0.9)
    targets: str = opt(
        "all-linear", "Which layers get an adapter: every linear layer, attention only, or MLP only.",
        choices=TARGET_CHOICES,
    )


def target_modules(model: Any, which: str) -> list[str]:
    """The module names for ``which`` among the model's linear layers."""
    from core.finetune.methods.base import linear_targets

    names = linear_targets(model)
    if which == "attention":
        chosen = [n for n in names if n in _ATTENTION]
    elif which == "mlp":
        chosen = [n for n in names if n not in _ATTENTION]
    else:
        chosen = names
    return chosen or names


def lora_config(model: Any, cfg: LoraOptions, **extra: Any) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,  # type: ignore[arg-type]
        lora_dropout=cfg.dropout,
        target_modules=target_modules(model, cfg.targets),
        bias="none",
        task_type="CAUSAL_LM",
        **extra,
    )
