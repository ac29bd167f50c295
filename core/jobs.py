"""Long work in a child process that reports progress as JSON lines.

``python -m core.jobs KIND SPEC.json`` runs one job; each line it writes to stdout is one JSON event
(``{"event": "step", ...}``). Anything else the job's libraries print goes to stderr, so the event
stream stays clean. SIGINT or SIGTERM asks the job to stop at its next safe point (the fine-tune saves a
checkpoint); a second signal stops it at once. ``JobProcess`` starts such a process and reads its events;
the CLI and the desktop drive jobs through it, so torch is only ever imported by the child.

A job whose spec has a ``name`` also keeps a record in ``<data>/jobs/NAME/``: ``events.jsonl`` (every
event, one per line, flushed as written, so a window opened later can replay and follow it) and
``job.json`` (pid, the process's start time to tell a reused pid apart, spec, start time, and at the end
the exit code). A resumed run appends to the same log. The record outlives the adapter's work folder,
which the job itself deletes at start.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from core.errors import HearthError
from core.paths import get_paths
from core.runtime import module_command

# Job kinds: module with ``main(spec: dict, emit, should_stop) -> int``.
JOB_KINDS: dict[str, str] = {
    "finetune": "core.finetune.job",
}


_ROOT = str(Path(__file__).resolve().parent.parent)


FINAL_EVENT = "job_did_end"  # the last line of every run the child could finish (with its exit code)
JOB_RECORD = "job.json"
EVENTS_LOG = "events.jsonl"
STOP_FILE = "stop"  # its appearance asks the job to stop, as SIGINT does (works where signals cannot reach)
# A second stop signal this soon after the first is the same request: a terminal's Ctrl-C reaches the
# whole process group (the job and the CLI), and the CLI passes it on to the job as well.
SAME_REQUEST_S = 1.0


class JobProcess:
    """One job running in a child process.

    ``detached=True`` starts it in its own session (POSIX) or detached process group (Windows): closing
    the window, or the terminal, does not stop it, and it keeps writing its events log when nobody reads
    its stdout any more. The default keeps it in the caller's process group, so a terminal's Ctrl-C
    reaches it.
    """

    def __init__(self, kind: str, spec: dict[str, Any], *, log_path: Path | None = None,
                 detached: bool = False) -> None:
        if kind not in JOB_KINDS:
            raise ValueError(f"unknown job kind {kind!r}")
        self.kind = kind
        self.detached = detached
        name = _job_name(spec)
        # Detached, the events come from the job's events log, not a pipe: a pipe nobody reads any more
        # (the window closed) would fill up and stall the job.
        self._name = name
        self._follow = name if detached else None
        self._follow_from = 0
        if self._follow:
            # The spec must outlive this object: the child may read it after the window has gone.
            folder = job_folder(self._follow)
            folder.mkdir(parents=True, exist_ok=True)
            self.spec_path = folder / "spec.json"
            _write_atomic(self.spec_path, spec)
            self._own_spec = False
            log = folder / EVENTS_LOG
            if spec.get("resume"):
                self._follow_from = log.stat().st_size if log.exists() else 0
            else:
                log.write_bytes(b"")  # a new run of this name: its log starts afresh
        else:
            handle, tmp = tempfile.mkstemp(prefix=f"hearth-{kind}-", suffix=".json")
            with os.fdopen(handle, "w", encoding="utf-8") as f:
                json.dump(spec, f)
            self.spec_path = Path(tmp)
            self._own_spec = True
        self.log_path = log_path
        self._log: IO[bytes] | None = open(log_path, "ab") if log_path else None  # noqa: SIM115
        kwargs: dict[str, Any] = {}
        if os.name == "nt":
            flags = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
            if detached:
                flags |= subprocess.DETACHED_PROCESS  # type: ignore[attr-defined]
            kwargs["creationflags"] = flags
        elif detached:
            kwargs["start_new_session"] = True
        self.proc = subprocess.Popen(
            module_command("core.jobs", kind, str(self.spec_path)),
            stdout=subprocess.DEVNULL if self._follow else subprocess.PIPE,
            stderr=self._log if self._log else subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
                 "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))},
            **kwargs,
        )
        self.last_error: dict[str, Any] | None = None
        if name:
            # The child writes this record itself once it runs; writing it now as well closes the gap in
            # which a second start would not yet see this job as running.
            _record_start(name, kind, spec, self.proc.pid, early=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self) -> Iterator[dict[str, Any]]:
        """The job's events as they arrive, until it exits (detached: from its events log)."""
        for event in self._raw_events():
            if event.get("event") == "error":
                self.last_error = event
            yield event
        self.proc.wait()

    def _raw_events(self) -> Iterator[dict[str, Any]]:
        if self._follow:
            yield from follow_log(self._follow, start=self._follow_from)
            return
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            event = _parse_event(raw)
            if event is not None:
                yield event

    def cancel(self) -> None:
        """Ask the job to stop at its next safe point (it saves a checkpoint first)."""
        if self.proc.poll() is None:
            if self._name:
                request_stop(self._name)  # reaches a detached job on Windows, where no console signal does
            if os.name == "nt":
                self.proc.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
            else:
                self.proc.send_signal(signal.SIGINT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def wait(self, timeout: float | None = None) -> int:
        code = self.proc.wait(timeout)
        self.close()
        return code

    def close(self) -> None:
        if self._log:
            self._log.close()
            self._log = None
        if self._own_spec:
            with contextlib.suppress(FileNotFoundError):
                self.spec_path.unlink()


# -- the job's record on disk ---------------------------------------------------------------------------
def job_folder(name: str) -> Path:
    """Where the job named ``name`` keeps its events log and ``job.json``."""
    if _job_name({"name": name}) is None:
        raise ValueError(f"not a job name: {name!r}")
    return get_paths().data / "jobs" / name


def _job_name(spec: dict[str, Any]) -> str | None:
    """The spec's ``name`` when it can name a folder (jobs without one keep no record)."""
    name = spec.get("name")
    if not isinstance(name, str) or not name or name.startswith(".") or "/" in name or "\\" in name:
        return None
    return name


def read_record(name: str) -> dict[str, Any] | None:
    """The job's ``job.json``, or ``None`` when it has none (or it cannot be read)."""
    try:
        data = json.loads((job_folder(name) / JOB_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def record_is_live(record: dict[str, Any]) -> bool:
    """Whether the process ``record`` names is still that job: alive, same start time, ``core.jobs``."""
    import psutil

    if record.get("exit_code") is not None:
        return False
    try:
        proc = psutil.Process(int(record.get("pid") or 0))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        created = record.get("create_time")
        if created is not None and abs(proc.create_time() - float(created)) > 1.0:
            return False  # the pid now belongs to another process
        return any("core.jobs" in part for part in proc.cmdline())
    except (psutil.Error, ValueError, TypeError):
        return False


def request_stop(name: str) -> None:
    """Ask the job ``name`` to stop at its next safe point, through its stop file (any platform)."""
    folder = job_folder(name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STOP_FILE).write_text(str(time.time()), encoding="utf-8")


def read_log(name: str) -> list[dict[str, Any]]:
    """Every event in the job's events log so far (a half-written last line is left out)."""
    try:
        raw = (job_folder(name) / EVENTS_LOG).read_bytes()
    except OSError:
        return []
    complete = raw[: raw.rfind(b"\n") + 1]
    return [e for e in (_parse_event(line) for line in complete.splitlines()) if e is not None]


def follow_log(name: str, *, start: int = 0, stop: Callable[[], bool] = lambda: False,
               poll_s: float = 0.2) -> Iterator[dict[str, Any]]:
    """The job's logged events from byte ``start`` (0: the beginning), then live while its process runs.

    Ends after the job's last event (``job_did_end``) once nothing follows it, when the process is gone
    and its log is read to the end, or when ``stop()`` turns true (asked between polls).
    """
    path = job_folder(name) / EVENTS_LOG
    offset, pending, last_kind = start, b"", None
    while True:
        try:
            with open(path, "rb") as handle:
                if os.fstat(handle.fileno()).st_size < offset:
                    offset, pending = 0, b""  # a new run of this name started the log afresh
                handle.seek(offset)
                chunk = handle.read()
        except FileNotFoundError:
            chunk = b""
        offset += len(chunk)
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            event = _parse_event(line)
            if event is not None:
                last_kind = event.get("event")
                yield event
        if stop():
            return
        if chunk:
            continue  # read on to the end before deciding anything
        record = read_record(name)
        live = record is not None and record_is_live(record)
        if last_kind == FINAL_EVENT and not live:
            return
        if not live:
            time.sleep(poll_s)  # lines written just before it ended are read, then it stops
            try:
                if path.stat().st_size > offset:
                    continue
            except OSError:
                pass
            return
        time.sleep(poll_s)


def _parse_event(raw: bytes) -> dict[str, Any] | None:
    line = raw.decode("utf-8", "replace").strip()
    if not line:
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _record_start(name: str, kind: str, spec: dict[str, Any], pid: int, *, early: bool) -> None:
    folder = job_folder(name)
    folder.mkdir(parents=True, exist_ok=True)
    if early:
        current = read_record(name)
        if current and current.get("pid") == pid:
            return  # the child was quicker: its own record stands
    _write_atomic(folder / JOB_RECORD, {
        "name": name, "kind": kind, "pid": pid, "create_time": _create_time(pid), "spec": spec,
        "started_at": time.time(), "resumed": bool(spec.get("resume")), "exit_code": None, "ended_at": None,
    })


def _record_end(name: str, code: int) -> None:
    record = read_record(name) or {"name": name}
    record.update(exit_code=code, ended_at=time.time())
    with contextlib.suppress(OSError):
        _write_atomic(job_folder(name) / JOB_RECORD, record)


def _event_writer(stream: IO[str], log: IO[str] | None = None) -> Callable[[dict[str, Any]], None]:
    lock = threading.Lock()
    state = {"stdout": True, "log": log is not None}

    def emit(event: dict[str, Any]) -> None:
        line = json.dumps(event, default=str, ensure_ascii=False) + "\n"
        with lock:
            if log is not None and state["log"]:
                try:
                    log.write(line)
                    log.flush()
                except OSError:  # a full disk must not end the training: stdout still carries the events
                    state["log"] = False
            if state["stdout"]:
                try:
                    stream.write(line)
                    stream.flush()
                except (BrokenPipeError, OSError, ValueError):
                    # Nobody reads stdout any more (the window closed): the events log carries on alone.
                    state["stdout"] = False

    return emit


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] not in JOB_KINDS:
        print(f"usage: python -m core.jobs {{{','.join(JOB_KINDS)}}} SPEC.json", file=sys.stderr)
        return 2
    kind, spec_path = args
    # Keep the real stdout for events; whatever else writes to stdout goes to stderr.
    events_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(1, "w", buffering=1, encoding="utf-8", closefd=False)
    stop = _install_stop_signals()
    spec_problem: str | None = None
    try:
        spec: Any = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        spec, spec_problem = None, f"cannot read the job's spec {spec_path}: {exc}"
    if spec is not None and not isinstance(spec, dict):
        spec_problem = f"the job's spec {spec_path} is not a JSON object"
    name = _job_name(spec) if isinstance(spec, dict) else None
    log = None
    should_stop = stop.is_set
    if name:
        assert isinstance(spec, dict)
        _record_start(name, kind, spec, os.getpid(), early=False)
        stop_file = job_folder(name) / STOP_FILE
        with contextlib.suppress(FileNotFoundError):
            stop_file.unlink()  # left by an earlier run of this name

        def should_stop() -> bool:
            return stop.is_set() or stop_file.exists()

        # A resumed run continues the log of the run it resumes; a new run starts it afresh.
        log = open(job_folder(name) / EVENTS_LOG, "a" if spec.get("resume") else "w",  # noqa: SIM115
                   encoding="utf-8", buffering=1)
    emit = _event_writer(os.fdopen(events_fd, "w", buffering=1, encoding="utf-8"), log)
    code = _run(kind, spec, spec_problem, emit, should_stop)
    emit({"event": FINAL_EVENT, "code": code})
    if name:
        _record_end(name, code)
    if log is not None:
        log.close()
    return code


def _install_stop_signals() -> threading.Event:
    stop = threading.Event()
    first = [0.0]

    def on_signal(signum: int, _frame: Any) -> None:
        # Only set the flag: the handler may interrupt the main thread inside ``emit`` (holding its lock).
        if not stop.is_set():
            first[0] = time.monotonic()
            stop.set()
        elif time.monotonic() - first[0] > SAME_REQUEST_S:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if hasattr(signal, "SIGBREAK"):
        signal.signal(signal.SIGBREAK, on_signal)
    return stop


def _run(kind: str, spec: Any, spec_problem: str | None, emit: Callable[[dict[str, Any]], None],
         should_stop: Callable[[], bool]) -> int:
    resumed = bool(spec.get("resume")) if isinstance(spec, dict) else False
    emit({"event": "job_did_start", "kind": kind, "pid": os.getpid(), "resumed": resumed})
    try:
        if spec_problem:
            raise RuntimeError(spec_problem)
        from core import trainpack

        trainpack.activate()  # the installed app's torch lives in the training pack
        module = importlib.import_module(JOB_KINDS[kind])
        code = int(module.main(spec, emit, should_stop))
    except HearthError as exc:
        emit({"event": "error", "kind": type(exc).__name__, "message": str(exc)})
        return exc.exit_code
    except KeyboardInterrupt:
        emit({"event": "cancelled", "message": "stopped at once (no checkpoint of the last steps)"})
        return 130
    except Exception as exc:  # a bug: report it in the stream as well as with its traceback
        traceback.print_exc()
        emit({"event": "error", "kind": "InternalError", "message": f"{type(exc).__name__}: {exc}",
              "detail": traceback.format_exc(limit=8)})
        return 3
    return code


if __name__ == "__main__":
    sys.exit(main())
