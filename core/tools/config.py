"""The MCP server list: the ``mcpServers`` JSON other apps use, read and written.

The shape is Claude Desktop's ``claude_desktop_config.json`` (also Cursor's and LM Studio's
``mcp.json``), so a user can paste theirs::

    {"mcpServers": {
        "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"],
                  "env": {"DEBUG": "1"}},
        "remote": {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer ..."}}}}

A stdio server has ``command`` (+ ``args``, ``env``), a streamable HTTP server has ``url`` (+ ``headers``;
Windsurf's ``serverUrl`` is read too). Hearth adds ``enabled`` and ``disabled_tools``; Cline's
``"disabled": true`` is read as ``enabled: false``. VS Code's top-level ``servers`` key is read like
``mcpServers``. Other keys are ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import HearthError
from core.paths import get_paths, write_text_atomic

CONFIG_NAME = "mcp.json"


class ToolConfigError(HearthError):
    """The MCP server list cannot be read: its sentence says what is wrong and where."""


@dataclass
class McpServerConfig:
    """One entry of the ``mcpServers`` object."""

    name: str
    command: str = ""  # stdio: the program to run
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    url: str = ""  # streamable HTTP endpoint (either command or url)
    headers: dict[str, str] = field(default_factory=dict)
    enabled: bool = True
    disabled_tools: list[str] = field(default_factory=list)

    @property
    def transport(self) -> str:
        """``"stdio"`` or ``"http"``."""
        return "http" if self.url else "stdio"

    def to_json(self) -> dict[str, Any]:
        """The entry as it is written in the ``mcpServers`` object (only keys that say something)."""
        entry: dict[str, Any] = {}
        if self.url:
            entry["url"] = self.url
            if self.headers:
                entry["headers"] = dict(self.headers)
        else:
            entry["command"] = self.command
            if self.args:
                entry["args"] = list(self.args)
            if self.env:
                entry["env"] = dict(self.env)
        if not self.enabled:
            entry["enabled"] = False
        if self.disabled_tools:
            entry["disabled_tools"] = list(self.disabled_tools)
        return entry


def default_config_path() -> Path:
    """Hearth's own server list: ``mcp.json`` in the config folder."""
    return get_paths().config / CONFIG_NAME


def parse_mcp_config(text: str, *, source: str = "The MCP config") -> list[McpServerConfig]:
    """The servers of an ``mcpServers`` JSON text; raises ``ToolConfigError`` naming what is wrong."""
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except ValueError as exc:
        where = f"line {exc.lineno}, column {exc.colno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ToolConfigError(f"{source} is not valid JSON ({where}): fix it, or paste the config again.") from None
    if not isinstance(data, dict):
        raise ToolConfigError(f'{source} must be a JSON object with an "mcpServers" object in it.')
    servers = data.get("mcpServers", data.get("servers"))
    if servers is None:
        if data:
            raise ToolConfigError(
                f'{source} has no "mcpServers" object: write it as {{"mcpServers": {{"name": {{"command": ...}}}}}}.'
            )
        return []
    if not isinstance(servers, dict):
        raise ToolConfigError(f'{source}: "mcpServers" must be an object of servers by name.')
    return [_server(name, entry, source) for name, entry in servers.items()]


def _server(name: str, entry: Any, source: str) -> McpServerConfig:
    where = f"{source}: server '{name}'"
    if not name.strip():
        raise ToolConfigError(f"{source}: a server has an empty name: give each server a name.")
    if not isinstance(entry, dict):
        raise ToolConfigError(f'{where} must be an object with a "command" or a "url".')
    command = entry.get("command", "")
    url = entry.get("url", entry.get("serverUrl", ""))
    if not isinstance(command, str) or not isinstance(url, str):
        raise ToolConfigError(f'{where}: "command" and "url" must be text.')
    if bool(command.strip()) == bool(url.strip()):
        raise ToolConfigError(
            f'{where} needs either a "command" (a program to run) or a "url" (a streamable HTTP endpoint), '
            "not both or neither."
        )
    if url and not url.strip().lower().startswith(("http://", "https://")):
        raise ToolConfigError(f"{where}: the url '{url}' must start with http:// or https://.")
    args = entry.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, (str, int, float)) for a in args):
        raise ToolConfigError(f'{where}: "args" must be a list of strings.')
    disabled_tools = entry.get("disabled_tools", [])
    if not isinstance(disabled_tools, list) or not all(isinstance(t, str) for t in disabled_tools):
        raise ToolConfigError(f'{where}: "disabled_tools" must be a list of tool names.')
    enabled = entry.get("enabled", True)
    disabled = entry.get("disabled", False)
    if not isinstance(enabled, bool) or not isinstance(disabled, bool):
        raise ToolConfigError(f'{where}: "enabled" and "disabled" must be true or false.')
    return McpServerConfig(
        name=name,
        command=command.strip(),
        args=[str(a) for a in args],
        env=_string_map(entry.get("env", {}), "env", where),
        url=url.strip(),
        headers=_string_map(entry.get("headers", {}), "headers", where),
        enabled=enabled and not disabled,
        disabled_tools=list(disabled_tools),
    )


def _string_map(value: Any, key: str, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, (str, int, float, bool)) for v in value.values()):
        raise ToolConfigError(f'{where}: "{key}" must be an object of names and text values.')
    return {str(k): str(v) for k, v in value.items()}


def load_mcp_config(path: Path | None = None) -> list[McpServerConfig]:
    """The servers in ``path`` (default: Hearth's ``mcp.json``); a missing file is an empty list."""
    path = path or default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise ToolConfigError(f"The MCP config {path} cannot be read ({exc}): check the file.") from None
    return parse_mcp_config(text, source=f"The MCP config {path}")


def save_mcp_config(servers: list[McpServerConfig], path: Path | None = None) -> None:
    """Write ``servers`` in the ``mcpServers`` shape, atomically."""
    path = path or default_config_path()
    names = [s.name for s in servers]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise ToolConfigError(f"Two servers are named '{duplicate}': give each server its own name.")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"mcpServers": {s.name: s.to_json() for s in servers}}
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
