"""``hearth --self-test`` from the source checkout: the installers' smoke test runs it on the installed app."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from PySide6.QtGui import QImage

from core.runtime import module_command


def test_self_test_chats_with_the_starter_model_and_saves_a_screenshot(starter_in_library: Path,
                                                                        tmp_path: Path) -> None:
    shot = tmp_path / "self-test.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run(module_command("core", "--self-test", str(shot)), capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("self-test")]
    assert any("window shown" in line for line in lines)
    assert any("answered" in line for line in lines), done.stdout
    image = QImage(str(shot))
    assert not image.isNull() and image.width() >= 800 and image.height() >= 500


def test_self_test_fails_clearly_without_a_model(hearth_home: Path, tmp_path: Path) -> None:
    # No starter package is found when it was removed from the library: the test must fail, not hang.
    from core.library import Library

    library = Library()
    entry = library.ensure_starter()
    assert entry is not None
    library.remove(entry.name)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run(module_command("core", "--self-test", str(tmp_path / "x.png")), capture_output=True,
                          text=True, env=env, timeout=300, check=False)
    assert done.returncode == 1 and "self-test failed" in done.stderr, (done.stdout, done.stderr)
    assert not (tmp_path / "x.png").exists()
