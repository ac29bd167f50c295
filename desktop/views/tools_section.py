"""Settings > Tools: MCP servers whose tools a model may call in the chat, each with its state and tools.

A server is added by the command that starts it (stdio), by its address (streamable HTTP), or by
pasting the ``mcpServers`` JSON other apps use (Claude Desktop, Cursor, LM Studio). Everything is
saved to ``mcp.json`` through ``desktop.tools_control.ToolsControl``, which starts the servers off
the GUI thread. Names and descriptions come from the servers: they are shown as plain text.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import PurePath
from urllib.parse import urlparse

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from core.errors import HearthError
from desktop.theme import LIGHT, Palette
from desktop.tools_control import ToolsControl, describe_state
from desktop.views.tool_call_card import plain_label
from desktop.views.widgets import button, confirm, flat_button, muted, title

INTRO = ("Tools let a model do more than write: read your files, search, run your own scripts. They come from "
         "MCP servers (Model Context Protocol), small programs many apps share. In a chat, a model made for "
         "tool calling may ask to use them, and Hearth asks you before every call.")
EMPTY = ("No tool servers yet. Add one below by the command that starts it or by its address, or paste "
         "the “mcpServers” JSON from another app's settings (Claude Desktop, Cursor, LM Studio).")
JSON_EXAMPLE = """{
  "mcpServers": {
    "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/home/me/notes"]},
    "search": {"url": "http://127.0.0.1:8000/mcp"}
  }
}"""
LAUNCHERS = {"python", "python3", "node", "npx", "uvx", "uv", "bunx", "deno", "docker", "pipx"}


def parse_env(text: str) -> dict[str, str]:
    """``KEY=value`` pairs separated by spaces (quote a value with spaces)."""
    env: dict[str, str] = {}
    for item in shlex.split(text, posix=True):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HearthError(f"“{item}” is not a variable: write each one as NAME=value, separated by spaces.")
        env[key.strip()] = value
    return env


def parse_headers(text: str) -> dict[str, str]:
    """``Name: value`` headers separated by semicolons or new lines."""
    headers: dict[str, str] = {}
    for item in text.replace("\n", ";").split(";"):
        if not item.strip():
            continue
        key, sep, value = item.partition(":")
        if not sep or not key.strip():
            raise HearthError(f"“{item.strip()}” is not a header: write each one as Name: value, separated by ;.")
        headers[key.strip()] = value.strip()
    return headers


def name_for_command(argv: list[str]) -> str:
    """A short name from a command line: the program, or the package a launcher (npx, uvx, python -m) runs."""
    program = PurePath(argv[0]).stem.lower()
    if program.rstrip("0123456789.") in LAUNCHERS or program.startswith("python"):
        rest = [a for a in argv[1:] if not a.startswith("-")]
        if rest:
            package = rest[0].rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[-1] if "-m" in argv else rest[0]
            return package.rstrip("/").rsplit("/", 1)[-1].removeprefix("mcp-").removeprefix("server-") or program
    return program or "server"


def where(server: object) -> str:
    """The command line or address of a server config, for the row's second line."""
    url = str(getattr(server, "url", "") or "")
    if url:
        return url
    argv = [str(getattr(server, "command", ""))] + [str(a) for a in getattr(server, "args", [])]
    return shlex.join(argv)


