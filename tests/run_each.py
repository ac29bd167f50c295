"""Run test files one process each (the window's tests): ``python -m tests.run_each FILE... [-- PYTEST_ARGS]``.

Each file gets a fresh interpreter, so one file's Qt teardown cannot take the others down. A file whose
process is killed by a signal (a native crash, not a failed assertion) is reported with the head of its
fault dump — the frames that crashed, which a log's tail would cut — and run again, up to ``RERUNS``
times; a failed test, or a file that crashes every time, fails the run. Crashes are always listed at the
end, retried or not. (The rare crashes this was written for, SIGSEGV/SIGABRT/SIGBUS in a different file
each run, came from ops freeing widgets off the GUI thread: fixed in ``desktop/ops.py``; a new one shows.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile

RERUNS = 4


def _run(path: str, args: list[str]) -> tuple[int, str]:
    with tempfile.TemporaryFile("w+") as dump:
        env = dict(os.environ, PYTHONFAULTHANDLER="1")
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", path, *args], env=env, stderr=dump)
        dump.seek(0)
        text = dump.read()
    sys.stderr.write(text if code >= 0 else "")
    return code, text


def _crash_head(text: str, lines: int = 40) -> str:
    start = text.find("Fatal Python error")
    if start < 0:  # no fault dump (the crash came outside a test, or the handler could not run)
        tail = text.splitlines()[-lines:]
        return "(no fault dump; the last lines the process wrote to stderr:)\n" + "\n".join(tail)
    return "\n".join(text[start:].splitlines()[:lines])


def main(argv: list[str]) -> int:
    files, args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    crashes: list[str] = []
    for path in files:
        print(f"== {path}", flush=True)
        code, text = _run(path, args)
        reruns = RERUNS
        while code < 0:
            name = signal.Signals(-code).name
            crashes.append(f"{path}: {name}")
            print(f"!! {path}: the test process died of {name}; the crash:\n{_crash_head(text)}", flush=True)
            if not reruns:
                break
            reruns -= 1
            print(f"!! running {path} again", flush=True)
            code, text = _run(path, args)
        if code != 0:
            print(f"FAILED: {path} (exit {code})", flush=True)
            return 1
    for line in crashes:
        print(f"note: native crash, the file passed when run again: {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
