"""Fine-tuning: methods, data, the training job and the adapters it produces.

Importing this package is cheap (no torch); training itself runs in a child process started through
``core.jobs.JobProcess("finetune", spec)`` or ``hearth finetune``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.finetune.adapters import AdapterEntry, get_adapter, list_adapters

if TYPE_CHECKING:
    from core.finetune.spec import FinetuneSpec


def __getattr__(name: str) -> Any:
    """``FinetuneSpec`` on first use: the spec imports every method's config, which the window's chat
    (it only lists adapters) does not need at start-up."""
    if name != "FinetuneSpec":
        raise AttributeError(f"module 'core.finetune' has no attribute {name!r}")
    from core.finetune.spec import FinetuneSpec

    return FinetuneSpec


__all__ = ["AdapterEntry", "FinetuneSpec", "get_adapter", "list_adapters"]
