"""The description of one fine-tuning job: serializable, so a GUI, the CLI or a launcher can hand it on."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from core.errors import TrainingError

OBJECTIVES = ("sft", "pretrain", "dpo")


@dataclass
class FinetuneSpec:
    """Everything a fine-tune needs; ``None`` means 'pick a sensible value' (from memory, data, method)."""

    base: str
    name: str
    docs: list[str] = field(default_factory=list)
    data: str | None = None
    objective: str | None = None
    method: str = "lora"
    method_options: dict[str, Any] = field(default_factory=dict)
    epochs: float = 3.0
    max_steps: int | None = None
    lr: float | None = None
    seq_len: int | None = None
    batch: int | None = None
    grad_accum: int | None = None
    gradient_checkpointing: bool | None = None
    save_every: int = 50
    eval_every: int = 0
    seed: int = 0
    eval_fraction: float = 0.05
    chunk_overlap: int = 64
    qa_model: str | None = None
    qa_per_chunk: int = 3
    dpo_beta: float = 0.1
    samples: int = 3
    sample_tokens: int = 48
    device: str = "auto"
    resume: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise TrainingError(f"Unknown job settings: {', '.join(sorted(unknown))}.")
        return cls(**data)

    def check(self) -> None:
        """Settings that are wrong whatever the data and model."""
        if not self.docs and not self.data:
            raise TrainingError("Give training data: --docs FOLDER (documents) or --data FILE.jsonl.")
        if self.docs and self.data:
            raise TrainingError("Give either --docs or --data, not both.")
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise TrainingError(f"Unknown objective '{self.objective}': use {', '.join(OBJECTIVES)}.")
        for name, value, low in (("--epochs", self.epochs, 0.01), ("--lr", self.lr, 1e-9), ("--seq-len", self.seq_len, 16),
                                 ("--batch", self.batch, 1), ("--grad-accum", self.grad_accum, 1),
                                 ("--max-steps", self.max_steps, 1)):
            if value is not None and value < low:
                raise TrainingError(f"{name} must be at least {low}, not {value}.")
        if self.docs and self.objective == "dpo":
            raise TrainingError("DPO needs preference pairs (--data with prompt/chosen/rejected), not documents.")
