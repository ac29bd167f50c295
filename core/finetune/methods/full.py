"""Full fine-tuning: every weight is trained. Only sensible for small models (memory ~16 bytes/parameter)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.finetune.methods.registry import Method, opt, register_method

# Above this, full fine-tuning needs more memory than a typical desktop has; use an adapter method.
MAX_PARAMETERS = 2_000_000_000


@dataclass
class FullSettings:
    """Full fine-tuning options."""

    train_embeddings: bool = opt(False, "Also train the token embeddings (large for big vocabularies).")


def prepare(model: Any, cfg: FullSettings, ctx: Any) -> Any:
    from core.finetune.methods.base import Prepared

    if ctx.parameters > MAX_PARAMETERS:
        from core.errors import TrainingError

        raise TrainingError(
            f"Full fine-tuning a {ctx.parameters / 1e9:.1f}B-parameter model needs far more memory than "
            "an adapter: use --method lora (or qlora)."
        )
    model.float()  # fp32 master weights: 16-bit weights lose small updates
    embeddings = {id(p) for p in model.get_input_embeddings().parameters()}
    for param in model.parameters():
        param.requires_grad_(cfg.train_embeddings or id(param) not in embeddings)

    class FullPrepared(Prepared):
        @property
        def has_reference(self) -> bool:
            return False

        def save(self, folder: Path) -> None:
            self.model.save_pretrained(str(folder), safe_serialization=True)  # type: ignore[operator]

    return FullPrepared(model, model, ctx)


METHOD = register_method(
    Method(
        name="full",
        title="Full fine-tuning",
        summary="Trains every weight: the most change, the most memory. For small models only.",
        reference="https://arxiv.org/abs/2203.02155",
        config_cls=FullSettings,
        prepare=prepare,
        default_lr=2e-5,
        order=9,
        output="model",
    )
)
