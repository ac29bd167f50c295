"""One MCP server's client session: started, listed, called and stopped on the registry's event loop.

Built on the official ``mcp`` SDK (2.x): ``stdio_client`` / ``streamable_http_client`` for the
transport and ``ClientSession`` for the protocol, entered the way the SDK's own
``ClientSessionGroup._establish_session`` does. The whole session lives in one asyncio task
(anyio's cancel scopes must be left in the task that entered them); calls come in from other tasks
on the same loop, which ``ClientSession`` allows. Everything here runs on the loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from core.tools.config import McpServerConfig
from core.tools.types import ToolError, ToolResult


class ServerOwner:
    """The session with one configured server, and what it reported (status, error, tools)."""

    def __init__(self, config: McpServerConfig, *, start_timeout: float, log_path: Path) -> None:
        self.config = config
        self.start_timeout = start_timeout
        self.log_path = log_path
        self.status = "stopped" if config.enabled else "disabled"
        self.error = ""
        self.tools: list[dict[str, Any]] = []  # {"name", "description", "inputSchema"} as the server listed them
        self._session: Any = None
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._log_mark = 0  # where in the stderr log the current step began (its tail explains failures)

    @property
    def name(self) -> str:
        return self.config.name

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect, initialize and list the tools; on failure ``status`` is "failed" with a sentence."""
        await self.stop()
        if not self.config.enabled:
            self.status, self.error, self.tools = "disabled", "", []
            return
        self.status, self.error, self.tools = "starting", "", []
        self._stopping = False
        self._log_mark = 0
        missing = self._missing_command()
        if missing:
            self.status, self.error = "failed", missing
            return
        self._stop = asyncio.Event()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(ready, self._stop), name=f"mcp-{self.name}")
        await asyncio.shield(ready)

    async def stop(self) -> None:
        """End the session (the SDK closes a stdio server's stdin, then terminates it)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        if self._stop is not None:
            self._stop.set()
        with contextlib.suppress(BaseException):
            await task
        self._session = None
        if self.status in ("running", "starting"):
            self.status = "stopped"

    def _missing_command(self) -> str:
        if self.config.transport != "stdio":
            return ""
        command = self.config.command
        path = self.config.env.get("PATH") if self.config.env else None
        if shutil.which(command, path=path) is None and shutil.which(command) is None:
            return f"'{command}' was not found: check the server's command."
        return ""

    async def _run(self, ready: asyncio.Future[None], stop: asyncio.Event) -> None:
        import anyio
        from mcp import ClientSession
        from mcp.types import Implementation

        from core import __version__

        errlog: IO[str] | None = None
        try:
            async with contextlib.AsyncExitStack() as stack:
                if self.config.transport == "stdio":
                    self.log_path.parent.mkdir(parents=True, exist_ok=True)
                    errlog = stack.enter_context(open(self.log_path, "w", encoding="utf-8", errors="replace"))  # noqa: SIM115
                read, write = await stack.enter_async_context(self._transport(errlog))
                # A pump between the transport and the session notices the moment the server goes
                # away (its stdout ends), so the state says so before any call fails.
                tg = await stack.enter_async_context(anyio.create_task_group())
                stack.callback(tg.cancel_scope.cancel)
                send, receive = anyio.create_memory_object_stream[Any](0)
                tg.start_soon(self._pump, read, send)
                session = await stack.enter_async_context(
                    ClientSession(receive, write, client_info=Implementation(name="hearth", version=__version__))
                )
                with anyio.fail_after(self.start_timeout):
                    await session.initialize()
                    self.tools = await _list_tools(session)
                self._session = session
                self._mark_log()
                if self.status == "starting":
                    self.status = "running"
                ready.set_result(None)
                await stop.wait()
        except BaseException as exc:  # every way a server can fail ends in a sentence
            if not self._stopping and self.status in ("starting", "running"):
                self.status = "failed"
                self.error = self._failure(exc, during_start=not ready.done())
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._session = None
            if not ready.done():
                ready.set_result(None)

    @contextlib.asynccontextmanager
    async def _transport(self, errlog: IO[str] | None) -> AsyncIterator[tuple[Any, Any]]:
        if self.config.transport == "stdio":
            from mcp.client.stdio import StdioServerParameters, stdio_client

            params = StdioServerParameters(command=self.config.command, args=list(self.config.args),
                                           env=dict(self.config.env) or None)
            async with stdio_client(params, errlog=errlog) as streams:  # type: ignore[arg-type]
                yield streams[0], streams[1]
        else:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client
            from mcp.shared._httpx_utils import create_mcp_http_client

            # As ClientSessionGroup does: the SDK's HTTP client with the server's headers.
            client = create_mcp_http_client(headers=dict(self.config.headers) or None,
                                            timeout=httpx2.Timeout(self.start_timeout, read=300.0))
            async with client, streamable_http_client(self.config.url, http_client=client) as streams:
                yield streams[0], streams[1]

    async def _pump(self, read: Any, send: Any) -> None:
        async with send:
            async for item in read:
                await send.send(item)
        if not self._stopping and self.status == "running":
            self.status = "failed"
            self.error = f"The tool server '{self.name}' stopped{self._stderr_tail()}: restart it in Settings > Tools."

    # -- calls ---------------------------------------------------------------------------------
    async def call(self, tool: str, arguments: dict[str, Any], timeout: float) -> ToolResult:
        """Call ``tool`` (the server's own name for it); raises ``ToolError`` with a sentence."""
        from mcp.shared.exceptions import MCPError
        from mcp.types import CONNECTION_CLOSED, REQUEST_TIMEOUT
        from pydantic import ValidationError

        session = self._session
        if self.status != "running" or session is None:
            raise ToolError(self.error or f"The tool server '{self.name}' is not running: start it in Settings > Tools.")
        self._mark_log()
        try:
            result = await session.call_tool(tool, arguments, read_timeout_seconds=timeout)
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                raise ToolError(f"'{tool}' did not answer within {timeout:g} s: the server '{self.name}' may be "
                                "stuck; try again, or restart it in Settings > Tools.") from None
            if exc.code == CONNECTION_CLOSED or self.status != "running":
                await asyncio.sleep(0)  # let the pump record the stop
                if self.status == "running":
                    self.status = "failed"
                    self.error = f"The tool server '{self.name}' stopped{self._stderr_tail()}: restart it in Settings > Tools."
                raise ToolError(f"The tool server '{self.name}' stopped while running '{tool}'"
                                f"{self._stderr_tail()}: restart it in Settings > Tools.") from None
            raise ToolError(f"The server '{self.name}' refused '{tool}': {_sentence(exc.message)}") from None
        except (ValidationError, RuntimeError, ValueError, TypeError) as exc:
            raise ToolError(f"The server '{self.name}' sent a malformed result for '{tool}' "
                            f"({_first_line(exc)}): it is a fault in that server.") from None
        except Exception as exc:  # transport failures (HTTP errors, broken pipes)
            raise ToolError(f"The call to '{tool}' on '{self.name}' failed: {_sentence(_describe(exc))}") from None
        return result_text(result.model_dump(by_alias=True, mode="json"))

    # -- sentences -----------------------------------------------------------------------------
    def _failure(self, exc: BaseException, *, during_start: bool) -> str:
        from mcp.shared.exceptions import MCPError
        from mcp.types import CONNECTION_CLOSED

        root = _root_cause(exc)
        name, where = self.name, ("command" if self.config.transport == "stdio" else "address")
        if isinstance(root, FileNotFoundError) and self.config.transport == "stdio":
            return f"'{self.config.command}' was not found: check the server's command."
        if isinstance(root, PermissionError) and self.config.transport == "stdio":
            return f"'{self.config.command}' cannot be run (permission denied): check the server's command."
        if isinstance(root, TimeoutError):
            return (f"The tool server '{name}' did not answer within {self.start_timeout:g} s{self._stderr_tail()}: "
                    f"check that its {where} starts an MCP server.")
        if isinstance(root, MCPError) and root.code == CONNECTION_CLOSED:
            verb = "exited before it was ready" if during_start else "stopped"
            return f"The tool server '{name}' {verb}{self._stderr_tail()}: check its {where}."
        if not during_start:
            return f"The tool server '{name}' stopped ({_first_line(root)}): restart it in Settings > Tools."
        if self.config.transport == "http":
            return f"Could not connect to {self.config.url} ({_describe(root)}): check the address and that the server is running."
        return f"The tool server '{name}' could not start ({_first_line(root)}{self._stderr_tail(', ')}): check its command."

    def _mark_log(self) -> None:
        try:
            self._log_mark = self.log_path.stat().st_size if self.config.transport == "stdio" else 0
        except OSError:
            self._log_mark = 0

    def _stderr_tail(self, prefix: str = " (") -> str:
        """The last line the server wrote on stderr since the current step began, as an aside (stdio only)."""
        if self.config.transport != "stdio":
            return ""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self._log_mark)
                text = handle.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        lines = [ln.strip() for ln in text.splitlines()]
        last = next((ln for ln in reversed(lines) if ln), "")
        if not last:
            return ""
        last = last if len(last) <= 200 else last[:199] + "…"
        return f"{prefix}{last})" if prefix == " (" else f"{prefix}{last}"


