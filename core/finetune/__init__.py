"""Fine-tuning: methods, data, the training job and the adapters it produces.

Importing this package is cheap (no torch); training itself runs in a child process started through
``core.jobs.JobProcess("finetune", spec)`` or ``hearth finetune``.
"""

from __future__ import annotations

from core.finetune.adapters import AdapterEntry, get_adapter, list_adapters
from core.finetune.spec import FinetuneSpec

__all__ = ["AdapterEntry", "FinetuneSpec", "get_adapter", "list_adapters"]
