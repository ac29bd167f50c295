"""core.runtime: how Hearth starts its own children, from a checkout and from the frozen app."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core import runtime


def test_commands_in_a_checkout_and_in_the_frozen_app(monkeypatch: pytest.MonkeyPatch) -> None:
    assert runtime.module_command("core.jobs", "a") == [sys.executable, "-m", "core.jobs", "a"]
    assert runtime.code_command("print(1)") == [sys.executable, "-c", "print(1)"]
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert runtime.frozen()
    assert runtime.module_command("core.jobs", "a") == [sys.executable, runtime.RUN_MODULE, "core.jobs", "a"]
    assert runtime.code_command("x", "y") == [sys.executable, runtime.RUN_CODE, "x", "y"]


def test_dispatch_runs_a_module_code_or_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "childmod.py").write_text(
        "import sys\nprint('child', sys.argv[1:], __name__)\nsys.exit(int(sys.argv[1]))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    assert runtime.dispatch(["hearth", runtime.RUN_MODULE, "childmod", "3"], lambda _a: 99) == 3
    assert "child ['3'] __main__" in capsys.readouterr().out
    assert runtime.dispatch(["hearth", runtime.RUN_CODE, "import sys; print(sys.argv[1:])", "z"], lambda _a: 99) == 0
    assert "['z']" in capsys.readouterr().out
    assert runtime.dispatch(["hearth", "models", "--json"], lambda a: len(a)) == 2


def test_the_entry_script_runs_children_like_the_frozen_app() -> None:
    entry = Path(__file__).resolve().parents[2] / "packaging" / "hearth_entry.py"
    done = subprocess.run([sys.executable, str(entry), runtime.RUN_CODE, "print(40 + 2)"], capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "42"
    version = subprocess.run([sys.executable, str(entry), "--version"], capture_output=True, text=True, check=True)
    import tomllib

    pyproject = tomllib.loads((entry.parents[1] / "pyproject.toml").read_text())
    assert version.stdout.strip() == f"hearth {pyproject['project']['version']}"
