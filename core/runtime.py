"""How Hearth starts its own Python code in a child process, from a source checkout or the installed app.

In a source checkout ``sys.executable`` is Python, so a child is ``python -m core.jobs ...``. In the
installed app (PyInstaller, ``sys.frozen``) ``sys.executable`` is the ``hearth`` program itself and
has no ``-m``: it takes ``--hearth-run-module MODULE`` and ``--hearth-run-code CODE`` instead, read
by :func:`dispatch` before the command line (packaging/hearth_entry.py calls it). The engine
worker uses ``multiprocessing`` (spawn), which PyInstaller supports once ``freeze_support()`` runs.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Callable, Sequence

RUN_MODULE = "--hearth-run-module"
RUN_CODE = "--hearth-run-code"


def frozen() -> bool:
    """True in the installed app (a PyInstaller bundle), False in a source checkout."""
    return bool(getattr(sys, "frozen", False))


def module_command(module: str, *args: str) -> list[str]:
    """The command that runs ``module`` as ``__main__`` in a child process."""
    if frozen():
        return [sys.executable, RUN_MODULE, module, *args]
    return [sys.executable, "-m", module, *args]


def code_command(code: str, *args: str) -> list[str]:
    """The command that runs the Python source ``code`` in a child process (``sys.argv[1:]`` = args)."""
    if frozen():
        return [sys.executable, RUN_CODE, code, *args]
    return [sys.executable, "-c", code, *args]


def dispatch(argv: Sequence[str], main: Callable[[list[str]], int]) -> int:
    """Run a child's module or code when ``argv`` asks for one, else ``main(argv[1:])``."""
    args = list(argv[1:])
    if len(args) >= 2 and args[0] == RUN_MODULE:
        sys.argv = [args[1], *args[2:]]
        try:
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            return _exit_code(exc.code)
        return 0
    if len(args) >= 2 and args[0] == RUN_CODE:
        sys.argv = ["-c", *args[2:]]
        try:
            exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
        except SystemExit as exc:
            return _exit_code(exc.code)
        return 0
    return main(args)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1

