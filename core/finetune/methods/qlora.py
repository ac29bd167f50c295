"""QLoRA: LoRA over a base held in 4-bit NF4 (Dettmers et al., arXiv:2305.14314).

The 4-bit base needs bitsandbytes with a supported accelerator (CUDA). Elsewhere the job says so in
its events and trains plain LoRA over the 16/32-bit base instead: the result is the same kind of adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.finetune.methods.lora_common import LoraOptions
from core.finetune.methods.registry import Method, register_method


@dataclass
class QLoraSettings(LoraOptions):
    """QLoRA options (those of LoRA; the base is quantized to NF4 when possible)."""


def prepare(model: Any, cfg: QLoraSettings, ctx: Any) -> Any:
    from core.finetune.methods.base import Prepared, wrap_peft
    from core.finetune.methods.lora_common import lora_config

    if getattr(model, "is_loaded_in_4bit", False):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)  # type: ignore[no-untyped-call]
    peft_model = wrap_peft(model, lora_config(model, cfg))
    return Prepared(peft_model, peft_model.get_base_model(), ctx)


def four_bit_available(device_type: str) -> str | None:
    """None when a 4-bit NF4 base can be loaded here, else the reason it cannot."""
    if device_type != "cuda":
        return f"4-bit NF4 needs an NVIDIA GPU with bitsandbytes; this run is on {device_type.upper()}"
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return "bitsandbytes is not installed (pip install bitsandbytes)"
    return None


METHOD = register_method(
    Method(
        name="qlora",
        title="QLoRA",
        summary="LoRA over a 4-bit base: the least memory on an NVIDIA GPU (plain LoRA elsewhere).",
        reference="https://arxiv.org/abs/2305.14314",
        config_cls=QLoraSettings,
        prepare=prepare,
        order=1,
        wants_4bit=True,
    )
)
