"""The core library works with Qt absent: every core module imports, and the CLI runs, with PySide6 blocked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.fixtures.import_check import assert_not_imported

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import importlib, importlib.abc, pkgutil, sys

class NoQt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("PySide6", "shiboken6", "PyQt5", "PyQt6"):
            raise ImportError("Qt is blocked")
        return None

sys.meta_path.insert(0, NoQt())
import core
heavy = ("torch", "transformers", "peft")
for mod in pkgutil.walk_packages(core.__path__, "core."):
    importlib.import_module(mod.name)
assert not any(name.startswith("PySide6") for name in sys.modules)
from core.cli import main
code = main(["models", "--json"])
assert code == 0, code
print("ok", len(list(pkgutil.walk_packages(core.__path__, "core."))))
"""


def test_core_imports_and_runs_without_qt(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].startswith("ok ")


def test_cli_start_path_does_not_import_heavy_libraries() -> None:
    assert_not_imported(
        "from core.cli import build_parser; build_parser(); from core.library import Library; "
        "from core.engine import Engine; from core.chats import ChatStore",
        ("torch", "transformers", "peft", "llama_cpp", "PySide6"),
    )


def test_training_modules_import_without_heavy_libraries() -> None:
    # torch comes in when a job runs, inside its own process; importing the modules costs nothing.
    assert_not_imported("import core.finetune.job, core.finetune.losses, core.jobs",
                        ("torch", "transformers", "peft", "llama_cpp"))
