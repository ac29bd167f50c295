"""Settings > Tools with real MCP servers (tests/fixtures/mcp_servers.py over stdio and streamable HTTP):
the empty state, adding by command, by address and by pasted JSON, the tools listed with their switches,
a server turned off, restarted and removed, a missing command failing with its reason, the timeout saved."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from core.settings import load_settings
from core.tools import default_config_path, load_mcp_config
from desktop.views.main_window import MainWindow
from desktop.views.tools_section import ToolsSection, name_for_command, parse_env, parse_headers
from tests.desktop.conftest import WindowFactory, wait_until
from tests.fixtures.mcp_servers import ROOT, start_http_server, stdio_entry

FIXTURE_TOOLS = {"add", "echo", "picture", "oops", "slow", "malformed", "die"}
START = 90  # seconds a server may take to come up on a busy machine (a bound, not a measurement)


def _section(window: MainWindow) -> ToolsSection:
    window.show_page("settings")
    section = window.settings_page.tools
    assert section is not None
    return section


def _add_by_command(section: ToolsSection, name: str, argv: list[str], env: str = "") -> None:
    section.tabs.setCurrentIndex(0)
    section.command_name.setText(name)
    section.command.setText(shlex.join(argv))
    section.env.setText(env)
    section.add_button.click()


def _fixture_argv(name: str = "fixture") -> list[str]:
    entry = stdio_entry(name)
    return [entry["command"], *entry["args"]]


def _status(window: MainWindow, name: str) -> str:
    return window.tools.state(name).status


@pytest.fixture
def http_server() -> Iterator[str]:
    proc, url = start_http_server("remote")
    try:
        yield url
    finally:
        proc.kill()
        proc.wait()


def test_empty_state_then_a_server_added_by_command_lists_its_tools_and_switches_them(
    window: MainWindow, qtbot: object
) -> None:
    section = _section(window)
    assert section.empty.isVisibleTo(section) and "MCP" in section.intro.text()
    assert not section.rows and not window.chat.tools_toggle.isVisibleTo(window.chat)

    _add_by_command(section, "", _fixture_argv(), env=f"PYTHONPATH={shlex.quote(ROOT)}")
    # The name comes from the command (python -m tests.fixtures.mcp_servers), and the form is cleared.
    assert [s.name for s in window.tools.servers] == ["mcp_servers"]
    assert section.command.text() == "" and not section.add_error.isVisibleTo(section)
    wait_until(qtbot, lambda: _status(window, "mcp_servers") == "running", START, "the server to start")
    row = section.rows["mcp_servers"]
    assert set(row.tool_checks) == FIXTURE_TOOLS and all(c.isChecked() for c in row.tool_checks.values())
    assert row.status.text() == "Running · 7 tools"
    assert not section.empty.isVisibleTo(section)
    texts = [label.text() for label in row.findChildren(type(row.status))]
    assert "Add two whole numbers and return the sum." in texts  # each tool's description, as plain text
    saved = load_mcp_config()
    assert saved[0].command == sys.executable and saved[0].env == {"PYTHONPATH": ROOT}
    assert saved[0].args == ["-m", "tests.fixtures.mcp_servers", "--name", "fixture"]
    # The chat's toggle counts the tools that are on.
    assert window.chat.tools_toggle.isVisibleTo(window.chat)
    assert window.chat.tools_toggle.check.text() == "Tools · 7 on"

    # One tool switched off: saved, no longer offered to models, counted in the chat.
    row.tool_checks["echo"].setChecked(False)
    assert load_mcp_config()[0].disabled_tools == ["echo"]
    registry = window.tools.registry
    assert registry is not None and "echo" not in {t.name for t in registry.tools()}
    row = section.rows["mcp_servers"]
    assert not row.tool_checks["echo"].isChecked() and row.status.text() == "Running · 7 tools, 6 on"
    assert window.chat.tools_toggle.check.text() == "Tools · 6 on"
    row.tool_checks["echo"].setChecked(True)
    assert load_mcp_config()[0].disabled_tools == []

    # The server switched off, then on again; restarted.
    section.rows["mcp_servers"].switch.setChecked(False)
    wait_until(qtbot, lambda: _status(window, "mcp_servers") == "disabled", START, "the server to stop")
    assert section.rows["mcp_servers"].status.text() == "Turned off" and not load_mcp_config()[0].enabled
    assert window.chat.tools_toggle.check.text() == "Tools · none on"
    assert not section.rows["mcp_servers"].tool_checks
    section.rows["mcp_servers"].switch.setChecked(True)
    wait_until(qtbot, lambda: _status(window, "mcp_servers") == "running", START, "the server to start again")
    section.rows["mcp_servers"].restart_button.click()
    assert _status(window, "mcp_servers") == "starting"
    wait_until(qtbot, lambda: _status(window, "mcp_servers") == "running", START, "the restart")
    assert set(section.rows["mcp_servers"].tool_checks) == FIXTURE_TOOLS

    # Removed, after a question: back to the empty state, and gone from mcp.json.
    section.rows["mcp_servers"].remove_button.click()
    box = _message_box()
    remove = next(b for b in box.buttons() if b.text() == "Remove")
    remove.click()
    wait_until(qtbot, lambda: not window.tools.servers and not section.rows, 30, "the server to go")
    assert section.empty.isVisibleTo(section) and load_mcp_config() == []
    assert json.loads(default_config_path().read_text()) == {"mcpServers": {}}


def test_a_missing_command_fails_with_its_reason_and_the_window_keeps_working(window: MainWindow, qtbot: object) -> None:
    section = _section(window)
    _add_by_command(section, "ghost", ["hearth-no-such-mcp-server", "--flag"])
    wait_until(qtbot, lambda: _status(window, "ghost") == "failed", START, "the server to fail")
    status = section.rows["ghost"].status.text()
    assert status.startswith("Failed: ") and "hearth-no-such-mcp-server" in status
    assert status.count(".") <= 3 and "\n" not in status  # one sentence, no traceback
    assert not section.rows["ghost"].tool_checks
    # Nothing usable: the chat's toggle says none are on.
    assert window.chat.tools_toggle.check.text() == "Tools · none on" and not window.chat.tools_toggle.wanted()
    # An empty command and a broken environment are said under the form; nothing is added.
    _add_by_command(section, "x", [])
    assert section.add_error.isVisibleTo(section) and "command" in section.add_error.text()
    section.command.setText("python -m something")
    section.env.setText("NOT_A_PAIR")
    section.add_button.click()
    assert "NAME=value" in section.add_error.text() and len(window.tools.servers) == 1


def test_a_server_added_by_address_and_servers_pasted_as_json(
    window: MainWindow, qtbot: object, http_server: str
) -> None:
    section = _section(window)
    section.tabs.setCurrentIndex(1)
    section.url.setText("not an address")
    section.add_button.click()
    assert "http://" in section.add_error.text() and not window.tools.servers
    section.url.setText(http_server)
    section.headers.setText("X-Test: yes")
    section.add_button.click()
    assert [s.name for s in window.tools.servers] == ["127.0.0.1"]
    wait_until(qtbot, lambda: _status(window, "127.0.0.1") == "running", START, "the HTTP server")
    assert set(section.rows["127.0.0.1"].tool_checks) == FIXTURE_TOOLS
    assert load_mcp_config()[0].headers == {"X-Test": "yes"}

    # Pasted JSON: a mistake is said in place (and nothing is added) ...
    section.tabs.setCurrentIndex(2)
    section.json_edit.setPlainText('{"mcpServers": {"broken": {"command": ')
    section.add_button.click()
    assert "not valid JSON" in section.add_error.text() and len(window.tools.servers) == 1
    # ... and every server of another app's config is added, the disabled one off. Tool names the two
    # servers share get the second server's name in front (the registry keeps them unique).
    pasted = {"mcpServers": {"local": stdio_entry("local"),
                             "off": {**stdio_entry("off"), "disabled": True}}}
    section.json_edit.setPlainText(json.dumps(pasted))
    section.add_button.click()
    assert not section.add_error.isVisibleTo(section) and section.json_edit.toPlainText() == ""
    assert [s.name for s in window.tools.servers] == ["127.0.0.1", "local", "off"]
    wait_until(qtbot, lambda: _status(window, "local") == "running" and _status(window, "127.0.0.1") == "running",
               START, "both servers")
    assert _status(window, "off") == "disabled" and section.rows["off"].status.text() == "Turned off"
    assert "local_add" in section.rows["local"].tool_checks
    assert window.chat.tools_toggle.check.text() == "Tools · 14 on"


def test_servers_start_with_the_window_and_the_timeout_is_saved(make_window: WindowFactory, qtbot: object) -> None:
    default_config_path().parent.mkdir(parents=True, exist_ok=True)
    default_config_path().write_text(json.dumps({"mcpServers": {"fixture": stdio_entry()}}))
    window = make_window()
    wait_until(qtbot, lambda: _status(window, "fixture") == "running", START, "the configured server")
    section = _section(window)
    assert set(section.rows["fixture"].tool_checks) == FIXTURE_TOOLS
    section.timeout.setValue(5)
    assert window.tools.call_timeout == 5.0 and load_settings().tool_timeout == 5.0
    registry = window.tools.registry
    assert registry is not None and registry.call_timeout == 5.0


def test_a_damaged_config_is_said_and_kept_aside(make_window: WindowFactory, qtbot: object) -> None:
    path = default_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"mcpServers": {"a": ')
    window = make_window()
    section = _section(window)
    assert section.error.isVisibleTo(section) and "not valid JSON" in section.error.text()
    _add_by_command(section, "ghost", ["hearth-no-such-mcp-server"])
    kept = list(path.parent.glob("mcp.damaged-*.json"))
    assert len(kept) == 1 and kept[0].read_text() == '{"mcpServers": {"a": '
    assert [s.name for s in load_mcp_config()] == ["ghost"] and not section.error.isVisibleTo(section)


def test_form_helpers() -> None:
    assert parse_env('A=1 B="two words"') == {"A": "1", "B": "two words"}
    assert parse_headers("Authorization: Bearer x; X-A: b") == {"Authorization": "Bearer x", "X-A": "b"}
    assert name_for_command(["npx", "-y", "@modelcontextprotocol/server-filesystem", "/tmp"]) == "filesystem"
    assert name_for_command(["uvx", "mcp-server-fetch"]) == "fetch"
    assert name_for_command(["/usr/bin/my-tools", "--port", "3"]) == "my-tools"
    assert name_for_command([sys.executable, "-m", "tests.fixtures.mcp_servers"]) == "mcp_servers"


def _message_box() -> QMessageBox:
    boxes = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]
    assert len(boxes) == 1
    return boxes[0]



SHOTS = Path(__file__).resolve().parents[2] / ".screenshots"


def shoot(window: MainWindow, qtbot: object, name: str, focus: Callable[[], QWidget] | None = None) -> list[Path]:
    """The window in light and dark (Settings scrolled to ``focus()``) as .screenshots/<name>-<theme>.png."""
    SHOTS.mkdir(exist_ok=True)
    written = []
    for theme in ("light", "dark"):
        window.set_theme(theme)
        qtbot.wait(150)  # type: ignore[attr-defined]
        if focus is not None:
            area, widget = window.settings_page.scroll_area, focus()  # rows are rebuilt with the theme
            area.verticalScrollBar().setValue(widget.mapTo(area.widget(), widget.rect().topLeft()).y() - 12)
            qtbot.wait(50)  # type: ignore[attr-defined]
        path = SHOTS / f"{name}-{theme}.png"
        assert window.grab().save(str(path))
        written.append(path)
    window.set_theme("system")
    return written


def test_screenshots_of_settings_tools(make_window: WindowFactory, qtbot: object) -> None:
    window = make_window()
    window.resize(1280, 800)
    section = _section(window)
    shots = shoot(window, qtbot, "tools-empty", lambda: section)
    _add_by_command(section, "fixture", _fixture_argv())
    _add_by_command(section, "ghost", ["hearth-no-such-mcp-server"])
    wait_until(qtbot, lambda: _status(window, "fixture") == "running" and _status(window, "ghost") == "failed",
               START, "one server running, one failed")
    section.rows["fixture"].tool_checks["slow"].setChecked(False)
    shots += shoot(window, qtbot, "tools-servers", lambda: section)
    shots += shoot(window, qtbot, "tools-failed", lambda: section.rows["ghost"])
    # The smallest the window goes: nothing in the section may be cut off or pushed past the edge.
    window.resize(window.minimumSizeHint())
    qtbot.wait(100)  # type: ignore[attr-defined]
    shots += shoot(window, qtbot, "tools-smallest", lambda: section)
    # The section never widens the page: its narrowest is well under the Server section's beside it.
    server = window.settings_page.server
    assert server is not None and section.minimumSizeHint().width() <= server.minimumSizeHint().width()
    assert all(p.exists() for p in shots)
