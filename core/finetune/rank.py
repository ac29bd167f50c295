"""One training process of several: ``python -m core.finetune.rank SPEC.json`` under torchrun or ``accelerate launch``.

The launcher sets ``RANK``/``WORLD_SIZE``/... (``core.finetune.distributed.Dist.from_env``); this module runs
the same job as ``core.finetune.job.run`` in that place. Rank 0 writes the job's events as JSON lines on
stdout (as ``core.jobs`` does); everything else any rank prints goes to stderr.

Started by Hearth's own launcher (``core.finetune.torchrun``: ``HEARTH_RANK_CONTROL`` names its folder),
a rank also: writes its outcome to ``CONTROL/rank<R>.json`` (so the launcher can say which rank failed
and why), sends its stderr to its own log (ranks other than 0), takes a stop request from the file
``CONTROL/stop`` (rank 0 reads it; the step's all-reduce carries the answer to the others), and ends
itself when the job process that started it is gone (``HEARTH_JOB_PID``), without saving anything: a
killed job is a crash, and its last checkpoint stands for ``--resume``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

CONTROL_ENV = "HEARTH_RANK_CONTROL"  # the launcher's folder: stop file, outcomes
JOB_PID_ENV = "HEARTH_JOB_PID"  # the job process that started the ranks; "pid:create_time"
LOG_ENV = "HEARTH_RANK_LOG"  # stderr log of ranks other than 0, "{rank}" replaced
STOP_FILE = "stop"
EXIT_ORPHANED = 75  # the job process went away: this rank stopped without saving
WATCH_S = 1.0


def outcome_path(control: Path, rank: int) -> Path:
    return control / f"rank{rank}.json"


def rank_log(template: str, rank: int) -> str:
    return template.replace("{rank}", str(rank))


class Outcome:
    """This rank's state for the launcher: running, done, cancelled, error, lost (a peer went), terminated."""

    def __init__(self, control: Path | None, rank: int, log: str) -> None:
        self.path = outcome_path(control, rank) if control else None
        self.rank = rank
        self.log = log

    def write(self, state: str, **extra: Any) -> None:
        if self.path is None:
            return
        data = {"rank": self.rank, "pid": os.getpid(), "state": state, "time": time.time(), "log": self.log, **extra}
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            tmp.write_text(json.dumps(data), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            pass  # the launcher has gone and taken its folder: nobody is left to read it


def _parent_alive(spec: str) -> bool:
    import psutil

    pid_text, _, created = spec.partition(":")
    try:
        proc = psutil.Process(int(pid_text))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return not created or abs(proc.create_time() - float(created)) < 1.0
    except (psutil.Error, ValueError):
        return False


def _watch_parent(spec: str, outcome: Outcome, control: Path | None) -> None:
    """End this process when the job that started the ranks is gone (killed: nobody relays the events)."""

    def watch() -> None:
        while True:
            time.sleep(WATCH_S)
            if not _parent_alive(spec):
                outcome.write("orphaned")
                if control is not None and outcome.rank == 0:
                    shutil.rmtree(control, ignore_errors=True)  # the launcher that would have removed it is gone
                os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="hearth-parent-watch", daemon=True).start()


def _peer_lost(exc: BaseException) -> bool:
    """An error that only says another rank went away (the launcher names the one that failed first)."""
    try:
        import torch.distributed as dist

        if isinstance(exc, dist.DistError):
            return True
    except ImportError:  # pragma: no cover - torch is there whenever a rank runs
        pass
    text = str(exc).lower()
    return any(words in text for words in ("connection closed by peer", "connection reset", "broken pipe",
                                           "timed out", "socket timeout"))