async def _list_tools(session: Any) -> list[dict[str, Any]]:
    """Every tool the server lists, following pagination cursors."""
    from mcp.types import PaginatedRequestParams

    tools: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        result = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
        data = result.model_dump(by_alias=True, mode="json")
        tools += [{"name": t["name"], "description": t.get("description") or "",
                   "inputSchema": t.get("inputSchema") or {"type": "object", "properties": {}}}
                  for t in data.get("tools", [])]
        cursor = data.get("nextCursor")
        if not cursor:
            return tools


def result_text(result: dict[str, Any]) -> ToolResult:
    """A ``CallToolResult`` (as JSON) as plain text: text items joined, other items described.

    Content block types per the MCP schema: text, image, audio, resource (embedded), resource_link.
    """
    parts: list[str] = []
    for item in result.get("content") or []:
        kind = item.get("type", "")
        if kind == "text":
            parts.append(str(item.get("text", "")))
        elif kind in ("image", "audio"):
            parts.append(f"[{kind}, {_b64_size(item.get('data', ''))} bytes]")
        elif kind == "resource":
            resource = item.get("resource") or {}
            if "text" in resource:
                parts.append(str(resource["text"]))
            else:
                parts.append(f"[resource {resource.get('uri', '')}, {_b64_size(resource.get('blob', ''))} bytes]")
        elif kind == "resource_link":
            parts.append(f"[link: {item.get('uri', '')}]")
        else:
            parts.append(f"[{kind or 'unknown'} content]")
    if not parts and result.get("structuredContent") is not None:
        parts.append(json.dumps(result["structuredContent"], ensure_ascii=False))
    return ToolResult(text="\n".join(parts), is_error=bool(result.get("isError")))


def _b64_size(data: str) -> int:
    data = re.sub(r"\s", "", data or "")
    return max(0, len(data) * 3 // 4 - data[-2:].count("="))


def _root_cause(exc: BaseException) -> BaseException:
    """The first real error inside anyio's exception groups and cancellations."""
    while True:
        group = getattr(exc, "exceptions", None)  # a BaseExceptionGroup (Python 3.11+, or anyio's backport)
        if isinstance(group, (list, tuple)) and group:
            inner = [e for e in group if not isinstance(e, asyncio.CancelledError)]
            exc = (inner or list(group))[0]
            continue
        cause = exc.__cause__ or exc.__context__
        if isinstance(exc, asyncio.CancelledError) and cause is not None:
            exc = cause
            continue
        return exc


def _describe(exc: BaseException) -> str:
    """A short account of a transport error (httpx2's connect errors say little on their own)."""
    exc = _root_cause(exc)
    text = _first_line(exc)
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None:
        return f"it answered HTTP {status}"
    if "refused" in text.lower() or isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return text or type(exc).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:199] + "…"


def _sentence(text: str) -> str:
    text = text.strip() or "no reason given"
    return text if text.endswith((".", "!", "?")) else text + "."
