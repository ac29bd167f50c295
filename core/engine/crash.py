"""Words for the way a worker process ended, from its exit code and what the OS says about memory.

A worker that returns normally never ends a request: only a native crash or the OS ends it. Python
reports a process killed by a signal as a negative exit code. Whether the kernel's out-of-memory
killer did it is read from the cgroup's counter (cgroup v2 ``memory.events``, v1
``memory.oom_control``: the ``oom_kill`` line, Linux ``Documentation/admin-guide/cgroup-v2.rst``);
elsewhere a SIGKILL is reported as "probably out of memory".
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

NATIVE_CRASHES = {"SIGSEGV", "SIGABRT", "SIGBUS", "SIGFPE"}


def oom_kills() -> int | None:
    """How many processes of this process's cgroup the kernel's OOM killer has ended (None: unknown)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    candidates: list[Path] = []
    for line in lines:
        _id, controllers, path = [*line.split(":", 2), "", ""][:3]
        rel = path.lstrip("/")
        if controllers == "":  # cgroup v2 (unified)
            candidates += [Path("/sys/fs/cgroup") / rel / "memory.events", Path("/sys/fs/cgroup/unified") / rel / "memory.events"]
        elif "memory" in controllers.split(","):
            candidates.append(Path("/sys/fs/cgroup/memory") / rel / "memory.oom_control")
    for candidate in candidates:
        try:
            for entry in candidate.read_text().splitlines():
                key, _, value = entry.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def signal_name(number: int) -> str:
    """A signal's name ("SIGABRT") from its number, as a process killed by it reports ``-number``."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exit_words(code: int | None) -> str:
    """How a process ended, in a word or two: "SIGABRT", "exit code 1"."""
    return signal_name(-code) if code is not None and code < 0 else f"exit code {code}"


def describe_exit(code: int | None, oom_before: int | None = None) -> str:
    """How the engine process ended, in a user's words, with what to do."""
    saved = "Your chat is saved; load the model again"
    if code is None:
        return f"The engine process stopped answering. {saved}."
    if code >= 0:
        return (f"The engine process ended unexpectedly (exit code {code}). {saved}; if it happens again, "
                "see the engine log in Hearth's log folder.")
    name = signal_name(-code)
    if name == "SIGKILL":
        after = oom_kills()
        if oom_before is not None and after is not None and after > oom_before:
            return (f"The engine process ran out of memory: the system stopped it (SIGKILL). {saved} with a smaller "
                    "context length, or pick a smaller quant or model.")
        return (f"The engine process was killed (SIGKILL), usually because the system ran out of memory or "
                f"another program stopped it. {saved}, or pick a smaller model if memory is short.")
    if name == "SIGILL":
        return (f"The engine process crashed (SIGILL): this build of llama.cpp uses CPU instructions this "
                f"processor lacks. {saved} after reinstalling Hearth for this machine.")
    if name in NATIVE_CRASHES:
        return (f"The engine process crashed in llama.cpp ({name}): the model file may be damaged or "
                f"unsupported. {saved} or try another model.")
    return f"The engine process was stopped by {name}. {saved}."
