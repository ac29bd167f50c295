"""The hearth command line, run in a real subprocess: output, JSON, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def hearth(*args: str, input: str | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True, input=input,
        timeout=timeout, env=os.environ.copy(),
    )


def test_models_lists_the_starter_model(starter_in_library: Path) -> None:
    result = hearth("models")
    assert result.returncode == 0, result.stderr
    assert "gemma-3-270m-q4_k_m" in result.stdout and "Q4_K_M" in result.stdout
    data = json.loads(hearth("models", "--json").stdout)
    assert data[0]["architecture"] == "gemma3" and data[0]["source"] == "starter"


def test_import_show_rm_round_trip(tiny_model: Path) -> None:
    assert hearth("import", str(tiny_model), "--name", "tiny").returncode == 0
    shown = json.loads(hearth("show", "tiny", "--json").stdout)
    assert shown["architecture"] == "llama" and shown["path"].endswith("tiny-llama.gguf")
    assert shown["block_count"] == 2 and shown["has_chat_template"] is False
    text = hearth("show", "tiny").stdout
    assert "Chat template" in text and "Layers" in text
    assert hearth("rm", "tiny").returncode == 0
    assert "tiny" not in [m["name"] for m in json.loads(hearth("models", "--json").stdout)]


@pytest.mark.parametrize(
    "setup, args, message",
    [
        ("text", ["import", "{path}"], "is not a GGUF model"),
        ("none", ["import", "{path}"], "does not exist"),
        ("truncated", ["show", "{path}"], "truncated"),
        ("none", ["show", "no-such-model"], "No model called 'no-such-model'"),
        ("none", ["chat", "no-such-model", "-p", "hi"], "No model called"),
        ("none", ["chats", "export", "999"], "No conversation with id 999"),
    ],
)
def test_user_errors_are_one_line_without_traceback(
    setup: str, args: list[str], message: str, tmp_path: Path, tiny_model: Path
) -> None:
    path = tmp_path / "file.gguf"
    if setup == "text":
        path.write_text("just text")
    elif setup == "truncated":
        path.write_bytes(tiny_model.read_bytes()[:3000])
    result = hearth(*[a.replace("{path}", str(path)) for a in args])
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_one_shot_chat_streams_and_saves_the_conversation(starter_in_library: Path) -> None:
    result = hearth("chat", "gemma-3-270m-q4_k_m", "-p", "Say hello.", "--max-tokens", "20", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "gemma turn format" in result.stderr  # says which chat format was used
    chats = json.loads(hearth("chats", "--json").stdout)
    assert len(chats) == 1 and chats[0]["message_count"] == 2 and chats[0]["title"] == "Say hello."
    exported = hearth("chats", "export", str(chats[0]["id"]), "--format", "md").stdout
    assert "## User\n\nSay hello." in exported and "## Assistant" in exported
    data = json.loads(hearth("chats", "export", str(chats[0]["id"]), "--format", "json").stdout)
    assert data["messages"][1]["content"].strip() == result.stdout.strip()
    # --continue carries the history on
    again = hearth("chat", "--continue", str(chats[0]["id"]), "-p", "Again.", "--max-tokens", "8")
    assert again.returncode == 0, again.stderr
    assert json.loads(hearth("chats", "--json").stdout)[0]["message_count"] == 4


def test_interactive_chat_reads_lines_until_exit(starter_in_library: Path) -> None:
    result = hearth("chat", "gemma-3-270m-q4_k_m", "--max-tokens", "8", "--system", "Be brief.",
                    input="Hi there\nWhat is 2+2?\n/exit\n")
    assert result.returncode == 0, result.stderr
    [conv] = json.loads(hearth("chats", "--json").stdout)
    assert conv["message_count"] == 4 and conv["system_prompt"] == "Be brief."


def test_chat_json_output_and_stats(starter_in_library: Path) -> None:
    result = hearth("chat", "gemma-3-270m-q4_k_m", "-p", "Count to three.", "--max-tokens", "12", "--json")
    data = json.loads(result.stdout)
    assert data["stats"]["completion_tokens"] >= 1 and data["chat_format"] == "family"


def test_no_arguments_without_pyside_says_what_to_do() -> None:
    code = (
        "import importlib.abc, sys\n"
        "class B(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, n, p=None, t=None):\n"
        "        if n.split('.')[0] in ('PySide6', 'shiboken6'): raise ImportError(name=n)\n"
        "sys.meta_path.insert(0, B())\n"
        "from core.cli import main\n"
        "sys.exit(main([]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "desktop app is not installed" in result.stderr
