"""MCP tools: the server list's JSON, and the registry against a real MCP server over stdio and HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.tools import (
    McpServerConfig,
    ToolConfigError,
    ToolError,
    ToolRegistry,
    load_mcp_config,
    parse_mcp_config,
    save_mcp_config,
)
from core.tools.config import default_config_path
from tests.fixtures.mcp_servers import IMAGE_BYTES, start_http_server, stdio_entry

TOOL_NAMES = ["add", "echo", "picture", "oops", "slow", "malformed", "die"]


def fixture_server(name: str = "fixture") -> McpServerConfig:
    return McpServerConfig(name=name, **stdio_entry(name))


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    proc, url = start_http_server("web")
    try:
        yield url
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, http_url: str) -> Iterator[ToolRegistry]:
    """One stdio and one HTTP server, started once for the tests that do not stop them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEARTH_HOME", str(tmp_path_factory.mktemp("home")))
        with ToolRegistry([fixture_server(), McpServerConfig(name="web", url=http_url)]) as registry:
            registry.start()
            yield registry


# -- the config file -------------------------------------------------------------------------------
def test_config_reads_the_shape_other_apps_write(tmp_path: Path) -> None:
    text = json.dumps({"mcpServers": {
        "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"],
                  "env": {"DEBUG": "1"}},
        "remote": {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer x"}},
        "windsurf": {"serverUrl": "http://127.0.0.1:9000/mcp"},
        "off": {"command": "uvx", "args": ["some-server"], "disabled": True, "autoApprove": []},
        "mine": {"command": "python", "enabled": False, "disabled_tools": ["rm"]},
    }})
    servers = parse_mcp_config(text)
    by_name = {s.name: s for s in servers}
    assert [s.name for s in servers] == ["files", "remote", "windsurf", "off", "mine"]
    assert by_name["files"].transport == "stdio" and by_name["files"].args[-1] == "/tmp"
    assert by_name["files"].env == {"DEBUG": "1"}
    assert by_name["remote"].transport == "http" and by_name["remote"].headers["Authorization"] == "Bearer x"
    assert by_name["windsurf"].url == "http://127.0.0.1:9000/mcp"
    assert not by_name["off"].enabled and not by_name["mine"].enabled
    assert by_name["mine"].disabled_tools == ["rm"]
    assert parse_mcp_config('{"servers": {"vs": {"command": "x"}}}')[0].name == "vs"  # VS Code's key
    assert parse_mcp_config("") == [] and parse_mcp_config("{}") == []

    path = tmp_path / "mcp.json"
    save_mcp_config(servers, path)
    assert load_mcp_config(path) == servers
    assert json.loads(path.read_text())["mcpServers"]["mine"] == {
        "command": "python", "enabled": False, "disabled_tools": ["rm"]}
    assert load_mcp_config(tmp_path / "missing.json") == []
    save_mcp_config(servers[:1])
    assert load_mcp_config() == servers[:1] and default_config_path().is_file()


@pytest.mark.parametrize("text, message", [
    ('{"mcpServers": {"a": {"command": "x",}}}', r"not valid JSON \(line 1, column"),
    ("[1, 2]", '"mcpServers" object in it'),
    ('{"tools": {}}', 'has no "mcpServers" object'),
    ('{"mcpServers": []}', "must be an object of servers by name"),
    ('{"mcpServers": {"a": "npx server"}}', "server 'a' must be an object"),
    ('{"mcpServers": {"a": {}}}', "server 'a' needs either a \"command\""),
    ('{"mcpServers": {"a": {"command": "x", "url": "http://h/mcp"}}}', "not both or neither"),
    ('{"mcpServers": {"a": {"url": "ftp://h/mcp"}}}', "must start with http:// or https://"),
    ('{"mcpServers": {"a": {"command": "x", "args": "--flag"}}}', '"args" must be a list of strings'),
    ('{"mcpServers": {"a": {"command": "x", "env": ["A=1"]}}}', '"env" must be an object'),
    ('{"mcpServers": {"a": {"command": "x", "disabled": "yes"}}}', "must be true or false"),
])
def test_a_broken_config_says_what_is_wrong(text: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ToolConfigError, match=message):
        parse_mcp_config(text)
    path = tmp_path / "mcp.json"
    path.write_text(text)
    with pytest.raises(ToolConfigError, match=str(path).replace(".", r"\.")):
        load_mcp_config(path)


# -- the registry ----------------------------------------------------------------------------------
def test_tools_are_listed_over_stdio_and_http_with_unique_names(shared: ToolRegistry) -> None:
    states = {s.name: s for s in shared.states()}
    assert states["fixture"].status == "running" and states["web"].status == "running"
    assert [t.name for t in states["fixture"].tools] == TOOL_NAMES
    # The HTTP server offers the same tools: its names get its server's name in front.
    assert [t.name for t in states["web"].tools] == [f"web_{n}" for n in TOOL_NAMES]
    add = states["fixture"].tools[0]
    assert add.server == "fixture" and add.description == "Add two whole numbers and return the sum."
    assert add.input_schema["required"] == ["a", "b"]
    openai = shared.openai_tools()
    assert len(openai) == 2 * len(TOOL_NAMES)
    assert openai[0] == {"type": "function", "function": {
        "name": "add", "description": add.description, "parameters": add.input_schema}}


def test_calls_over_both_transports_return_text(shared: ToolRegistry) -> None:
    assert shared.call("add", {"a": 2, "b": 3}).text == "5"
    assert shared.call("web_add", '{"a": 20, "b": 22}').text == "42"
    assert shared.call("web_echo", {"text": "<b>not markup</b>"}).text == "<b>not markup</b>"
    picture = shared.call("picture", {})
    assert picture.text == f"A small picture:\n[image, {len(IMAGE_BYTES)} bytes]" and not picture.is_error
    failed = shared.call("oops", "")
    assert failed.is_error and "oops" in failed.text


