"""Tools for the chat through MCP servers: the server list, the registry of running sessions, results.

The ``mcp`` SDK is imported only when a server starts, so the window starts without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.tools.config import (
    McpServerConfig,
    ToolConfigError,
    default_config_path,
    load_mcp_config,
    parse_mcp_config,
    save_mcp_config,
)
from core.tools.types import ServerState, ToolError, ToolInfo, ToolResult

if TYPE_CHECKING:
    from core.engine import ModelStatus
    from core.tools.registry import ToolRegistry


def __getattr__(name: str) -> Any:
    """``ToolRegistry`` on first use: it imports asyncio and the client, which the window's start (it reads
    the server list and the chat's types) does without."""
    if name != "ToolRegistry":
        raise AttributeError(f"module 'core.tools' has no attribute {name!r}")
    from core.tools.registry import ToolRegistry

    return ToolRegistry

__all__ = [
    "McpServerConfig",
    "ServerState",
    "ToolConfigError",
    "ToolError",
    "ToolInfo",
    "ToolRegistry",
    "ToolResult",
    "default_config_path",
    "load_mcp_config",
    "parse_mcp_config",
    "save_mcp_config",
    "tools_unavailable_reason",
]


def tools_unavailable_reason(status: ModelStatus | None) -> str:
    """Why the loaded model cannot use tools, in one sentence; "" when it can."""
    if status is None:
        return "No model is loaded: load a model made for tool calling to use tools."
    if not status.has_decoder:
        return "This model cannot chat (it only makes embeddings): pick a chat model made for tool calling."
    if not status.supports_tools:
        return ("This model's chat template has no tool support: pick a model made for tool calling "
                "(Qwen 2.5, Llama 3.1+, Mistral Small...).")
    return ""
