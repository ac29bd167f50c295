"""The knowledge check: did the model learn what the documents say?

Each probe (``core.finetune.data.probes``) is a sentence of the user's documents with a salient span
blanked out and same-kind distractors. Every choice is scored by the log-likelihood the model gives
the choice and the next few words of the sentence after the sentence's text before the blank, the usual multiple-choice scoring of language models (as in EleutherAI's lm-evaluation-
harness); the highest wins. Runs in the job process on the training model, so "before" is the base
model (the adapter switched off) and "after" the tuned one, on the same tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.finetune.data.formatting import Encoded, ExampleEncoder
from core.finetune.data.packing import pack

if TYPE_CHECKING:
    from core.finetune.trainer import Trainer

MAX_TOKENS = 96  # one probe's context and choice, at most (longer ones keep the end of the context)
SUFFIX_WORDS = 3  # words after the blank scored with each choice


@dataclass(frozen=True)
class KnowledgeResult:
    correct: int
    total: int
    picked: list[int]  # the index of the choice the model preferred, per probe
    # Mean over probes of the right choice's log-likelihood minus the best wrong one's: how sure, not only how
    # often right (a finer signal than the count on a dozen questions).
    margin: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"correct": self.correct, "total": self.total}


def split_text(prefix: str, choice: str, suffix: str) -> tuple[str, str]:
    """Context and continuation for one choice: the blank's leading space belongs to the choice."""
    context = prefix.rstrip()
    gap = prefix[len(context):]
    return context, gap + choice + suffix


def encode_choice(encoder: ExampleEncoder, prefix: str, choice: str, suffix: str) -> Encoded:
    """The probe's text with only the continuation's tokens trained (scored).

    The whole text is tokenized once and split where the context's own tokens stop matching, so a
    token the tokenizer fuses across the boundary counts for the continuation.
    """
    context, continuation = split_text(prefix, choice, suffix)
    ctx_ids = encoder.encode_text(context)
    full = encoder.encode_text(context + continuation)
    split = 0
    while split < min(len(ctx_ids), len(full)) and ctx_ids[split] == full[split]:
        split += 1
    ids, trained = encoder.with_bos(full, [i >= split for i in range(len(full))])
    if len(ids) > MAX_TOKENS:
        ids, trained = ids[-MAX_TOKENS:], trained[-MAX_TOKENS:]
        trained[0] = False
    return Encoded(ids, trained)


def score(trainer: Trainer, encoder: ExampleEncoder, probes: Sequence[Any], *, reference: bool) -> KnowledgeResult:
    """How many probes the model (``reference``: the base, adapter off) answers right."""
    import torch

    from core.finetune.trainer import to_tensors

    if not probes:
        return KnowledgeResult(0, 0, [])
    units: list[list[Encoded]] = []
    owners: list[tuple[int, int]] = []  # (probe, choice) per unit
    for p_index, probe in enumerate(probes):
        for c_index, choice in enumerate(probe.choices):
            units.append([encode_choice(encoder, probe.prefix, choice, _short(probe.suffix))])
            owners.append((p_index, c_index))
    width = max(len(u[0]) for u in units)
    rows = pack(units, max(width, 512), pad_id=int(encoder.tokenizer.pad_token_id or 0), packing=True, seed=0)
    tensors = to_tensors(rows, trainer.device)
    n_segments = len(units)
    logp = torch.zeros(n_segments, device=trainer.device)
    trainer.p.model.eval()
    ctx = trainer.p.reference() if reference and trainer.p.has_reference else _null()
    with torch.no_grad(), ctx:
        for part in trainer.batches(tensors):
            logp += trainer.segment_logp(part, n_segments)
    best: dict[int, tuple[float, int]] = {}
    values: dict[int, list[float]] = {}
    for (p_index, c_index), value in zip(owners, logp.tolist(), strict=True):
        values.setdefault(p_index, []).append(value)
        if p_index not in best or value > best[p_index][0]:
            best[p_index] = (value, c_index)
    picked = [best[i][1] for i in range(len(probes))]
    correct = sum(int(pick == probe.answer_index) for pick, probe in zip(picked, probes, strict=True))
    margins = [values[i][p.answer_index] - max(v for c, v in enumerate(values[i]) if c != p.answer_index)
               for i, p in enumerate(probes)]
    return KnowledgeResult(correct, len(probes), picked, sum(margins) / len(margins))


