"""The fine-tune on N processes of this machine: the job process starts them with PyTorch's torchrun.

``run_processes`` runs inside the job process (``core.jobs``; its record, events log and stop handling
are unchanged). It starts ``python -m torch.distributed.run --standalone --nproc-per-node N --no-python
<python -m core.finetune.rank SPEC>`` in a session of its own (a terminal's Ctrl-C reaches the job, not
the ranks: the job turns it into a stop request), relays rank 0's events (its stdout) through ``emit``,
and passes a stop request on as a file that rank 0 reads each step (``core.finetune.rank``). When a rank
fails, the ranks' outcome files say which one failed first, and the job ends with one sentence naming it
and its log; torchrun itself stops the other ranks (``--max-restarts 0``), so nothing waits for a rank
that is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from core import errors
from core.errors import HearthError, TrainingError
from core.finetune.rank import CONTROL_ENV, JOB_PID_ENV, LOG_ENV, STOP_FILE, outcome_path, rank_log
from core.finetune.spec import FinetuneSpec
from core.runtime import code_command, module_command

Emit = Callable[[dict[str, Any]], None]
EXIT_CANCELLED = 130
POLL_S = 0.25
TERMINATE_GRACE_S = 40.0  # torchrun gives its ranks 30 s after SIGTERM before it kills them

# torchrun's own entry point, after the training pack is on sys.path (the installed app's torch lives there).
_TORCHRUN = ("import sys\nfrom core import trainpack\ntrainpack.activate()\n"
             "from torch.distributed.run import main\nmain(sys.argv[1:])\n")


def rank_log_template(name: str) -> str:
    """Where ranks other than 0 write their stderr: beside the job's log, ``finetune-NAME.rank{rank}.log``."""
    from core.finetune.runs import log_path

    path = log_path(name)
    return str(path.with_name(f"{path.stem}.rank{{rank}}{path.suffix}"))


def check_capacity(nproc: int, device: str) -> None:
    """Refuse more processes than this machine can give one each (a GPU each on CUDA, a core each on the CPU)."""
    import torch

    if device == "mps":
        raise TrainingError("Several processes cannot share Apple's GPU (MPS): use --nproc 1, or --device cpu.")
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("No CUDA GPU is available: use --device cpu (or auto).")
    # Counting GPUs does not create a CUDA context here (this process only relays events: its GPU memory
    # would be lost to the ranks); the ranks pick their device as one process does (pick_device).
    if device in ("auto", "cuda") and torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        if nproc > gpus:
            raise TrainingError(f"--nproc {nproc} needs {nproc} GPUs (one per process) and this computer has {gpus}: "
                                f"use --nproc {gpus} or fewer.")
        return
    cores = os.cpu_count() or 1
    if nproc > cores:
        raise TrainingError(f"--nproc {nproc} is more processes than this computer's {cores} CPU cores: "
                            f"use --nproc {cores} or fewer.")


def run_processes(spec_data: dict[str, Any], emit: Emit, should_stop: Callable[[], bool]) -> int:
    """Run the job on ``spec.nproc`` processes; returns 0 (done) or 130 (stopped), raises on a failure."""
    import psutil

    spec = FinetuneSpec.from_dict(spec_data)
    spec.check()
    check_capacity(spec.nproc, spec.device)
    control = Path(tempfile.mkdtemp(prefix="hearth-ranks-"))
    spec_path = control / "spec.json"
    spec_path.write_text(json.dumps(spec_data), encoding="utf-8")
    logs = rank_log_template(spec.name)
    Path(logs).parent.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // spec.nproc)
    env = {**os.environ, CONTROL_ENV: str(control), LOG_ENV: logs, "PYTHONUNBUFFERED": "1",
           JOB_PID_ENV: f"{os.getpid()}:{psutil.Process().create_time()}", "OMP_NUM_THREADS": str(threads)}
    command = code_command(_TORCHRUN, "--standalone", "--nproc-per-node", str(spec.nproc), "--max-restarts", "0",
                           "--no-python", *module_command("core.finetune.rank", str(spec_path)))
    kwargs: dict[str, Any] = {}
    if os.name == "nt":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
    else:
        kwargs["start_new_session"] = True  # Ctrl-C reaches the job, which asks rank 0 to stop
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, **kwargs)
    assert proc.stdout is not None
    events: queue.Queue[dict[str, Any] | None] = queue.Queue()
    threading.Thread(target=_read_events, args=(proc.stdout, events), name="hearth-rank0-events", daemon=True).start()
    last: str | None = None
    try:
        stop_sent = False
        while True:
            try:
                event = events.get(timeout=POLL_S)
            except queue.Empty:
                event = {}
            if not stop_sent and should_stop():
                (control / STOP_FILE).write_text(str(time.time()), encoding="utf-8")
                stop_sent = True
            if event is None:
                break
            if event:
                if event.get("event") in ("done", "cancelled", "error"):
                    last = str(event["event"])
                emit(event)
        code = proc.wait()
        return _result(control, spec, last, code)
    finally:
        _stop(proc)
        shutil.rmtree(control, ignore_errors=True)