class ServerRow(QFrame):
    """One server: its state, its switch, Restart and Remove, and its tools each with a switch."""

    def __init__(self, name: str, control: ToolsControl, palette: Palette, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("toolServer")
        self.name = name
        self.control = control
        server = control.server(name)
        state = control.state(name)
        p = palette
        self.setStyleSheet(f"QFrame#toolServer {{ border: 1px solid {p.border}; border-radius: 8px; }}")
        col = QVBoxLayout(self)
        col.setContentsMargins(12, 8, 10, 10)
        col.setSpacing(4)
        head = QHBoxLayout()
        head.setSpacing(8)
        colour = {"running": p.ok, "failed": p.danger, "starting": p.warn}.get(state.status, p.muted)
        dot = QLabel("●")
        dot.setStyleSheet(f"color: {colour};")
        head.addWidget(dot)
        self.title = plain_label(name, "sectionTitle")
        self.title.setWordWrap(False)
        head.addWidget(self.title)
        self.where = plain_label(where(server) if server else "", "muted")
        self.where.setWordWrap(False)
        self.where.setToolTip(self.where.text())
        self.where.setMinimumWidth(40)
        head.addWidget(self.where, 1)
        self.switch = QCheckBox("On")
        self.switch.setChecked(bool(server and server.enabled))
        self.switch.setToolTip("Turn this server on or off (off: its tools are not offered to models)")
        self.switch.toggled.connect(lambda on: control.set_enabled(name, on))
        head.addWidget(self.switch)
        self.restart_button = flat_button("Restart", lambda: control.restart(name), "Stop this server and start it again")
        self.restart_button.setEnabled(bool(server and server.enabled) and state.status != "starting")
        head.addWidget(self.restart_button)
        self.remove_button = flat_button("Remove", self._remove, "Remove this server from Hearth")
        head.addWidget(self.remove_button)
        col.addLayout(head)
        self.status = plain_label(describe_state(state), "muted")
        if state.status == "failed":
            self.status.setStyleSheet(f"color: {p.danger};")
        col.addWidget(self.status)
        self.tool_checks: dict[str, QCheckBox] = {}
        if state.status == "running" or (state.status == "starting" and state.tools):
            for tool in state.tools:
                check = QCheckBox(tool.name)
                check.setChecked(tool.enabled)
                check.setToolTip("Offer this tool to models (off: they never see it)")
                check.toggled.connect(lambda on, t=tool.name: control.set_tool_enabled(name, t, on))
                check.setEnabled(state.status == "running")
                col.addWidget(check)
                self.tool_checks[tool.name] = check
                if tool.description.strip():
                    text = " ".join(tool.description.split())
                    description = plain_label(text if len(text) <= 300 else text[:299] + "…", "muted")
                    description.setContentsMargins(24, 0, 0, 2)
                    col.addWidget(description)

    def _remove(self) -> None:
        confirm(self, f"Remove the tool server {self.name}?",
                "Its tools are no longer offered to models. You can add it again later.",
                lambda: self.control.remove(self.name), yes_text="Remove")


class ToolsSection(QFrame):
    """The Tools card: what tools are, the servers with their tools, adding one, and the call timeout."""

    def __init__(
        self, control: ToolsControl, save_timeout: Callable[[float], None] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("card")
        self.control = control
        self._save_timeout = save_timeout or (lambda _s: None)
        self.palette_: Palette = LIGHT
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 14, 16, 14)
        layout.setSpacing(8)
        layout.addWidget(title("Tools", "sectionTitle"))
        self.intro = muted(INTRO)
        layout.addWidget(self.intro)
        self.error = plain_label("", "errorText")
        self.error.hide()
        layout.addWidget(self.error)
        self.empty = muted(EMPTY)
        self.empty.setObjectName("toolsEmpty")
        self.empty.setProperty("muted", True)
        layout.addWidget(self.empty)
        self.rows_box = QVBoxLayout()
        self.rows_box.setSpacing(8)
        layout.addLayout(self.rows_box)
        self.rows: dict[str, ServerRow] = {}

        layout.addSpacing(8)
        layout.addWidget(title("Add a server", "sectionTitle"))
        self.tabs = QTabWidget()
        self.tabs.addTab(self._command_tab(), "Command")
        self.tabs.addTab(self._url_tab(), "Address (URL)")
        self.tabs.addTab(self._json_tab(), "Paste JSON")
        self.tabs.currentChanged.connect(self._fit_tab)
        self._fit_tab(0)
        layout.addWidget(self.tabs)
        add_row = QHBoxLayout()
        self.add_error = plain_label("", "errorText")
        self.add_error.hide()
        add_row.addWidget(self.add_error, 1)
        self.add_note = muted("")
        add_row.addWidget(self.add_note, 1)
        self.add_button = button("Add server", self.add_from_form, kind="primary", tip="Save this server and start it")
        add_row.addWidget(self.add_button, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(add_row)

        timeout_row = QHBoxLayout()
        timeout_row.addWidget(QLabel("Tool call timeout"))
        self.timeout = QSpinBox()
        self.timeout.setRange(1, 3600)
        self.timeout.setSuffix(" s")
        self.timeout.setValue(round(control.call_timeout))
        self.timeout.setMaximumWidth(110)
        self.timeout.setToolTip("A call that takes longer is stopped, and the model is told it timed out")
        self.timeout.valueChanged.connect(self._timeout_changed)
        timeout_row.addWidget(self.timeout)
        timeout_row.addWidget(muted("A call that takes longer is stopped; the chat goes on."), 1)
        layout.addLayout(timeout_row)

        control.changed.connect(self.refresh)
        self.set_palette(LIGHT)

    # -- the add form --------------------------------------------------------------------------
    def _command_tab(self) -> QWidget:
        tab = QWidget()
        form = QFormLayout(tab)
        form.setContentsMargins(0, 10, 0, 0)
        form.setVerticalSpacing(8)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.command_name = QLineEdit()
        self.command_name.setPlaceholderText("Optional, e.g. files")
        form.addRow("Name", self.command_name)
        self.command = QLineEdit()
        self.command.setPlaceholderText("e.g. npx -y @modelcontextprotocol/server-filesystem ~/notes")
        self.command.setToolTip("The program that starts the server and its arguments, as in a terminal")
        form.addRow("Command", self.command)
        self.env = QLineEdit()
        self.env.setPlaceholderText("Optional, e.g. API_KEY=abc123 ROOT=~/notes")
        self.env.setToolTip("Environment variables for the server, as NAME=value separated by spaces")
        form.addRow("Environment", self.env)
        return tab

    def _url_tab(self) -> QWidget:
        tab = QWidget()
        form = QFormLayout(tab)
        form.setContentsMargins(0, 10, 0, 0)
        form.setVerticalSpacing(8)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.url_name = QLineEdit()
        self.url_name.setPlaceholderText("Optional, e.g. search")
        form.addRow("Name", self.url_name)
        self.url = QLineEdit()
        self.url.setPlaceholderText("e.g. http://127.0.0.1:8000/mcp")
        self.url.setToolTip("The server's streamable HTTP address")
        form.addRow("Address", self.url)
        self.headers = QLineEdit()
        self.headers.setPlaceholderText("Optional, e.g. Authorization: Bearer abc123")
        self.headers.setToolTip("HTTP headers sent with every request, as Name: value separated by ;")
        form.addRow("Headers", self.headers)
        return tab

    def _json_tab(self) -> QWidget:
        tab = QWidget()
        col = QVBoxLayout(tab)
        col.setContentsMargins(0, 10, 0, 0)
        col.setSpacing(6)
        col.addWidget(muted("Paste the “mcpServers” part of another app's settings file: every server in it is added."))
        self.json_edit = QPlainTextEdit()
        self.json_edit.setPlaceholderText(JSON_EXAMPLE)
        self.json_edit.setFixedHeight(130)
        col.addWidget(self.json_edit)
        return tab

    def _fit_tab(self, index: int) -> None:
        # A QTabWidget is as tall as its tallest page (whatever the pages' size policies): held to the
        # page shown, so the short Command form has no gap under it.
        page = self.tabs.widget(index)
        self.tabs.setFixedHeight(self.tabs.tabBar().sizeHint().height() + page.sizeHint().height() + 4)

    def add_from_form(self) -> None:
        """Add what the current tab describes; a mistake is said under the form and nothing is added."""
        from core.tools import McpServerConfig, parse_mcp_config

        self.add_note.setText("")
        try:
            tab = self.tabs.currentIndex()
            if tab == 0:
                line = self.command.text().strip()
                if not line:
                    raise HearthError("Type the command that starts the server, e.g. npx -y some-mcp-server.")
                try:
                    argv = shlex.split(line, posix=sys.platform != "win32")
                except ValueError as exc:
                    raise HearthError(f"The command could not be read ({exc}): check its quotes.") from None
                server = McpServerConfig(name=self.command_name.text().strip() or name_for_command(argv),
                                         command=argv[0], args=argv[1:], env=parse_env(self.env.text()))
                self.control.add(server)
                added = [server.name]
                for edit in (self.command_name, self.command, self.env):
                    edit.clear()
            elif tab == 1:
                url = self.url.text().strip()
                parsed = urlparse(url)
                if parsed.scheme not in ("http", "https") or not parsed.netloc:
                    raise HearthError("Type the server's address, starting with http:// or https://.")
                server = McpServerConfig(name=self.url_name.text().strip() or (parsed.hostname or "server"),
                                         url=url, headers=parse_headers(self.headers.text()))
                self.control.add(server)
                added = [server.name]
                for edit in (self.url_name, self.url, self.headers):
                    edit.clear()
            else:
                text = self.json_edit.toPlainText().strip()
                if not text:
                    raise HearthError("Paste an “mcpServers” JSON object first.")
                servers = parse_mcp_config(text)
                if not servers:
                    raise HearthError("That JSON names no servers: it needs an “mcpServers” object with at least one.")
                added = self.control.add_many(servers)
                self.json_edit.clear()
        except HearthError as exc:
            self.add_error.setText(str(exc))
            self.add_error.show()
            return
        self.add_error.hide()
        self.add_note.setText(f"Added {', '.join(added)}: starting…")

    # -- showing the state ---------------------------------------------------------------------
    def set_palette(self, palette: Palette) -> None:
        self.palette_ = palette
        p = palette
        self.tabs.setStyleSheet(
            f"QTabWidget::pane {{ border: none; border-top: 1px solid {p.border}; }}"
            f"QTabBar::tab {{ background: transparent; border: none; border-bottom: 2px solid transparent; "
            f"padding: 5px 12px; color: {p.muted}; }}"
            f"QTabBar::tab:selected {{ color: {p.text}; border-bottom: 2px solid {p.accent}; font-weight: 600; }}"
            f"QTabBar::tab:hover:!selected {{ color: {p.text}; }}")
        self.refresh()

    def refresh(self) -> None:
        c = self.control
        self.error.setText(c.config_error)
        self.error.setVisible(bool(c.config_error))
        self.error.setStyleSheet(f"color: {self.palette_.danger};")
        self.add_error.setStyleSheet(f"color: {self.palette_.danger};")
        for row in self.rows.values():
            row.hide()
            row.deleteLater()
        self.rows = {}
        for server in c.servers:
            row = ServerRow(server.name, c, self.palette_)
            self.rows_box.addWidget(row)
            self.rows[server.name] = row
        self.empty.setVisible(not c.servers)
        if c.servers and not c.busy():
            self.add_note.setText("")

    def _timeout_changed(self, seconds: int) -> None:
        self.control.set_timeout(float(seconds))
        self._save_timeout(float(seconds))