def _short(suffix: str) -> str:
    """The first words after the blank: enough to tell a remembered sentence, cheap to score."""
    words = suffix.split(" ")
    return " ".join(words[: SUFFIX_WORDS + (1 if suffix.startswith(" ") else 0)])


def _null() -> Any:
    from contextlib import nullcontext

    return nullcontext()


def summary_line(before: int, after: int, total: int, restated: dict[str, int] | None = None) -> str:
    """The knowledge check in a user's words; ``restated``: the half asked in other words (before, after, total)."""
    if restated:
        return (f"Knowledge check: from your sentences {after} of {total} ({before} before); asked in other "
                f"words {restated['after']} of {restated['total']} ({restated['before']} before).")
    return (f"Knowledge check ({total} fill-in-the-blank questions from your documents): "
            f"answered {before} of {total} before, {after} of {total} after.")


class HeldOutStop:
    """When to stop a documents run: from the knowledge check's held-out half (questions asked in other
    words, whose restatements are not trained), not from the loss, which keeps falling as the text is
    memorised.

    From step ``first`` on, every ``every`` steps the tuned model answers the held-out questions; training
    ends at the first check that does not beat the best so far (more right, or as many and by a wider
    margin), and the weights of the best check are put back (``restore``). Checks are short forward passes (a few dozen 30-token texts).
    """

    def __init__(self, trainer: Trainer, encoder: ExampleEncoder, probes: Sequence[Any], *, first: int, every: int,
                 emit: Any) -> None:
        self.trainer, self.encoder, self.probes = trainer, encoder, list(probes)
        self.first, self.every, self.emit = first, max(1, every), emit
        self.best = -1
        self.best_margin = float("-inf")
        self.best_step = 0
        self.history: list[dict[str, int]] = []
        self._saved: list[Any] = []

    def __call__(self, state: Any) -> bool:
        step = int(state.step)
        if step < self.first or (step - self.first) % self.every or step >= self.trainer.total_steps:
            return False
        with self.trainer.averaged():  # the weights the run would end with if it stopped here
            result = score(self.trainer, self.encoder, self.probes, reference=False)
            better = (result.correct, result.margin) > (self.best, self.best_margin)
            if better:
                self._saved = [p.detach().clone() for p in self.trainer.p.trainable_parameters()]
        self.trainer.p.model.train()
        self.history.append({"step": step, "correct": result.correct, "total": result.total})
        self.emit({"event": "held_out_check", "step": step, "correct": result.correct, "total": result.total,
                   "margin": round(result.margin, 3)})
        # Better: more right, or as many right and surer of them (the margin breaks ties of a short list).
        if better:
            self.best, self.best_margin, self.best_step = result.correct, result.margin, step
            return False
        self.emit({"event": "early_stop", "step": step, "best_step": self.best_step,
                   "message": f"stopping at step {step} of {self.trainer.total_steps}: the questions asked in other "
                              f"words stopped improving (best {self.best} of {result.total} at step {self.best_step}; "
                              f"{result.correct} now, and no surer); keeping the model of step {self.best_step}"})
        return True

    def restore(self) -> int | None:
        """Put back the best check's weights when training went on past it; returns that step, or None."""
        from core.finetune.trainer import copy_weights

        if not self._saved or not self.history or self.history[-1]["step"] == self.best_step:
            return None
        copy_weights(self.trainer.p.trainable_parameters(), self._saved)
        return self.best_step