def _read_events(stream: IO[bytes], out: queue.Queue[dict[str, Any] | None]) -> None:
    from core.jobs import _parse_event

    for raw in stream:
        event = _parse_event(raw)
        if event is not None:
            out.put(event)
    out.put(None)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End torchrun and its ranks when the job ends before they did (an error here, a second Ctrl-C)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(OSError):
        proc.send_signal(signal.SIGTERM)  # torchrun passes it on to the ranks
    try:
        proc.wait(TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            if os.name == "nt":
                proc.kill()
            else:
                os.killpg(proc.pid, signal.SIGKILL)
        # The ranks see this job's process gone and end themselves (core.finetune.rank's watcher).


def _result(control: Path, spec: FinetuneSpec, last: str | None, code: int) -> int:
    if last == "done":
        return 0
    if last == "cancelled":
        return EXIT_CANCELLED
    outcomes = _outcomes(control, spec.nproc)
    zero = outcomes.get(0, {})
    if last is None and zero.get("state") == "done":
        return 0
    raise _failure(outcomes, spec, code)


def _outcomes(control: Path, nproc: int) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    for rank in range(nproc):
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(outcome_path(control, rank).read_text(encoding="utf-8"))
            if isinstance(data, dict):
                found[rank] = data
    return found


def _failure(outcomes: dict[int, dict[str, Any]], spec: FinetuneSpec, code: int) -> HearthError:
    """The error to end the job with: the rank that failed first, in one sentence with its log."""
    logs = rank_log_template(spec.name)
    then = f"Continue with 'hearth finetune ... --resume --out {spec.name}'."

    def where(rank: int) -> str:
        from core.finetune.runs import log_path

        log = str(log_path(spec.name)) if rank == 0 else rank_log(logs, rank)
        return f"training process {rank + 1} of {spec.nproc} (rank {rank}; its log: {log})"

    errors_seen = sorted((o for o in outcomes.values() if o.get("state") == "error"), key=lambda o: o.get("time", 0))
    if errors_seen:
        first = errors_seen[0]
        rank, kind, message = int(first["rank"]), str(first.get("kind") or ""), str(first.get("message") or "")
        if kind != "InternalError":
            # The job's own error (bad data, a base model that differs between ranks): its words, its type.
            cls = getattr(errors, kind, None)
            error_type = cls if isinstance(cls, type) and issubclass(cls, HearthError) else TrainingError
            return error_type(message if rank == 0 else f"{message} ({where(rank)})")
        return TrainingError(f"The {where(rank)} failed: {message}. {then}")
    # A rank that never wrote how it ended was killed (out of memory, a signal) or crashed natively.
    vanished = [r for r in range(spec.nproc) if outcomes.get(r, {}).get("state") in (None, "running")]
    vanished.sort(key=lambda r: (r == 0, r))  # rank 0 also speaks through the job's own log
    if vanished:
        return TrainingError(f"The {where(vanished[0])} stopped unexpectedly (killed, out of memory, or crashed), "
                             f"and the others were stopped with it. {then}")
    return TrainingError(f"The training processes lost contact with each other (torchrun exit code {code}); see "
                         f"{where(0)}. {then}")
