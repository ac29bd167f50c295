"""``hearth tools`` and ``hearth chat --mcp``, run in a real subprocess against a real MCP server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.mcp_servers import stdio_entry
from tests.fixtures.tool_chat_model import ANSWER_TEXT, write_tool_chat_llama

ROOT = Path(__file__).resolve().parents[2]


def hearth(*args: str, input: str | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True, input=input,
        timeout=timeout, env=os.environ.copy(),
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"mcpServers": {"fixture": stdio_entry(), "broken": {"command": "no-such-mcp-command"}}}))
    return path


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_tool_chat_llama(tmp_path / "tool-chat.gguf")


def test_tools_lists_servers_and_tools(config: Path) -> None:
    result = hearth("tools", "--mcp", str(config), "--json")
    assert result.returncode == 1, result.stderr  # one server failed
    data = {s["name"]: s for s in json.loads(result.stdout)}
    assert data["fixture"]["status"] == "running" and data["fixture"]["transport"] == "stdio"
    assert [t["name"] for t in data["fixture"]["tools"]][:2] == ["add", "echo"]
    assert data["fixture"]["tools"][0]["description"] == "Add two whole numbers and return the sum."
    assert data["broken"] == {"name": "broken", "status": "failed", "transport": "stdio", "tools": [],
                              "error": "'no-such-mcp-command' was not found: check the server's command."}
    text = hearth("tools", "--mcp", str(config)).stdout
    assert "fixture: running, 7 tools" in text and "Add two whole numbers and return the sum." in text
    assert "broken: failed: 'no-such-mcp-command' was not found" in text


def test_tools_reads_the_apps_own_config_and_says_when_there_is_none(hearth_home: Path) -> None:
    empty = hearth("tools")
    assert empty.returncode == 0 and "No MCP servers are configured" in empty.stdout
    (hearth_home / "config").mkdir(parents=True, exist_ok=True)
    (hearth_home / "config" / "mcp.json").write_text(json.dumps({"mcpServers": {"mine": stdio_entry("mine")}}))
    data = json.loads(hearth("tools", "--json").stdout)
    assert data[0]["name"] == "mine" and data[0]["status"] == "running"


def test_tools_errors_are_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"mcpServers": {"x": {"command": "a",}}}')
    for args, message in ((["--mcp", str(broken)], "is not valid JSON (line 1"),
                          (["--mcp", str(tmp_path / "none.json")], "There is no MCP config file")):
        result = hearth("tools", *args)
        assert result.returncode == 1 and message in result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_chat_with_allow_tools_runs_the_call_and_prints_it(config: Path, model: Path) -> None:
    result = hearth("chat", str(model), "--mcp", str(config), "--allow-tools", "-p", "What is 2 + 3?",
                    "--temperature", "0", "--max-tokens", "40")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ANSWER_TEXT
    assert '[tool call: add {"a": 2, "b": 3}]' in result.stderr and "[add result: 5]" in result.stderr
    assert "Run it?" not in result.stderr
    data = json.loads(hearth("chat", str(model), "--mcp", str(config), "--allow-tools", "-p", "Add", "--json",
                             "--temperature", "0", "--max-tokens", "40").stdout)
    assert data["text"] == ANSWER_TEXT
    assert [(c["tool"], c["text"], c["status"]) for c in data["tool_calls"]] == [("add", "5", "ok")]


def test_chat_asks_and_no_denies(config: Path, model: Path) -> None:
    result = hearth("chat", str(model), "--mcp", str(config), "-p", "What is 2 + 3?", "--temperature", "0",
                    "--max-tokens", "40", input="n\n")
    assert result.returncode == 0, result.stderr
    assert "Run it? [y]es / [a]lways / [n]o" in result.stderr
    assert "[add denied: The user denied this tool call.]" in result.stderr
    assert result.stdout.strip() == ANSWER_TEXT  # the model is told, and answers
    ran = hearth("chat", str(model), "--mcp", str(config), "-p", "Again", "--temperature", "0", "--max-tokens", "40",
                 input="y\n")
    assert "[add result: 5]" in ran.stderr
    # No answer at all (end of input) runs nothing either.
    silent = hearth("chat", str(model), "--mcp", str(config), "-p", "Once more", "--temperature", "0",
                    "--max-tokens", "40", input="")
    assert "[add denied:" in silent.stderr


def test_interactive_chat_remembers_always(config: Path, model: Path) -> None:
    result = hearth("chat", str(model), "--mcp", str(config), "--temperature", "0", "--max-tokens", "40",
                    input="What is 2 + 3?\na\nAnd again?\n/exit\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Run it?") == 1 and result.stderr.count("[add result: 5]") == 2
    assert result.stdout.count(ANSWER_TEXT) == 2


def test_chat_says_when_the_cap_on_tool_calls_stopped_the_answer(config: Path, tmp_path: Path) -> None:
    always = write_tool_chat_llama(tmp_path / "always-calls.gguf", answer=None)
    result = hearth("chat", str(always), "--mcp", str(config), "--allow-tools", "--max-tool-calls", "2",
                    "-p", "Add forever", "--temperature", "0", "--max-tokens", "40")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("[add result: 5]") == 2
    assert "[Stopped after 2 tool calls in one answer: send a message to let the model go on.]" in result.stderr
