"""The plain types the tool registry hands out: tools, server states, results, errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.errors import HearthError

SERVER_STATUSES = ("stopped", "starting", "running", "failed", "disabled")


class ToolError(HearthError):
    """A tool call could not be made or did not finish: dead server, timeout, unknown tool, bad arguments."""


@dataclass
class ToolInfo:
    """One tool as the model sees it."""

    server: str
    name: str  # the name the model sees (unique across servers)
    description: str
    input_schema: dict[str, Any]
    enabled: bool = True

    def openai(self) -> dict[str, Any]:
        """The tool in OpenAI's function shape, for ``Engine.stream_chat(tools=...)``."""
        schema = self.input_schema or {"type": "object", "properties": {}}
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": schema}}


@dataclass
class ServerState:
    """Where one configured server stands."""

    name: str
    status: str  # "stopped" | "starting" | "running" | "failed" | "disabled"
    error: str = ""  # one sentence when failed
    tools: list[ToolInfo] = field(default_factory=list)


@dataclass
class ToolResult:
    """A tool's output as plain text (never rendered as markup)."""

    text: str
    is_error: bool = False
