"""Training defaults chosen from the data: row length, batch, epochs, steps and learning rate.

Memory decides what *can* run (``core.finetune.resources.plan``); this module decides what *should*:
a small document set needs many small optimizer updates to store its facts (a floor on steps, more
epochs, short rows, one row per step), a large one needs a ceiling so it does not take all night.
Every value the user set is kept as is; ``reasons`` says in words why each default was picked.

The figures were tuned on ``bench/document_learning.py`` (a ~1,500-token handbook, Gemma 3 270M on
2 CPU cores): 128-token rows, one per step, a constant lr of 1e-3 answered 29% of the paraphrased
questions after 2 epochs, 50% after 3 and after 4 (the base: 21%); 15 epochs of 256-token rows at 5e-4
(105 steps, loss 0.004) also reached only 50% in four times the time, and a cosine decay over 4 epochs
42%: so the floor is set where learning levels off, with a constant rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

DOC_STEP_FLOOR = 36  # optimizer steps a documents job runs at least (small sets: more epochs)
DOC_MAX_EPOCHS = 24  # ... but never more passes than this over the same text
DOC_MIN_EPOCHS = 2
DOC_MIN_EPOCHS_VIEWS = 1  # knowledge views repeat every fact in several forms within one pass
VIEWS_STOP_FACTOR = 2  # ... and may run up to twice that while the held-out questions still improve
STOP_CHECKS_PER_EPOCH = 4  # held-out checks per pass once they start
DOC_LR_FACTOR = 5.0  # documents: the method's learning rate times this (facts need larger updates)
CHARS_PER_TOKEN = 4.0  # rough, before the tokenizer is loaded: only used to pick the row length
TIME_CEILING_S = 4 * 3600  # a default run is planned to end within this on this machine's estimated speed
# Training throughput of a LoRA job on 2 CPU cores for Gemma 3 270M: tokens per second scale with
# cores and inversely with the parameter count (compute-bound). Documents: 203 tokens read per second,
# fitted over the eight runs of bench/document_learning.py --ablate on the handbook (plain text and every
# mix of knowledge views, 4.5k-31k tokens, 2026-12-03; each within 15% of it). Tokens that are read but
# not scored (a masked line, a passage before its question) cost the same: the output layer runs only
# for the scored ones and the fit gives it under 3% of a token's time. Planned at 180 (estimates err
# long: this machine is shared). Chat data trains only the answers: about 350 tokens/s
# (bench/train_throughput.py).
CALIBRATION_TOKENS_PER_S = 350.0
CALIBRATION_DOC_TOKENS_PER_S = 180.0
CALIBRATION_PARAMS = 268e6
CALIBRATION_CORES = 2


@dataclass
class Schedule:
    """The data-dependent settings of one job (before memory planning fixes batch and row length)."""

    epochs: float
    max_steps: int | None
    lr: float
    seq_len: int | None  # preferred row length; None: the longest that fits in memory
    rows_per_step: int | None  # rows per optimizer step (batch x accumulation); None: from memory
    reasons: list[str] = field(default_factory=list)
    lr_schedule: str = "cosine"  # documents: "constant" after warm-up (the last epochs still store facts)
    # Knowledge views: the epoch from which the held-out questions decide when to stop (``epochs`` is then
    # the most it may run); None: run the planned epochs.
    stop_checks_from: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def estimate_tokens(chars: int) -> int:
    return int(chars / CHARS_PER_TOKEN)


def documents_row_length(tokens: int) -> int:
    """Shorter rows for little text: more rows, so more (and more varied) updates per epoch."""
    if tokens < 8_000:
        return 128
    if tokens < 60_000:
        return 256
    if tokens < 300_000:
        return 512
    return 1024


def documents_rows_per_step(rows: int) -> int:
    """One row per step for a handful of rows, up to 8 for thousands."""
    return max(1, min(8, rows // 32))


def tokens_per_second(parameters: int, cores: int, *, documents: bool = True) -> float:
    """A calibrated guess of training speed on CPU (the job measures the real one as it runs)."""
    rate = CALIBRATION_DOC_TOKENS_PER_S if documents else CALIBRATION_TOKENS_PER_S
    return rate * (CALIBRATION_PARAMS / max(1, parameters)) * (max(1, cores) / CALIBRATION_CORES)


def before_data(*, documents: bool, est_tokens: int, seq_len: int | None) -> int | None:
    """The preferred row length, known before the model loads (``None``: let memory decide)."""
    if seq_len:
        return seq_len
    return documents_row_length(est_tokens) if documents else None


def schedule(
    *, documents: bool, rows: int, tokens: int, rows_per_step: int, method_lr: float, parameters: int, cores: int,
    epochs: float | None, max_steps: int | None, lr: float | None, views: bool = False, held_out: bool = False,
) -> Schedule:
    """Epochs, step count and learning rate for ``rows`` training rows of ``tokens`` tokens in all.

    ``views``: the rows are knowledge views (``core.finetune.data.views``), each fact already written several
    times over: one pass can be enough (the step floor still applies). ``held_out``: the job can check questions
    asked in other words as it trains, so it may run longer while they improve."""
    reasons: list[str] = []
    chosen_lr = lr if lr is not None else method_lr * (DOC_LR_FACTOR if documents else 1.0)
    if lr is None and documents:
        reasons.append(f"learning rate {chosen_lr:g}: documents' facts need larger updates than style")
    steps_per_epoch = max(1, math.ceil(rows / max(1, rows_per_step)))
    if epochs is not None or max_steps is not None:
        return Schedule(epochs if epochs is not None else 3.0, max_steps, chosen_lr, None, rows_per_step, reasons)
    if not documents:
        return Schedule(3.0, None, chosen_lr, None, rows_per_step, reasons)
    want = math.ceil(DOC_STEP_FLOOR / steps_per_epoch)
    least = DOC_MIN_EPOCHS_VIEWS if views else DOC_MIN_EPOCHS
    chosen = float(min(DOC_MAX_EPOCHS, max(least, want)))
    if want > least:
        reasons.append(f"{chosen:g} epochs: {rows} row(s) of text give {steps_per_epoch} step(s) per epoch, and a "
                       f"document set is learned in about {DOC_STEP_FLOOR} steps")
    speed = tokens_per_second(parameters, cores)
    seconds = chosen * tokens / speed
    if seconds > TIME_CEILING_S:
        chosen = max(0.01, math.floor(TIME_CEILING_S * speed / max(1, tokens) * 100) / 100)
        reasons.append(f"{chosen:g} epoch(s): more would take over {TIME_CEILING_S // 3600} hours on this machine "
                       "(set --epochs to train longer)")
    if views and held_out and lr is None and seconds <= TIME_CEILING_S / VIEWS_STOP_FACTOR:
        reasons.append(f"up to {chosen * VIEWS_STOP_FACTOR:g} passes over the knowledge views: after {chosen:g}, "
                       "training stops when the questions asked in other words stop improving")
        return Schedule(chosen * VIEWS_STOP_FACTOR, None, chosen_lr, None, rows_per_step, reasons, "constant",
                        stop_checks_from=chosen)
    return Schedule(chosen, None, chosen_lr, None, rows_per_step, reasons, "constant" if lr is None else "cosine")


def estimated_seconds(*, total_tokens: int, parameters: int, cores: int, documents: bool = True) -> float:
    """Training time for ``total_tokens`` tokens seen (all epochs) at the calibrated speed."""
    return total_tokens / tokens_per_second(parameters, cores, documents=documents)
