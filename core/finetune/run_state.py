"""What one fine-tune run looks like so far, built from its JSON-lines events (``core.finetune.job``).

A Qt-free model in napari's pattern (``utils/progress.py``): a view subscribes with a callback and
redraws what changed; the same object can be fed by a live job or by its event log replayed from
the start (a window that reopens while a job trains).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Listener = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Stage:
    key: str
    label: str


# The job's stages as a user reads them; its "eval" stage comes twice (before and after training).
STAGES: tuple[Stage, ...] = (
    Stage("check", "Checking documents and model"),
    Stage("model", "Loading the model"),
    Stage("data", "Preparing the training text"),
    Stage("baseline", "Measuring what it knows now"),
    Stage("train", "Training"),
    Stage("measure", "Measuring what it learned"),
    Stage("save", "Saving the adapter"),
)
STAGE_KEYS = tuple(s.key for s in STAGES)
MEMORISING = "started memorising"


@dataclass
class RunState:
    """The progress and outcome of one run; ``apply`` each event in order."""

    name: str = ""
    outcome: str = "running"  # running | done | cancelled | failed
    stage: str = ""  # a key of STAGES, "" before the first
    stage_message: str = ""
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    lr: float | None = None
    tokens_per_s: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    estimated_train_s: float | None = None
    losses: list[tuple[int, float]] = field(default_factory=list)
    evals: list[tuple[int, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    knowledge_before: int | None = None
    knowledge_after: int | None = None
    knowledge_total: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)  # the "done" event: name, path, metrics
    error: dict[str, Any] = field(default_factory=dict)  # the "error" event, or what the page knows of a death
    message: str = ""  # the cancel or resume message
    held_out_checks: list[dict[str, int]] = field(default_factory=list)  # the questions asked in other words
    pid: int | None = None
    _listeners: list[Listener] = field(default_factory=list, repr=False)

    # -- subscriptions ---------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(kind, event)`` after each applied event; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _notify(self, kind: str, event: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            listener(kind, event)

    # -- reading ---------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.outcome != "running"

    @property
    def stage_index(self) -> int:
        return STAGE_KEYS.index(self.stage) if self.stage in STAGE_KEYS else -1

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0

    @property
    def processes(self) -> int:
        """How many processes train the job (``hearth finetune --nproc``; from its settings event)."""
        try:
            return max(1, int(self.settings.get("processes") or 1))
        except (TypeError, ValueError):
            return 1

    @property
    def memorising_warning(self) -> str:
        return next((w for w in reversed(self.warnings) if MEMORISING in w), "")

    @property
    def perplexity_ratio(self) -> float | None:
        metrics = self.result.get("metrics") or {}
        before, after = metrics.get("before") or {}, metrics.get("after") or {}
        try:
            return float(before["perplexity"]) / max(1e-9, float(after["perplexity"]))
        except (KeyError, TypeError, ValueError):
            return None

    # -- events ----------------------------------------------------------------------------------
    def apply(self, event: dict[str, Any]) -> None:
        kind = str(event.get("event", ""))
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(event)
        self._notify(kind, event)

    def _on_job_did_start(self, e: dict[str, Any]) -> None:
        self.pid = e.get("pid")
        if self.outcome != "running":  # a resumed run replayed after its cancel
            self.outcome, self.error, self.message = "running", {}, ""

    def _on_stage(self, e: dict[str, Any]) -> None:
        key = str(e.get("stage", ""))
        if key == "eval":
            key = "measure" if self.stage_index >= STAGE_KEYS.index("train") else "baseline"
        elif key == "hash":
            key = "save"
        if key in STAGE_KEYS:
            self.stage = key
        self.stage_message = str(e.get("message") or "")

    def _on_held_out_check(self, e: dict[str, Any]) -> None:
        self.held_out_checks.append({"step": int(e.get("step") or 0), "correct": int(e.get("correct") or 0),
                                     "total": int(e.get("total") or 0)})
        self.stage_message = (f"training: asked in other words, {e.get('correct')} of {e.get('total')} right "
                              f"at step {e.get('step')}")

    def _on_early_stop(self, e: dict[str, Any]) -> None:
        self.stage_message = str(e.get("message") or "")
        self.total_steps = int(e.get("step") or self.total_steps)  # the run ends here, not at the planned step
        self.eta_s = None  # no training left: the last step's estimate counted the planned steps

    def _on_settings(self, e: dict[str, Any]) -> None:
        self.settings = dict(e)
        self.total_steps = int(e.get("total_steps") or self.total_steps)
        if e.get("estimated_train_s"):
            self.estimated_train_s = float(e["estimated_train_s"])

    def _on_data(self, e: dict[str, Any]) -> None:
        self.data = dict(e)

    def _on_resumed(self, e: dict[str, Any]) -> None:
        self.step = int(e.get("step") or 0)
        self.total_steps = int(e.get("total_steps") or self.total_steps)
        # Steps after the checkpoint are trained again: drop the points the cancelled run drew past it.
        self.losses = [p for p in self.losses if p[0] <= self.step]
        self.evals = [p for p in self.evals if p[0] <= self.step]

    def _on_step(self, e: dict[str, Any]) -> None:
        self.step = int(e.get("step") or 0)
        self.total_steps = int(e.get("total_steps") or self.total_steps)
        self.loss = float(e["loss"]) if e.get("loss") is not None else None
        self.lr = e.get("lr")
        self.tokens_per_s = e.get("tokens_per_s")
        self.eta_s = e.get("eta_s")
        self.elapsed_s = e.get("elapsed_s")
        if self.loss is not None:
            self.losses.append((self.step, self.loss))
        if self.stage_index < STAGE_KEYS.index("train"):
            self.stage = "train"

    def _on_eval(self, e: dict[str, Any]) -> None:
        if e.get("eval_loss") is not None:
            self.evals.append((int(e.get("step") or self.step), float(e["eval_loss"])))

    def _on_knowledge(self, e: dict[str, Any]) -> None:
        self.knowledge_total = e.get("total", self.knowledge_total)
        if e.get("phase") == "before":
            self.knowledge_before = e.get("correct")
        else:
            self.knowledge_after = e.get("correct")

    def _on_warning(self, e: dict[str, Any]) -> None:
        self.warnings.append(str(e.get("message") or ""))

    def _on_cancelled(self, e: dict[str, Any]) -> None:
        self.outcome = "cancelled"
        self.message = str(e.get("message") or "")
        if e.get("step") is not None:
            self.step = int(e["step"])

    def _on_error(self, e: dict[str, Any]) -> None:
        self.outcome = "failed"
        self.error = dict(e)

    def _on_job_died(self, e: dict[str, Any]) -> None:
        if self.outcome == "running":
            self.outcome = "failed"
            self.error = {"kind": "died", **e}

    def _on_done(self, e: dict[str, Any]) -> None:
        self.outcome = "done"
        self.result = dict(e)
        self.stage = "save"
        knowledge = (e.get("metrics") or {}).get("knowledge") or {}
        if knowledge:
            self.knowledge_before = knowledge.get("before", self.knowledge_before)
            self.knowledge_after = knowledge.get("after", self.knowledge_after)
            self.knowledge_total = knowledge.get("total", self.knowledge_total)
