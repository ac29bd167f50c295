"""The installed app's entry point: PyInstaller makes this file the `hearth` program.

``freeze_support()`` lets the engine's worker (multiprocessing, spawn) start as a child of the frozen
program; ``core.runtime.dispatch`` runs the children Hearth starts itself (jobs, probes, pip for the
training pack), then the command line: no arguments open the window.
"""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from core.cli import main
    from core.runtime import dispatch

    sys.exit(dispatch(sys.argv, main))
