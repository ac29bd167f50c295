"""Long work in a child process that reports progress as JSON lines.

``python -m core.jobs KIND SPEC.json`` runs one job; each line it writes to stdout is one JSON event
(``{"event": "step", ...}``). Anything else the job's libraries print goes to stderr, so the event
stream stays clean. SIGINT or SIGTERM asks the job to stop at its next safe point (the fine-tune saves a
checkpoint); a second signal stops it at once. ``JobProcess`` starts such a process and reads its events;
the CLI and the desktop drive jobs through it, so torch is only ever imported by the child.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from core.errors import HearthError

# Job kinds: module with ``main(spec: dict, emit, should_stop) -> int``.
JOB_KINDS: dict[str, str] = {
    "finetune": "core.finetune.job",
}


_ROOT = str(Path(__file__).resolve().parent.parent)


class JobProcess:
    """One job running in a child process."""

    def __init__(self, kind: str, spec: dict[str, Any], *, log_path: Path | None = None) -> None:
        if kind not in JOB_KINDS:
            raise ValueError(f"unknown job kind {kind!r}")
        self.kind = kind
        handle, name = tempfile.mkstemp(prefix=f"hearth-{kind}-", suffix=".json")
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            json.dump(spec, f)
        self.spec_path = Path(name)
        self.log_path = log_path
        self._log: IO[bytes] | None = open(log_path, "ab") if log_path else None  # noqa: SIM115
        kwargs: dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "core.jobs", kind, str(self.spec_path)],
            stdout=subprocess.PIPE,
            stderr=self._log if self._log else subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
                 "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))},
            **kwargs,
        )
        self.last_error: dict[str, Any] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self) -> Iterator[dict[str, Any]]:
        """The job's events as they arrive, until it exits."""
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                if event.get("event") == "error":
                    self.last_error = event
                yield event
        self.proc.wait()

    def cancel(self) -> None:
        """Ask the job to stop at its next safe point (it saves a checkpoint first)."""
        if self.proc.poll() is None:
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
        try:
            self.spec_path.unlink()
        except FileNotFoundError:
            pass


def _event_writer(stream: IO[str]) -> Callable[[dict[str, Any]], None]:
    lock = threading.Lock()

    def emit(event: dict[str, Any]) -> None:
        line = json.dumps(event, default=str, ensure_ascii=False)
        with lock:
            stream.write(line + "\n")
            stream.flush()

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
    emit = _event_writer(os.fdopen(events_fd, "w", buffering=1, encoding="utf-8"))
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        # Only set the flag: the handler may interrupt the main thread inside ``emit`` (holding its lock).
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if hasattr(signal, "SIGBREAK"):
        signal.signal(signal.SIGBREAK, on_signal)
    emit({"event": "job_did_start", "kind": kind, "pid": os.getpid()})
    try:
        spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
        module = importlib.import_module(JOB_KINDS[kind])
        code = int(module.main(spec, emit, stop.is_set))
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
    emit({"event": "job_did_end", "code": code})
    return code


if __name__ == "__main__":
    sys.exit(main())