def test_bad_arguments_and_unknown_tools_are_tool_errors(shared: ToolRegistry) -> None:
    with pytest.raises(ToolError, match="arguments for 'add' are not valid JSON"):
        shared.call("add", '{"a": 2,,}')
    with pytest.raises(ToolError, match="must be a JSON object, not list"):
        shared.call("add", "[1, 2]")
    with pytest.raises(ToolError, match="There is no tool named 'nosuch'"):
        shared.call("nosuch", {})
    wrong = shared.call("add", {"a": "two"})  # the server's own answer to arguments that miss its schema
    assert wrong.is_error and "validation error" in wrong.text


def test_a_malformed_result_is_a_tool_error(shared: ToolRegistry) -> None:
    with pytest.raises(ToolError, match="sent a malformed result for 'malformed'"):
        shared.call("malformed", {})
    with pytest.raises(ToolError, match="sent a malformed result for 'malformed'"):
        shared.call("web_malformed", {})
    assert shared.call("echo", {"text": "still fine"}).text == "still fine"


def test_a_tool_can_be_switched_off(shared: ToolRegistry) -> None:
    config = shared.servers[0]
    shared.set_tool_enabled("echo", False)
    try:
        assert "echo" not in [t.name for t in shared.tools()] and config.disabled_tools == ["echo"]
        assert "echo" not in [t["function"]["name"] for t in shared.openai_tools()]
        assert not next(t for t in shared.states()[0].tools if t.name == "echo").enabled
        with pytest.raises(ToolError, match="'echo' is turned off"):
            shared.call("echo", {"text": "x"})
    finally:
        shared.set_tool_enabled("echo", True)
    assert config.disabled_tools == [] and shared.call("echo", {"text": "on"}).text == "on"


def test_a_hanging_tool_times_out_and_the_server_goes_on() -> None:
    with ToolRegistry([fixture_server()], call_timeout=0.5) as registry:
        registry.start()
        with pytest.raises(ToolError, match=r"'slow' did not answer within 0\.5 s"):
            registry.call("slow", {"seconds": 3600})
        registry.call_timeout = 60.0
        assert registry.states()[0].status == "running"
        assert registry.call("add", {"a": 1, "b": 1}).text == "2"


def test_a_dead_server_is_reported_and_the_others_keep_working(http_url: str) -> None:
    with ToolRegistry([fixture_server("a"), fixture_server("b")]) as registry:
        registry.start()
        with pytest.raises(ToolError, match="The tool server 'a' stopped while running 'die'"):
            registry.call("die", {})
        a, b = registry.states()
        assert a.status == "failed" and a.error.startswith("The tool server 'a' stopped")
        assert b.status == "running" and registry.call("b_add", {"a": 1, "b": 2}).text == "3"
        assert all(t.server == "b" for t in registry.tools())
        with pytest.raises(ToolError, match="The tool server 'a' stopped: restart it"):
            registry.call("add", {"a": 1, "b": 2})
        assert registry.restart("a").status == "running"
        assert registry.call("add", {"a": 1, "b": 2}).text == "3"


def test_servers_that_cannot_start_are_failed_states_with_a_sentence(tmp_path: Path) -> None:
    with subprocess.Popen([sys.executable, "-c", "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); "
                           "print(s.getsockname()[1], flush=True); input()"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())  # bound, never listening: connections are refused
        servers = [
            McpServerConfig(name="missing", command="no-such-mcp-server-command", args=["--stdio"]),
            McpServerConfig(name="quits", command=sys.executable, args=["-c", "import sys; sys.exit('bad config file')"]),
            McpServerConfig(name="nowhere", url=f"http://127.0.0.1:{port}/mcp"),
            McpServerConfig(name="off", command="no-such-command", enabled=False),
            fixture_server(),
        ]
        with ToolRegistry(servers) as registry:
            states = {s.name: s for s in registry.start()}
        holder.communicate("")
    mute = McpServerConfig(name="mute", command=sys.executable, args=["-c", "import time; time.sleep(600)"])
    with ToolRegistry([mute], start_timeout=1.0) as registry:  # a server that never answers
        states.update({s.name: s for s in registry.start()})
    assert states["missing"].status == "failed"
    assert states["missing"].error == "'no-such-mcp-server-command' was not found: check the server's command."
    assert states["quits"].status == "failed"
    assert states["quits"].error.startswith("The tool server 'quits' exited before it was ready (bad config file)")
    assert states["mute"].status == "failed"
    assert states["mute"].error.startswith("The tool server 'mute' did not answer within 1 s")
    assert states["nowhere"].status == "failed"
    assert states["nowhere"].error.startswith(f"Could not connect to http://127.0.0.1:{port}/mcp")
    assert states["off"].status == "disabled" and not states["off"].error
    assert states["fixture"].status == "running"
    assert all(len(s.error.splitlines()) <= 1 for s in states.values())


def test_a_closed_registry_refuses_work_and_duplicate_names_are_refused() -> None:
    registry = ToolRegistry([fixture_server()])
    registry.start()
    registry.close()
    registry.close()  # twice is fine
    with pytest.raises(ToolError, match="shut down"):
        registry.call("add", {"a": 1, "b": 2})
    with pytest.raises(ToolError, match="Two tool servers are named 'x'"):
        ToolRegistry([McpServerConfig(name="x", command="a"), McpServerConfig(name="x", command="b")])
    with pytest.raises(ToolConfigError, match="Two servers are named 'x'"):
        save_mcp_config([McpServerConfig(name="x", command="a"), McpServerConfig(name="x", command="b")])
