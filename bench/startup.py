"""Time from process launch to the main window's first painted frame, Hearth beside a bare Qt window.

    .venv/bin/python -m bench.startup [--runs 7] [--platform xvfb|offscreen] [--installed PATH]

Each run starts a fresh interpreter with ``HEARTH_QUIT_AFTER_SHOW=1``: the app prints the wall-clock
time at which its main window's first frame has painted (``MainWindow.first_painted``) and
quits. The figure is that time minus the time just before the process was launched, so it covers the
interpreter's start, the imports, the window's construction and its first paint. The scratch
``HEARTH_HOME`` already holds the starter model and two saved chats: the warm start a returning user
sees. Python's compiled modules are cached (in the scratch folder) as an installed app has them, even
where ``PYTHONDONTWRITEBYTECODE`` is set. The first run (cold disk cache, modules compiled) is reported
apart.

A bare Qt window (``QApplication`` + an empty ``QMainWindow`` of the same size, timed to its first
frame the same way) runs in the same rounds, alternating with Hearth, so both see the same load on
the machine; the ratio says how much Hearth adds on top of Qt itself. Target: Hearth <= 0.6 s.

``--platform xvfb`` (the default when ``Xvfb`` is installed) runs both under one Xvfb server, as a
desktop session would; ``offscreen`` uses Qt's offscreen platform.
``--installed build/package/dist/hearth/hearth`` also times the installed app (``make package``'s
PyInstaller folder) in the same rounds, against the source checkout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import ROOT, median, starter_model_path

TARGET_S = 0.6

# The same first-frame report as MainWindow.first_painted (a zero timer after the first paint event),
# inlined so that the bare window imports nothing of Hearth.
QT_ONLY = """
import time
from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication, QMainWindow

class FirstFrame(QObject):
    def eventFilter(self, watched, event):
        if event.type() == QEvent.Type.Paint:
            watched.removeEventFilter(self)
            QTimer.singleShot(0, self.report)
        return False

    def report(self):
        print(f"bare Qt: window shown {time.time():.6f}", flush=True)
        app.quit()

app = QApplication([])
w = QMainWindow()
w.setWindowTitle("Hearth")
w.resize(1240, 780)
f = FirstFrame(w)
w.installEventFilter(f)
w.show()
app.exec()
"""


def _time_to_first_frame(args: list[str], env: dict[str, str]) -> float:
    """Seconds from just before launching ``args`` to the first frame it reports painting."""
    start = time.time()
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    painted = None
    for line in proc.stdout:
        if "window shown" in line:
            painted = float(line.split()[-1])
            break
    proc.wait(timeout=120)
    if painted is None:
        raise SystemExit(f"{args[-1][:40]!r}: the window never reported its first frame (exit code {proc.returncode})")
    return painted - start


@contextmanager
def _display(platform: str) -> Iterator[dict[str, str]]:
    """Environment for the windows: one Xvfb server for the whole bench, or Qt's offscreen platform."""
    if platform == "offscreen":
        yield {"QT_QPA_PLATFORM": "offscreen"}
        return
    for number in range(91, 120):
        if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
            break
    xvfb = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1920x1080x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):  # the server is ready when its socket appears
            if Path(f"/tmp/.X11-unix/X{number}").exists():
                break
            time.sleep(0.05)
        yield {"QT_QPA_PLATFORM": "xcb", "DISPLAY": f":{number}"}
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=10)


def _returning_user(home: Path) -> None:
    """The starter model in the library folder and two saved chats, as a returning user has them."""
    models = home / "data" / "models"
    models.mkdir(parents=True)
    starter = starter_model_path()
    os.link(starter, models / starter.name)
    code = (
        "from core.chats import ChatStore, Message; from core.paths import get_paths\n"
        "s = ChatStore(get_paths().ensure().chats_db)\n"
        "c = s.create(title='Reverse a string in Python', model='starter')\n"
        "s.add_message(c.id, Message(role='user', content='How do I reverse a string in Python?'))\n"
        "s.add_message(c.id, Message(role='assistant', content='Use slicing: `text[::-1]`.', finish_reason='stop'))\n"
        "s.create(title='Packing list for a weekend hike', model='starter'); s.close()\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, HEARTH_HOME=str(home)), check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--platform", choices=("xvfb", "offscreen"),
                        default="xvfb" if shutil.which("Xvfb") else "offscreen")
    parser.add_argument("--installed", type=Path, help="the installed app's hearth program, timed as well")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hearth-bench-") as home, _display(args.platform) as display:
        _returning_user(Path(home))
        env = dict(os.environ, HEARTH_HOME=home, HEARTH_QUIT_AFTER_SHOW="1", HF_HUB_OFFLINE="1", **display)
        # Compiled modules cached as an installed app has them (pip and the installer ship .pyc files): with
        # PYTHONDONTWRITEBYTECODE set, as in some shells and CI, every start compiled Hearth's ~60 modules
        # from source again (0.1-0.15 s). The cache goes to the scratch folder, not the checkout.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(home) / "pycache")
        app_cmd = [sys.executable, "-m", "desktop"]
        qt_cmd = [sys.executable, "-c", QT_ONLY]
        first = _time_to_first_frame(app_cmd, env)
        _time_to_first_frame(qt_cmd, env)  # warms the Qt libraries' pages for the bare window too
        hearth, qt, installed = [], [], []
        if args.installed:
            _time_to_first_frame([str(args.installed)], env)  # its first (cold) start is not counted
        for _ in range(args.runs):
            hearth.append(_time_to_first_frame(app_cmd, env))
            qt.append(_time_to_first_frame(qt_cmd, env))
            if args.installed:
                installed.append(_time_to_first_frame([str(args.installed)], env))
    h, q = median(hearth), median(qt)
    print(f"platform: {args.platform}; launch to the first painted frame of the main window")
    print(f"first run (cold):           {first:.3f} s")
    print(f"Hearth window shown:        median {h:.3f} s  (min {min(hearth):.3f}, max {max(hearth):.3f}, {args.runs} runs)")
    print(f"bare Qt window shown:       median {q:.3f} s  (min {min(qt):.3f}, max {max(qt):.3f})")
    print(f"Hearth / bare Qt:           {h / q:.2f}x   (target: Hearth <= {TARGET_S} s: {'met' if h <= TARGET_S else 'NOT met'})")
    if installed:
        i = median(installed)
        print(f"installed app window shown: median {i:.3f} s  (min {min(installed):.3f}, max {max(installed):.3f})")
        print(f"installed / source:         {i / h:.2f}x")


if __name__ == "__main__":
    main()
