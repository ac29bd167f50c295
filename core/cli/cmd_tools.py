"""``hearth tools``: the configured MCP servers, their state and their tools; the terminal side of tool calls.

``hearth chat --mcp`` uses the helpers here too: the registry opened from a config file, the lines
printed for each call, and the "Run it?" question.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.cli.output import print_json
from core.errors import HearthError, NotFoundError

if TYPE_CHECKING:
    from core.chats.session import Approval, ToolCallRequest, ToolCallResult
    from core.tools import McpServerConfig, ServerState, ToolRegistry

APPROVAL_QUESTION = "Run it? [y]es / [a]lways / [n]o "


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("tools", help="list the MCP tool servers and their tools")
    add_mcp_arguments(p, with_allow=False)
    p.add_argument("--json", action="store_true", help="print the servers and tools as JSON")
    p.set_defaults(func=list_tools)


def add_mcp_arguments(p: argparse.ArgumentParser, *, with_allow: bool = True) -> None:
    """``--mcp`` (and for chat ``--allow-tools``, ``--max-tool-calls``), shared by ``tools`` and ``chat``."""
    g = p.add_argument_group("tools (MCP servers)")
    g.add_argument("--mcp", metavar="CONFIG.json", type=Path,
                   help='MCP servers in the "mcpServers" JSON shape (default for "hearth tools": Hearth\'s own mcp.json)')
    g.add_argument("--tool-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="longest a tool call may take (default 60)")
    if with_allow:
        g.add_argument("--allow-tools", action="store_true", help="run every tool call without asking (for scripts)")
        g.add_argument("--max-tool-calls", type=int, default=8, metavar="N", help="most tool calls per answer (default 8)")


def load_servers(path: Path | None) -> tuple[list[McpServerConfig], Path]:
    """The servers of ``path`` (or Hearth's ``mcp.json``); a file named on the command line must exist."""
    from core.tools import default_config_path, load_mcp_config

    if path is not None and not path.expanduser().is_file():
        raise NotFoundError(f"There is no MCP config file {path}: check the path given to --mcp.")
    target = path.expanduser() if path is not None else default_config_path()
    return load_mcp_config(target), target


def open_registry(path: Path | None, *, call_timeout: float = 60.0, quiet: bool = False) -> ToolRegistry:
    """A started registry for the servers of ``path``; each server's state is printed unless ``quiet``."""
    from core.tools import ToolRegistry

    servers, target = load_servers(path)
    if not servers:
        raise HearthError(f'No MCP servers are configured in {target}: add them in the "mcpServers" shape '
                          '({"mcpServers": {"name": {"command": ..., "args": [...]}}}).')
    registry = ToolRegistry(servers, call_timeout=call_timeout)
    states = registry.start()
    if not quiet:
        for state in states:
            print(f"[{_state_line(state)}]", file=sys.stderr)
    return registry


def list_tools(args: argparse.Namespace) -> int:
    from core.tools import ToolRegistry

    servers, target = load_servers(args.mcp)
    if not servers:
        if args.json:
            print_json([])
        else:
            print(f'No MCP servers are configured in {target}: add them in the "mcpServers" shape, e.g. '
                  '{"mcpServers": {"files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", '
                  '"/tmp"]}}}.')
        return 0
    with ToolRegistry(servers, call_timeout=args.tool_timeout) as registry:
        states = registry.start()
    if args.json:
        print_json([_state_json(s, c) for s, c in zip(states, servers, strict=True)])
    else:
        for state in states:
            print(_state_line(state))
            width = max((len(t.name) + (0 if t.enabled else 6) for t in state.tools), default=0)
            for tool in state.tools:
                name = tool.name if tool.enabled else f"{tool.name} (off)"
                print(f"  {name.ljust(width)}  {_one_line(tool.description)}".rstrip())
    failed = [s.name for s in states if s.status == "failed"]
    return 1 if failed else 0


def _state_line(state: ServerState) -> str:
    if state.status == "failed":
        return f"{state.name}: failed: {state.error}"
    if state.status == "running":
        on = sum(1 for t in state.tools if t.enabled)
        return f"{state.name}: running, {on} tool{'s' if on != 1 else ''}"
    return f"{state.name}: {state.status}"


def _state_json(state: ServerState, config: McpServerConfig) -> dict[str, Any]:
    return {"name": state.name, "status": state.status, "error": state.error, "transport": config.transport,
            "tools": [{"name": t.name, "description": t.description, "enabled": t.enabled,
                       "input_schema": t.input_schema} for t in state.tools]}


def _one_line(text: str, limit: int = 100) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


# -- tool calls in a terminal chat -----------------------------------------------------------------
def terminal_approval(allow_all: bool) -> Approval:
    """The "Run it?" question on the terminal (stdin); ``allow_all`` runs every call without asking.

    An empty answer or the end of input denies: nothing runs unless the user says so.
    """
    def approve(request: ToolCallRequest) -> str:
        if allow_all:
            return "once"
        while True:
            print(APPROVAL_QUESTION, end="", file=sys.stderr, flush=True)
            line = sys.stdin.readline()
            if not line:
                print(file=sys.stderr)
                return "deny"
            answer = line.strip().lower()
            if not sys.stdin.isatty():  # a script's answer: show it, as a terminal would have echoed it
                print(answer, file=sys.stderr)
            if answer in ("y", "yes"):
                return "once"
            if answer in ("a", "always"):
                return "always"
            if answer in ("", "n", "no"):
                return "deny"

    return approve


def print_tool_item(item: ToolCallRequest | ToolCallResult) -> None:
    """One line per call on stderr: the call the model wrote, then how it ended."""
    from core.chats.session import ToolCallRequest

    if isinstance(item, ToolCallRequest):
        print(f"\n[tool call: {item.tool} {item.arguments}]", file=sys.stderr, flush=True)
        return
    label = {"ok": "result", "error": "failed", "denied": "denied"}.get(item.status, item.status)
    print(f"[{item.tool} {label}: {_one_line(item.text, 300)}]", file=sys.stderr, flush=True)


def chat_tool_options(args: argparse.Namespace, status: Any, stack: Any) -> dict[str, Any]:
    """``ChatSession.send`` keywords for ``hearth chat --mcp``: {} without it (the chat is as before)."""
    if getattr(args, "mcp", None) is None:
        return {}
    from core.tools import tools_unavailable_reason

    registry = open_registry(args.mcp, call_timeout=args.tool_timeout, quiet=args.json)
    stack.callback(registry.close)
    reason = tools_unavailable_reason(status)
    if reason and not args.json:
        print(f"[tools not used: {reason}]", file=sys.stderr)
    return {"tools": registry, "approve": terminal_approval(args.allow_tools), "max_tool_calls": args.max_tool_calls}
