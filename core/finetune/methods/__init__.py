"""Fine-tuning methods. Each module registers one method; the list below is the whole set."""

from __future__ import annotations

from core.finetune.methods import (  # noqa: F401  (each import registers its method once)
    delta_lora,
    dora,
    full,
    ia3,
    lora,
    lora_fa,
    loraplus,
    prompt_tuning,
    qlora,
    vera,
)
from core.finetune.methods.registry import (
    Method,
    OptionSpec,
    all_methods,
    build_config,
    get_method,
    options,
    register_method,
)

__all__ = ["Method", "OptionSpec", "all_methods", "build_config", "get_method", "options", "register_method"]
