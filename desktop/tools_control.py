"""The window's MCP tools: the configured servers, their registry, and its state for the views.

``core.tools.ToolRegistry`` owns one MCP session per server on its own asyncio thread. Here it is
built, started, restarted and closed on a one-thread executor of its own, so the GUI never waits for
a server to start (a stdio server may take seconds to come up, a dead URL until its timeout) and
the changes asked for happen in order. The configuration is ``mcp.json`` in Hearth's config folder
(``core.tools.save_mcp_config``), the same file ``hearth tools`` and ``hearth chat --mcp`` read.

Tool output never reaches this object: it only ever changes the configuration the user edits in
Settings > Tools.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer, Signal

from core.errors import HearthError
from desktop.ops import Executor, Op, error_text

if TYPE_CHECKING:  # core.tools pulls in the MCP SDK lazily; the types are only for annotations
    from core.tools import McpServerConfig, ServerState, ToolInfo, ToolRegistry

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0


class ToolsControl(QObject):
    """Owns the configured MCP servers and their running registry; ``changed`` says the state moved."""

    changed = Signal()

    def __init__(self, path: Path | None = None, call_timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__()
        from core.tools import load_mcp_config

        self.path = path
        self.call_timeout = call_timeout
        self.config_error = ""  # one sentence when mcp.json could not be read or written
        self._unreadable = False  # mcp.json is damaged: moved aside (not overwritten) on the first save
        try:
            self.servers: list[McpServerConfig] = load_mcp_config(path)
        except HearthError as exc:
            self.servers = []
            self._unreadable = True
            self.config_error = f"{exc} Servers you add now are saved to a new file; the old one is kept beside it."
        self.registry: ToolRegistry | None = None  # read by the engine thread when an answer starts
        self._states: dict[str, ServerState] = {}
        self._executor = Executor(1, "hearth-tools")
        self._closed = False
        self._ticket = 0  # the latest rebuild asked for; older results are not shown
        self._ops = 0  # starts and restarts under way: their results, not a poll, say the state then
        # A server may die at any time (or during a chat's call): its state is read again every few
        # seconds. ``states()`` only takes the registry's lock, it never waits for a server.
        self._poll = QTimer(self)
        self._poll.setInterval(2000)
        self._poll.timeout.connect(self.poll)
        self._poll.start()

    # -- what the views read -------------------------------------------------------------------
    def state(self, name: str) -> ServerState:
        """The server's last known state ("stopped" until it was started once)."""
        from core.tools import ServerState

        known = self._states.get(name)
        if known is not None:
            return known
        server = self.server(name)
        return ServerState(name=name, status="disabled" if server is not None and not server.enabled else "stopped")

    def server(self, name: str) -> McpServerConfig | None:
        return next((s for s in self.servers if s.name == name), None)

    def tools(self) -> list[ToolInfo]:
        """Every tool of the running servers, on or off (the views show both)."""
        return [t for s in self.servers for t in self.state(s.name).tools]

    def enabled_tools(self) -> list[ToolInfo]:
        """The tools a model is offered: switched on, of running servers."""
        return [t for s in self.servers if s.enabled and self.state(s.name).status == "running"
                for t in self.state(s.name).tools if t.enabled]

    def busy(self) -> bool:
        return any(self.state(s.name).status == "starting" for s in self.servers)

    # -- asked from the GUI --------------------------------------------------------------------
    def start(self) -> None:
        """(Re)build the registry with the configured servers and start them, off the GUI thread."""
        if self._closed:
            return
        self._ticket += 1
        ticket = self._ticket
        # The registry keeps these objects (not copies): its set_tool_enabled edits their disabled_tools.
        servers = list(self.servers)
        for s in servers:
            old = self._states.get(s.name)
            tools = old.tools if old is not None else []
            self._states[s.name] = self._new_state(s.name, "starting" if s.enabled else "disabled", tools=tools)
        self._states = {name: st for name, st in self._states.items() if self.server(name) is not None}
        self.changed.emit()
        timeout = self.call_timeout
        self._ops += 1
        Op(lambda: self._rebuild_blocking(servers, timeout)).on_success(
            lambda states: self._started(ticket, states)).on_failure(
            lambda exc: self._start_failed(ticket, exc)).run(self._executor)

    def add(self, server: McpServerConfig) -> None:
        """Add ``server`` (its name made unique), save, and start the servers again."""
        server.name = self.unique_name(server.name or "server")
        self.servers.append(server)
        self._save_and_start()

    def add_many(self, servers: list[McpServerConfig]) -> list[str]:
        """Add every server of a pasted ``mcpServers`` object; returns the names they got."""
        names = []
        for server in servers:
            server.name = self.unique_name(server.name or "server")
            self.servers.append(server)
            names.append(server.name)
        self._save_and_start()
        return names

    def remove(self, name: str) -> None:
        self.servers = [s for s in self.servers if s.name != name]
        self._states.pop(name, None)
        self._save_and_start()

    def set_enabled(self, name: str, enabled: bool) -> None:
        server = self.server(name)
        if server is None or server.enabled == enabled:
            return
        server.enabled = enabled
        self._save_and_start()

    def restart(self, name: str) -> None:
        """Restart one server (a failed one tries again); the others keep running."""
        server = self.server(name)
        if server is None or self._closed:
            return
        if self.registry is None or not server.enabled:
            self.start()
            return
        registry, ticket = self.registry, self._ticket
        self._states[name] = self._new_state(name, "starting", tools=self.state(name).tools)
        self.changed.emit()
        self._ops += 1
        Op(lambda: registry.restart(name)).on_success(lambda state: self._restarted(ticket, state)).on_failure(
            lambda exc: self._restarted(ticket, self._new_state(name, "failed", error=error_text(exc)))
        ).run(self._executor)

    def set_tool_enabled(self, server_name: str, tool: str, enabled: bool) -> None:
        """Switch one tool on or off: saved at once; the running registry stops (or starts) offering it."""
        registry = self.registry
        if registry is None or self.server(server_name) is None:
            return
        # ``tool`` is the name the model sees; the registry knows the server's own name for it and
        # writes that to the config's disabled_tools. It only takes a lock, never waits for a server.
        try:
            registry.set_tool_enabled(tool, enabled)
        except HearthError as exc:
            self.config_error = str(exc)
        else:
            state = self._states.get(server_name)
            for info in state.tools if state is not None else []:
                if info.name == tool:
                    info.enabled = enabled
            self.save()
        self.changed.emit()

    def set_timeout(self, seconds: float) -> None:
        """The longest a tool call may take; servers keep running, the next calls use it."""
        self.call_timeout = float(seconds)
        registry = self.registry
        if registry is not None and hasattr(registry, "call_timeout"):
            registry.call_timeout = self.call_timeout

    def unique_name(self, name: str) -> str:
        taken = {s.name for s in self.servers}
        if name not in taken:
            return name
        n = 2
        while f"{name}-{n}" in taken:
            n += 1
        return f"{name}-{n}"

    def save(self) -> None:
        from core.tools import save_mcp_config
        from core.tools.config import default_config_path

        try:
            if self._unreadable:
                path = self.path or default_config_path()
                if path.exists():
                    path.replace(path.with_name(f"{path.stem}.damaged-{int(time.time())}{path.suffix}"))
                self._unreadable = False
            save_mcp_config(self.servers, self.path)
            self.config_error = ""
        except (OSError, HearthError) as exc:
            self.config_error = f"Could not save the tool servers: {exc}"

    def shutdown(self) -> None:
        """Stop every server and wait for it (the app is quitting)."""
        if self._closed:
            return
        self._closed = True
        self._poll.stop()
        self._executor.shutdown(wait=True)
        registry, self.registry = self.registry, None
        if registry is not None:
            try:
                registry.close()
            except Exception:  # quitting: nothing left to tell the user
                log.exception("stopping the tool servers")

    # -- on the tools executor -----------------------------------------------------------------
    def _rebuild_blocking(self, servers: list[McpServerConfig], timeout: float) -> list[ServerState]:
        from core.tools import ToolRegistry

        old, self.registry = self.registry, None
        if old is not None:
            old.close()
        if not servers:
            return []
        registry = ToolRegistry(servers, call_timeout=timeout)
        states = registry.start()
        self.registry = registry
        return states

    # -- back on the GUI thread ----------------------------------------------------------------
    def poll(self) -> None:
        """Read the servers' states from the registry again; ``changed`` only when one moved."""
        registry = self.registry
        if registry is None or self._ops or self._closed:
            return
        states = {s.name: s for s in registry.states()}
        if _signature(states) != _signature(self._states):
            self._states = states
            self.changed.emit()

    def _started(self, ticket: int, states: list[ServerState]) -> None:
        self._ops -= 1
        if ticket != self._ticket or self._closed:
            return
        self._states = {s.name: s for s in states}
        self.changed.emit()

    def _start_failed(self, ticket: int, exc: BaseException) -> None:
        self._ops -= 1
        if ticket != self._ticket or self._closed:
            return
        for s in self.servers:
            if s.enabled:
                self._states[s.name] = self._new_state(s.name, "failed", error=error_text(exc))
        self.changed.emit()

    def _restarted(self, ticket: int, state: ServerState) -> None:
        self._ops -= 1
        if ticket != self._ticket or self._closed:
            return
        self._states[state.name] = state
        self.changed.emit()

    def _save_and_start(self) -> None:
        self.save()
        self.start()

    @staticmethod
    def _new_state(name: str, status: str, *, error: str = "", tools: list[ToolInfo] | None = None) -> ServerState:
        from core.tools import ServerState

        return ServerState(name=name, status=status, error=error, tools=list(tools or []))


def _signature(states: dict[str, ServerState]) -> list[tuple[str, str, str, list[tuple[str, bool]]]]:
    return [(n, s.status, s.error, [(t.name, t.enabled) for t in s.tools]) for n, s in sorted(states.items())]


def describe_state(state: ServerState) -> str:
    """One line for a server: running with how many tools, starting, off, or failed and why."""
    if state.status == "running":
        on = sum(1 for t in state.tools if t.enabled)
        total = len(state.tools)
        if total == 0:
            return "Running · this server offers no tools"
        return f"Running · {total} tool{'s' if total != 1 else ''}" + (f", {on} on" if on != total else "")
    if state.status == "failed":
        return f"Failed: {state.error or 'the server stopped without saying why.'}"
    return {"starting": "Starting…", "disabled": "Turned off", "stopped": "Not started"}.get(state.status, state.status)


