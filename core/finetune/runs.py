"""Fine-tune runs on this machine, found again from their records: list, read, follow, cancel.

Every job records itself in ``<data>/jobs/NAME/`` (``core.jobs``): ``job.json`` and ``events.jsonl``.
A run is *running* while the process ``job.json`` names is alive and is that job (same start time, a
``core.jobs`` command line); *interrupted* when the record says it never ended but the process is gone
and a checkpoint is left to resume from. Nothing here imports torch or Qt.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import jobs
from core.errors import NotFoundError, TrainingError
from core.finetune import adapters
from core.paths import get_paths

STATES = ("running", "interrupted", "finished", "failed", "cancelled")
EXIT_CANCELLED = 130


@dataclass(frozen=True)
class RunInfo:
    """One fine-tune run as its record tells it."""

    name: str
    state: str  # one of STATES
    pid: int | None
    started_at: float | None  # seconds since the epoch
    events_path: Path
    spec: dict[str, Any] = field(default_factory=dict)
    last_event: dict[str, Any] | None = None
    exit_code: int | None = None
    ended_at: float | None = None
    step: int | None = None  # the last step reached (from the log), if any
    total_steps: int | None = None
    log_path: Path | None = None  # the job's stderr log (tracebacks), when the launcher kept one

    @property
    def resumable(self) -> bool:
        """Whether a checkpoint is there to continue from (interrupted or cancelled runs)."""
        return self.state in ("interrupted", "cancelled") and has_checkpoint(self.name)

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in self.__dict__.items()}, "events_path": str(self.events_path),
                "log_path": str(self.log_path) if self.log_path else None, "resumable": self.resumable}


def has_checkpoint(name: str) -> bool:
    return (adapters.partial_folder(name) / "checkpoint" / "state.pt").exists()


def events_path(name: str) -> Path:
    return jobs.job_folder(name) / jobs.EVENTS_LOG


def log_path(name: str) -> Path:
    """The job's stderr log, where ``core.finetune.launch.start_finetune`` puts it."""
    return get_paths().logs / f"finetune-{name}.log"


def list_runs() -> list[RunInfo]:
    """Every fine-tune run with a record, newest first."""
    root = get_paths().data / "jobs"
    runs = []
    for record_path in root.glob(f"*/{jobs.JOB_RECORD}") if root.is_dir() else []:
        info = get_run(record_path.parent.name, missing_ok=True)
        if info is not None:
            runs.append(info)
    return sorted(runs, key=lambda r: -(r.started_at or 0.0))


def get_run(name: str, *, missing_ok: bool = False) -> RunInfo | None:
    """The run called ``name``; ``NotFoundError`` (or ``None`` with ``missing_ok``) when it has no record."""
    record = jobs.read_record(name)
    if record is None or record.get("kind", "finetune") != "finetune":
        if missing_ok:
            return None
        raise NotFoundError(f"No fine-tune run called '{name}' on this machine.")
    events = read_events(name)
    last = events[-1] if events else None
    step, total = None, None
    for event in events:
        if event.get("event") in ("step", "resumed"):
            step = int(event.get("step") or 0)
            total = int(event.get("total_steps") or 0) or total
    pid = record.get("pid")
    log = log_path(name)
    return RunInfo(
        name=name, state=_state(name, record, events), pid=int(pid) if pid else None,
        started_at=record.get("started_at"), events_path=events_path(name), spec=dict(record.get("spec") or {}),
        last_event=last, exit_code=record.get("exit_code"), ended_at=record.get("ended_at"), step=step,
        total_steps=total, log_path=log if log.exists() else None,
    )


def _state(name: str, record: dict[str, Any], events: list[dict[str, Any]]) -> str:
    code = record.get("exit_code")
    if code is None:
        if jobs.record_is_live(record):
            return "running"
        # The process died without recording its end (killed, power cut): resumable if it left a checkpoint.
        return "interrupted" if has_checkpoint(name) else "failed"
    if code == 0:
        return "finished"
    if code == EXIT_CANCELLED:
        return "cancelled"
    return "failed"


def read_events(name: str) -> list[dict[str, Any]]:
    """Every event in the run's log so far, both runs of a resumed one (a half-written last line is left out)."""
    return jobs.read_log(name)


def follow_events(name: str, *, stop: Callable[[], bool] = lambda: False) -> Iterator[dict[str, Any]]:
    """The run's events from the start of its log, then live while its process runs.

    Ends after the job's last event (``job_did_end``) once nothing follows it, when the process is
    gone and its log read to the end, or when ``stop()`` turns true (checked between polls).
    """
    return jobs.follow_log(name, stop=stop)


def running_run() -> RunInfo | None:
    """The fine-tune running now, if any (there is at most one)."""
    return next((r for r in list_runs() if r.state == "running"), None)


def cancel_run(name: str) -> None:
    """Ask the running job ``name`` to save a checkpoint and stop (as Ctrl-C does).

    ``TrainingError`` when no job of that name runs (its record names no live ``core.jobs`` process).
    """
    record = jobs.read_record(name)
    if record is None or not jobs.record_is_live(record):
        raise TrainingError(f"No fine-tune called '{name}' is running.")
    jobs.request_stop(name)  # reaches a detached job on Windows too, where no console signal does
    if os.name != "nt":
        try:
            os.kill(int(record["pid"]), signal.SIGINT)
        except ProcessLookupError as exc:
            raise TrainingError(f"The fine-tune '{name}' has just ended.") from exc