def _stop_signals(outcome: Outcome) -> threading.Event:
    """SIGINT asks for a stop at the next step (a second one stops at once); SIGTERM ends the rank now.

    torchrun sends SIGTERM to every rank when one fails: waiting for a step that cannot finish would
    only delay the error the launcher reports.
    """
    stop = threading.Event()

    def on_int(_signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    def on_term(_signum: int, _frame: Any) -> None:
        outcome.write("terminated")
        os._exit(128 + signal.SIGTERM)

    signal.signal(signal.SIGINT, on_int)
    signal.signal(signal.SIGTERM, on_term)
    return stop


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m core.finetune.rank SPEC.json  (under torchrun or accelerate launch)", file=sys.stderr)
        return 2
    from core.finetune.distributed import Dist
    from core.jobs import _event_writer

    dist = Dist.from_env()
    control = Path(os.environ[CONTROL_ENV]) if os.environ.get(CONTROL_ENV) else None
    log = ""
    if control and not dist.main and os.environ.get(LOG_ENV):
        log = rank_log(os.environ[LOG_ENV], dist.rank)
        try:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(handle, 2)
            os.close(handle)
        except OSError:
            log = ""  # stderr stays the launcher's (the job's log)
    # Keep the real stdout for rank 0's events; whatever else writes to stdout goes to stderr.
    events_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(1, "w", buffering=1, encoding="utf-8", closefd=False)
    outcome = Outcome(control, dist.rank, log)
    outcome.write("running")
    if os.environ.get(JOB_PID_ENV):
        _watch_parent(os.environ[JOB_PID_ENV], outcome, control)
    stop = _stop_signals(outcome)
    stop_file = control / STOP_FILE if control else None

    parent = os.environ.get(JOB_PID_ENV, "")

    def should_stop() -> bool:
        # Asked by rank 0 before every step: a job killed meanwhile ends the ranks before they train (or
        # checkpoint) any further, as a crash would; the watcher covers the time outside the steps.
        if parent and not _parent_alive(parent):
            outcome.write("orphaned")
            os._exit(EXIT_ORPHANED)
        return stop.is_set() or (stop_file is not None and stop_file.exists())

    if dist.main:
        emit = _event_writer(os.fdopen(events_fd, "w", buffering=1, encoding="utf-8"))
    else:
        os.close(events_fd)

        def emit(_event: dict[str, Any]) -> None:
            return None

    from core import trainpack
    from core.errors import HearthError

    trainpack.activate()  # the installed app's torch lives in the training pack
    code = 1
    try:
        from core.finetune.job import run
        from core.finetune.launchers import spec_from_file

        # Checked, with paths relative to the spec's folder made absolute (an exported launch's spec.json).
        spec = spec_from_file(Path(args[0]))
        code = run(spec, emit, should_stop, dist)
        outcome.write("cancelled" if code == 130 else "done", code=code)
    except HearthError as exc:
        outcome.write("error", kind=type(exc).__name__, message=str(exc), code=exc.exit_code)
        if control is None:  # under another launcher, rank 0's stream carries the error as core.jobs would
            emit({"event": "error", "kind": type(exc).__name__, "message": str(exc)})
        code = exc.exit_code
    except KeyboardInterrupt:
        outcome.write("cancelled", code=130, message="stopped at once (no checkpoint of the last steps)")
        emit({"event": "cancelled", "message": "stopped at once (no checkpoint of the last steps)"})
        code = 130
    except Exception as exc:  # a bug, or another rank went away: the traceback goes to this rank's log
        traceback.print_exc()
        state = "lost" if _peer_lost(exc) else "error"
        outcome.write(state, kind="InternalError", message=f"{type(exc).__name__}: {exc}", code=3)
        if control is None:
            emit({"event": "error", "kind": "InternalError", "message": f"{type(exc).__name__}: {exc}"})
        code = 3
    if code in (0, 130):
        _leave_group()  # after a failure the process just ends: closing a group whose peers are gone can block
    if control is not None and code in (0, 130):
        # Hearth's launcher reads the outcome from the events and files; a non-zero exit here would make
        # torchrun stop the other ranks (rank 0 may still be saving a checkpoint).
        return 0
    return code


def _leave_group() -> None:
    try:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # a group whose peers are gone cannot always be closed cleanly
        pass


def _end(code: int) -> None:
    """Exit with ``code`` once the outcome is written, skipping C++ teardown: gloo's threads, still joinable
    when their statics are destroyed, can abort a finished process ("terminate called without an active
    exception"), and the launcher would read a run that finished as a rank that failed."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _end(main())
