"""The description of one fine-tuning job: serializable, so a GUI, the CLI or a launcher can hand it on.

Each field's ``metadata`` describes it for a form (label, help in plain words, limits, a ``group``:
"job" for what most people set, "advanced" and "expert" for the rest); fields the form does not show as
plain options (what to train, on what, under which name) carry ``{"form": False}``. ``spec_options()``
lists the form's options, so nothing describes an option twice.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from core.errors import TrainingError
from core.finetune.methods.registry import OptionSpec, opt

OBJECTIVES = ("sft", "pretrain", "dpo")
GROUPS = ("job", "advanced", "expert")
_NOT_AN_OPTION: dict[str, Any] = {"form": False}


def _opt(default: Any, label: str, help: str, *, group: str = "job", min: float | None = None,
         max: float | None = None, choices: tuple[Any, ...] | None = None) -> Any:
    return opt(default, help, min=min, max=max, choices=choices, label=label, group=group)


@dataclass(frozen=True)
class SpecOption(OptionSpec):
    """One job option of ``FinetuneSpec`` as a form shows it; ``optional``: ``None`` means 'pick for me'."""

    label: str = ""
    group: str = "job"
    optional: bool = False


@dataclass
class FinetuneSpec:
    """Everything a fine-tune needs; ``None`` means 'pick a sensible value' (from memory, data, method)."""

    base: str = field(metadata=_NOT_AN_OPTION)
    name: str = field(metadata=_NOT_AN_OPTION)
    docs: list[str] = field(default_factory=list, metadata=_NOT_AN_OPTION)
    data: str | None = field(default=None, metadata=_NOT_AN_OPTION)
    objective: str | None = _opt(
        None, "Objective", "What the model learns: 'pretrain' continues the text (documents), 'sft' learns to "
        "answer like the examples' assistant, 'dpo' to prefer the chosen over the rejected answers. "
        "Empty: from the data.", choices=OBJECTIVES)
    method: str = field(default="lora", metadata=_NOT_AN_OPTION)
    method_options: dict[str, Any] = field(default_factory=dict, metadata=_NOT_AN_OPTION)
    # None: from the data (core.finetune.planner)
    epochs: float | None = _opt(
        None, "Passes over the data", "How many times training reads all of your data. More passes learn "
        "more of it, until the model starts repeating it word for word. Empty: picked from the data's size.",
        min=0.01, max=1000)
    max_steps: int | None = _opt(
        None, "Stop after steps", "End training after this many updates, whatever the passes. Empty: no limit.",
        min=1, max=10_000_000)
    lr: float | None = _opt(
        None, "Learning rate", "How big each update is. Too high and training becomes unstable, too low and "
        "it learns little. Empty: the method's usual value (higher for documents).", min=1e-9, max=1.0)
    seq_len: int | None = _opt(
        None, "Row length (tokens)", "How much text the model sees at once. Longer rows use much more memory. "
        "Empty: from the data and the memory free.", group="advanced", min=16, max=131072)
    batch: int | None = _opt(
        None, "Rows per batch", "Rows processed together. More is faster but uses more memory. Empty: from "
        "the memory free.", group="advanced", min=1, max=1024)
    grad_accum: int | None = _opt(
        None, "Batches per update", "Batches added up before each update: a bigger update without more "
        "memory. Empty: picked with the batch size.", group="advanced", min=1, max=1024)
    gradient_checkpointing: bool | None = _opt(
        None, "Save memory (slower)", "Recompute parts of the model instead of keeping them: uses far less "
        "memory, takes about a third longer. Empty: only when needed to fit.", group="advanced")
    save_every: int = _opt(
        50, "Checkpoint every (steps)", "Save progress this often, so an interrupted run can continue. "
        "0: only by minutes (below) and when stopped.", group="advanced", min=0, max=1_000_000)
    save_minutes: float = _opt(
        2.0, "Checkpoint every (minutes)", "Also save progress after this much training time, so a crash costs "
        "minutes, not the run. 0: only by steps.", group="advanced", min=0.0, max=10_000.0)
    eval_every: int = _opt(
        0, "Measure every (steps)", "Measure the loss on held-out data this often during training. "
        "0: a few times per run (never for documents).", group="expert", min=0, max=1_000_000)
    seed: int = _opt(0, "Random seed", "Fixes the shuffling and starting weights, so a run can be repeated "
                     "exactly.", group="advanced", min=0, max=2**31 - 1)
    eval_fraction: float = _opt(
        0.05, "Held-out share", "The share of a dataset's rows kept aside to measure progress (not used for "
        "documents).", group="expert", min=0.0, max=0.5)
    chunk_overlap: int = _opt(
        64, "Chunk overlap (tokens)", "Documents are cut into rows; consecutive rows share this many tokens "
        "so no sentence is only ever seen cut in half.", group="expert", min=0, max=4096)
    qa_model: str | None = _opt(
        None, "Question writer model", "With documents: a chat model (from your library) that writes "
        "questions and answers about them, so the tuned model learns to answer, not only to continue text. "
        "Empty: train on the text itself.", group="advanced")
    views: str | None = _opt(
        None, "Knowledge views", "With documents: the rewritten copies of your text the model learns from, so it "
        "answers questions worded differently from your sentences (comma-separated: facts, shuffled, reversed, "
        "masked, questions, reading, replay; 'none': the text as it is). Empty: all but reading.", group="expert")
    qa_per_chunk: int = _opt(3, "Questions per chunk", "How many question-answer pairs the question writer "
                             "makes from each piece of a document.", group="expert", min=1, max=20)
    writer: str | None = _opt(
        None, "Restatement writer", "With documents: a chat model (from your library, or a .gguf file) that "
        "rewrites each fact in other words, so the tuned model also knows it asked differently. A rewrite is "
        "kept only if it keeps every name, number and date. Empty: rules alone restate the facts.",
        group="advanced")
    dpo_beta: float = _opt(
        0.1, "DPO strength", "For 'dpo': how far the model may move from the base to prefer the chosen "
        "answers. Higher keeps it closer to the base.", group="expert", min=0.001, max=10.0)
    samples: int = _opt(2, "Sample answers", "How many prompts to answer before and after training, to "
                        "compare.", group="expert", min=0, max=50)
    sample_tokens: int = _opt(32, "Sample length (tokens)", "How long each sample answer is.", group="expert",
                              min=1, max=4096)
    device: str = _opt("auto", "Train on", "Where training runs: 'auto' uses a supported GPU when there is "
                       "one, else the CPU.", group="advanced", choices=("auto", "cpu", "cuda", "mps"))
    nproc: int = _opt(1, "Processes", "Train with this many processes on this computer (PyTorch's torchrun): one "
                      "per GPU, or a few on the CPU. Each update sees the same rows whatever the number, so the "
                      "result does not depend on it.", group="expert", min=1, max=1024)
    index: bool = _opt(True, "Also index for retrieval", "With documents: also put them in a Knowledge collection "
                       "named after the adapter, so a chat with it can look them up as well (tune + retrieval).",
                       group="advanced")
    resume: bool = field(default=False, metadata=_NOT_AN_OPTION)

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
        if self.writer and not self.docs:
            raise TrainingError("--writer rewrites documents: give them with --docs, or leave --writer out.")
        if self.views is not None:
            self._check_views(self.views)
        if self.docs and self.objective == "dpo":
            raise TrainingError("DPO needs preference pairs (--data with prompt/chosen/rejected), not documents.")
        self._check_nproc()

    def _check_views(self, views: str) -> None:
        from core.errors import DatasetError
        from core.finetune.data.views import parse_views

        if not self.docs:
            raise TrainingError("--views rewrites documents: give them with --docs, or leave --views out.")
        try:
            parse_views(views)
        except DatasetError as e:
            raise TrainingError(str(e).replace("Unknown view", "Unknown --views name")) from None

    def _check_nproc(self) -> None:
        if not isinstance(self.nproc, int) or isinstance(self.nproc, bool) or self.nproc < 1:
            raise TrainingError(f"--nproc must be a whole number of at least 1, not {self.nproc!r}.")
        if self.nproc == 1:
            return
        if self.device == "mps":
            raise TrainingError("Several processes cannot share Apple's GPU (MPS): use --nproc 1, or --device cpu.")
        cores = os.cpu_count() or 1
        if self.device == "cpu" and self.nproc > cores:
            raise TrainingError(f"--nproc {self.nproc} is more processes than this computer's {cores} CPU cores: "
                                f"use --nproc {cores} or fewer.")


def spec_options() -> list[SpecOption]:
    """The job options of ``FinetuneSpec`` a form shows, in field order, with labels, help and limits."""
    found = []
    for f in dataclasses.fields(FinetuneSpec):
        meta = f.metadata
        if not meta.get("form", True):
            continue
        type_text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        parts = [p.strip() for p in str(type_text).split("|")]
        choices = meta.get("choices")
        found.append(SpecOption(
            name=f.name, type=next(p for p in parts if p != "None"), default=f.default, help=str(meta["help"]),
            min=meta.get("min"), max=meta.get("max"), choices=tuple(choices) if choices else None,
            label=str(meta["label"]), group=str(meta["group"]), optional="None" in parts,
        ))
    return found
