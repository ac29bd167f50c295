"""Time from process start to the main window shown (``python -m desktop``), median of several runs.

    .venv/bin/python -m bench.startup [--runs 7]

Each run starts a fresh interpreter with ``HEARTH_QUIT_AFTER_SHOW=1`` (the app prints a line at its
first show event and quits) in a scratch ``HEARTH_HOME`` that already holds the starter model, so
the figure is the warm start a returning user sees. The first run (cold disk cache) is reported
apart. For scale, the same interpreter's bare ``import PySide6.QtWidgets`` + ``QApplication`` is
timed side by side: the ratio says how much Hearth adds on top of Qt itself.

``--installed build/package/dist/hearth/hearth`` also times the installed app (``make package``'s
PyInstaller folder) in the same rounds, against the source checkout.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, median, starter_model_path

QT_ONLY = (
    "from PySide6.QtWidgets import QApplication, QMainWindow; from PySide6.QtCore import QTimer; "
    "app = QApplication([]); w = QMainWindow(); w.show(); print('shown', flush=True); "
    "QTimer.singleShot(0, app.quit); app.exec()"
)


def _time_until_shown(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    elapsed = None
    for line in proc.stdout:
        if "shown" in line:
            elapsed = time.perf_counter() - start
            break
    proc.wait(timeout=120)
    if elapsed is None:
        raise SystemExit(f"the window never reported being shown (exit code {proc.returncode})")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--installed", type=Path, help="the installed app's hearth program, timed as well")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hearth-bench-") as home:
        models = Path(home) / "data" / "models"
        models.mkdir(parents=True)
        starter = starter_model_path()
        os.link(starter, models / starter.name)
        env = dict(os.environ, HEARTH_HOME=home, HEARTH_QUIT_AFTER_SHOW="1", HF_HUB_OFFLINE="1")
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
        app_cmd = [sys.executable, "-m", "desktop"]
        qt_cmd = [sys.executable, "-c", QT_ONLY]
        first = _time_until_shown(app_cmd, env)
        hearth, qt, installed = [], [], []
        if args.installed:
            _time_until_shown([str(args.installed)], env)  # its first (cold) start is not counted
        for _ in range(args.runs):
            hearth.append(_time_until_shown(app_cmd, env))
            qt.append(_time_until_shown(qt_cmd, env))
            if args.installed:
                installed.append(_time_until_shown([str(args.installed)], env))
    h, q = median(hearth), median(qt)
    print(f"first run (cold):           {first:.3f} s")
    print(f"Hearth window shown:        median {h:.3f} s  (min {min(hearth):.3f}, max {max(hearth):.3f}, {args.runs} runs)")
    print(f"bare Qt window shown:       median {q:.3f} s")
    print(f"Hearth / bare Qt:           {h / q:.2f}x   (target: Hearth under 1.5 s)")
    if installed:
        i = median(installed)
        print(f"installed app window shown: median {i:.3f} s  (min {min(installed):.3f}, max {max(installed):.3f})")
        print(f"installed / source:         {i / h:.2f}x")


if __name__ == "__main__":
    main()
