"""What a method hands the trainer: the model to run, what to optimise, and how to save it.

Used only inside the training process (imports torch and peft).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass
class PrepareContext:
    """What a method may need to know besides its config."""

    lr: float
    weight_decay: float
    device: torch.device
    model_type: str
    parameters: int
    tokenizer_path: str = ""
    notes: list[str] = field(default_factory=list)


class Prepared:
    """A model made trainable by one method. Subclasses override the hooks they need."""

    def __init__(self, model: Any, causal_lm: Any, ctx: PrepareContext) -> None:
        self.model: Any = model  # what the trainer calls (a PeftModel or the plain model)
        self.causal_lm: Any = causal_lm  # the transformers CausalLM inside, with any injected layers
        self.ctx = ctx
        self.notes = ctx.notes

    # -- training ------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def make_optimizer(self) -> torch.optim.Optimizer:
        params = self.trainable_parameters()
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": self.ctx.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return torch.optim.AdamW(groups, lr=self.ctx.lr, betas=(0.9, 0.999), eps=1e-8)

    def after_step(self) -> None:
        """Called after every optimizer step (Delta-LoRA updates the frozen weights here)."""

    def extra_state(self) -> dict[str, Any]:
        """Method state a checkpoint must keep besides the trainable parameters."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what ``extra_state`` returned (after the trainable parameters are loaded)."""

    def trainable_state(self) -> dict[str, torch.Tensor]:
        names = {id(p): n for n, p in self.model.named_parameters()}
        return {names[id(p)]: p.detach().clone() for p in self.trainable_parameters()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        """Run the base model (adapter off): the DPO reference and the 'before' evaluation."""
        disable = getattr(self.model, "disable_adapter", None)
        if disable is None:
            raise RuntimeError("this method has no way to turn itself off")
        with disable():
            yield

    @property
    def has_reference(self) -> bool:
        return hasattr(self.model, "disable_adapter")

    # -- output --------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write the trained result (a PEFT adapter by default) into ``folder``."""
        self.model.save_pretrained(str(folder))  # type: ignore[operator]


def linear_targets(model: nn.Module) -> list[str]:
    """Names (last component) of the transformer blocks' linear layers: attention and MLP projections."""
    names: set[str] = set()
    for full_name, module in model.named_modules():
        if isinstance(module, nn.Linear) and ".layers." in f".{full_name}" and "lm_head" not in full_name:
            names.add(full_name.rsplit(".", 1)[-1])
    if not names:
        raise RuntimeError("no linear layers found in the model's blocks")
    return sorted(names)


def wrap_peft(model: Any, peft_config: Any) -> Any:
    from peft import get_peft_model

    return get_peft_model(model, peft_config)


def read_adapter_config(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    return data
