"""Starting the desktop app: ``hearth`` with no arguments, or ``python -m desktop``.

``HEARTH_QUIT_AFTER_SHOW=1`` prints one line when the main window's first frame is painted
(``MainWindow.first_painted``), with the wall-clock time (``time.time()``), and quits
(``bench/startup.py`` times that).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence

# Imported here, not in main(): a missing PySide6 then fails the import, which ``hearth`` turns into
# a one-line "install the desktop extra" message (core.cli.open_desktop).
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication


def _setup_logging() -> None:
    from core.paths import get_paths

    logs = get_paths().logs
    try:
        logs.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(logs / "desktop.log", encoding="utf-8")
    except OSError:
        handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None, *, self_test: str | None = None) -> int:
    """Open the main window and run until it is closed; returns the exit code.

    ``self_test``: a screenshot path; the window chats a few tokens, saves it and quits (desktop.selftest).
    """
    existing = QApplication.instance()
    if existing is None:
        from desktop.preflight import EXIT_MISSING, check

        # Before Qt tries its X11 plugin: a missing system library there aborts the process.
        problem = check()
        if problem:
            print(problem, file=sys.stderr)
            return EXIT_MISSING
    _setup_logging()
    app = existing if isinstance(existing, QApplication) else QApplication(list(argv or sys.argv))
    app.setApplicationName("Hearth")
    app.setOrganizationName("Hearth")
    app.setDesktopFileName("hearth")

    from desktop.views.main_window import MainWindow

    window = MainWindow()
    test = None
    if self_test:
        from pathlib import Path

        from desktop.selftest import SelfTest

        test = SelfTest(app, window, Path(self_test))
    if os.environ.get("HEARTH_QUIT_AFTER_SHOW"):

        def painted() -> None:
            print(f"hearth: window shown {time.time():.6f}", flush=True)
            QTimer.singleShot(0, app.quit)

        window.first_painted.connect(painted)

    def scheme_changed(*_args: object) -> None:
        if window.settings.theme == "system":
            window.set_theme("system")

    app.styleHints().colorSchemeChanged.connect(scheme_changed)
    window.show()
    code = app.exec()
    window.shutdown()
    window.deleteLater()
    return test.code if test is not None else int(code)


if __name__ == "__main__":
    raise SystemExit(main())
