"""The tool registry: every configured MCP server's session, on one asyncio loop in a background thread.

The chat session, the window and the CLI share one registry. Its methods are thread-safe and block
the calling thread until the loop has done the work; a server that fails is a state with a
sentence, never an exception out of ``start``; a call that fails raises ``ToolError``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from core.tools.client import ServerOwner
from core.tools.config import McpServerConfig
from core.tools.types import ServerState, ToolError, ToolInfo, ToolResult

T = TypeVar("T")
_NAME_OK = re.compile(r"[^a-zA-Z0-9_-]")  # OpenAI function names: ^[a-zA-Z0-9_-]{1,64}$
_GRACE = 15.0  # seconds on top of the SDK's own timeouts before the waiting thread gives up


class ToolRegistry:
    """Owns one MCP client session per configured server, on its own asyncio loop in a background thread.

    Thread-safe: call from any thread. ``servers`` are kept (not copied), so ``set_tool_enabled``
    changes the caller's ``McpServerConfig.disabled_tools`` too, ready for ``save_mcp_config``.
    """

    def __init__(self, servers: list[McpServerConfig], *, call_timeout: float = 60.0,
                 start_timeout: float = 30.0) -> None:
        from core.paths import get_paths

        names = [s.name for s in servers]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise ToolError(f"Two tool servers are named '{duplicate}': give each server its own name.")
        self.servers = servers
        self.call_timeout = call_timeout
        self.start_timeout = start_timeout
        logs = get_paths().logs / "mcp"
        self._owners = {s.name: ServerOwner(s, start_timeout=start_timeout, log_path=logs / f"{_file_name(s.name)}.log")
                        for s in servers}
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._names: dict[str, tuple[str, str]] = {}  # model-visible name -> (server, the server's tool name)

    # -- the loop ------------------------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise ToolError("The tool servers were shut down: open the chat again to use tools.")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="hearth-mcp", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        try:
            loop = self._ensure_loop()
        except ToolError:
            coro.close()  # never started: no "never awaited" warning
            raise
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ToolError("The tool servers did not respond in time: restart them in Settings > Tools.") from None

    # -- servers -------------------------------------------------------------------------------
    def start(self) -> list[ServerState]:
        """Start every enabled server (at once); failures become states with a sentence, never raised."""

        async def start_all() -> None:
            await asyncio.gather(*(o.start() for o in self._owners.values()), return_exceptions=True)

        self._run(start_all(), self.start_timeout + _GRACE + 5.0)
        self._rename()
        return self.states()

    def restart(self, name: str) -> ServerState:
        """Stop one server and start it again with its (possibly edited) config."""
        owner = self._owner(name)
        self._run(owner.start(), self.start_timeout + _GRACE + 5.0)
        self._rename()
        return self._state(owner)

    def stop(self, name: str) -> ServerState:
        """Stop one server."""
        owner = self._owner(name)
        if self._loop is not None:
            self._run(owner.stop(), _GRACE)
        return self._state(owner)

    def states(self) -> list[ServerState]:
        """Every configured server's state, in config order."""
        return [self._state(o) for o in self._owners.values()]

    def tools(self) -> list[ToolInfo]:
        """The enabled tools of running servers."""
        return [t for s in self.states() if s.status == "running" for t in s.tools if t.enabled]

    def openai_tools(self) -> list[dict[str, Any]]:
        """``tools()`` in OpenAI's function shape, for ``Engine.stream_chat(tools=...)``."""
        return [t.openai() for t in self.tools()]

    def set_tool_enabled(self, tool: str, enabled: bool) -> None:
        """Offer a tool to the model or not; also updates its server's ``disabled_tools``."""
        server, remote = self._resolve(tool)
        config = self._owners[server].config
        with self._lock:
            if enabled and remote in config.disabled_tools:
                config.disabled_tools.remove(remote)
            elif not enabled and remote not in config.disabled_tools:
                config.disabled_tools.append(remote)

    def call(self, tool: str, arguments: dict[str, Any] | str) -> ToolResult:
        """Run a tool with the model's arguments (an object or its JSON text); raises ``ToolError``."""
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError as exc:
                raise ToolError(f"The arguments for '{tool}' are not valid JSON ({exc}): the model wrote them "
                                "wrongly.") from None
        if not isinstance(arguments, dict):
            raise ToolError(f"The arguments for '{tool}' must be a JSON object, not {type(arguments).__name__}.")
        server, remote = self._resolve(tool)
        owner = self._owners[server]
        if remote in owner.config.disabled_tools:
            raise ToolError(f"The tool '{tool}' is turned off: turn it on in Settings > Tools to use it.")
        return self._run(owner.call(remote, arguments, self.call_timeout), self.call_timeout + _GRACE)

    def close(self) -> None:
        """Stop every server and the loop thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def stop_all() -> None:
            await asyncio.gather(*(o.stop() for o in self._owners.values()), return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(stop_all(), loop).result(_GRACE + 10.0)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10.0)
            if not thread.is_alive():
                loop.close()

    def __enter__(self) -> ToolRegistry:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- names ---------------------------------------------------------------------------------
    def _owner(self, name: str) -> ServerOwner:
        owner = self._owners.get(name)
        if owner is None:
            raise ToolError(f"There is no tool server named '{name}': see Settings > Tools.")
        return owner

    def _rename(self) -> None:
        """Give every tool of every server a name unique across servers (config order wins)."""
        names: dict[str, tuple[str, str]] = {}
        for owner in self._owners.values():
            for tool in list(owner.tools):
                base = _NAME_OK.sub("_", tool["name"])[:64] or "tool"
                name = base
                if name in names:
                    name = f"{_NAME_OK.sub('_', owner.name)}_{base}"[:64]
                n = 2
                while name in names:
                    name = f"{base[:60]}_{n}"
                    n += 1
                names[name] = (owner.name, tool["name"])
        with self._lock:
            self._names = names

    def _resolve(self, tool: str) -> tuple[str, str]:
        with self._lock:
            found = self._names.get(tool)
        if found is None:
            raise ToolError(f"There is no tool named '{tool}' among the running tool servers.")
        return found

    def _state(self, owner: ServerOwner) -> ServerState:
        with self._lock:
            visible = {v: k for k, v in self._names.items()}
        tools = [ToolInfo(server=owner.name, name=visible.get((owner.name, t["name"]), t["name"]),
                          description=t["description"], input_schema=t["inputSchema"],
                          enabled=t["name"] not in owner.config.disabled_tools)
                 for t in owner.tools]
        return ServerState(name=owner.name, status=owner.status, error=owner.error, tools=tools)


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "server"
