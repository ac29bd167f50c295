"""The chat's tools: the "Tools" switch by the composer, and tool-call cards rebuilt from stored messages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QVBoxLayout, QWidget

from core.chats import Message
from core.chats.session import ToolCallRequest, ToolCallResult
from desktop.views.tool_call_card import ToolCallCard
from desktop.views.widgets import muted

if TYPE_CHECKING:
    from desktop.chat_controller import ChatController
    from desktop.tools_control import ToolsControl
    from desktop.views.transcript import TranscriptView

NO_SERVERS = "Add an MCP server in Settings > Tools to let models use tools."
OFF_TIP = "Offer the tools of Settings > Tools to the model (you approve every call)"


class ToolsToggle(QWidget):
    """A check box saying how many tools are on; greyed, with the reason under it, when they cannot be used."""

    changed = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        col = QVBoxLayout(self)
        col.setContentsMargins(4, 0, 4, 0)
        col.setSpacing(2)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        self.check = QCheckBox("Tools")
        self.check.setChecked(True)
        self.check.toggled.connect(self.changed)
        row.addWidget(self.check)
        row.addStretch(1)
        col.addLayout(row)
        self.reason = muted("")
        self.reason.hide()
        col.addWidget(self.reason)
        self.count = 0
        self.unavailable = ""
        self.update_state(0, 0, "")

    def update_state(self, servers: int, count: int, reason: str) -> None:
        """``servers`` configured, ``count`` tools on; ``reason`` is why the model cannot use them ('' = it can)."""
        self.count, self.unavailable = count, reason
        self.setVisible(servers > 0)  # no servers: nothing to switch, the composer stays plain
        if reason:
            self.check.setEnabled(False)
            self.check.setText("Tools")
            self.check.setToolTip(reason)
            self.reason.setText(reason)
            self.reason.show()
            return
        self.reason.hide()
        self.check.setEnabled(count > 0)
        self.check.setText(f"Tools · {count} on" if count else "Tools · none on")
        self.check.setToolTip(OFF_TIP if count else "No tool is on: start a server or switch tools on in Settings > Tools")

    def wanted(self) -> bool:
        """Whether the next answer may call tools."""
        return self.check.isChecked() and self.check.isEnabled() and self.count > 0


class ChatTools(QObject):
    """The chat page's tools: keeps the toggle in step, and shows each call of the answer as a live card.

    ``is_streaming_here()`` says whether the conversation on screen is the one being answered (the
    user may look at another one meanwhile: its calls wait, and get their cards back on return).
    """

    def __init__(self, controller: ChatController, transcript: TranscriptView, toggle: ToolsToggle,
                 is_streaming_here: Callable[[], bool]) -> None:
        super().__init__(toggle)
        self.controller = controller
        self.transcript = transcript
        self.toggle = toggle
        self.tools: ToolsControl | None = None
        self._here = is_streaming_here
        self._calls: dict[str, ToolCallRequest] = {}  # calls of the answer streaming now, until they end
        toggle.changed.connect(lambda _on: self.refresh())
        controller.tool_call_requested.connect(self._requested)
        controller.tool_call_finished.connect(self._finished)

    def set_tools(self, tools: ToolsControl) -> None:
        self.tools = tools
        self.controller.tools = tools
        tools.changed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        """The toggle: servers, tools on, and why the loaded model cannot use them."""
        from core.tools import tools_unavailable_reason

        t = self.tools
        status = self.controller.engine.status
        # Before the first load the model is not known: it loads on send, and gets tools if it can use them.
        reason = tools_unavailable_reason(status) if status is not None else ""
        self.toggle.update_state(len(t.servers) if t else 0, len(t.enabled_tools()) if t else 0, reason)
        # The user's choice only: whether the model can use them is decided on the engine thread when the
        # answer starts (ChatSession skips tools for a template without them). The greyed state follows
        # the last load, which a quick send after picking another model would otherwise outrun.
        self.controller.use_tools = self.toggle.check.isChecked() and self.toggle.count > 0

    def restore_cards(self) -> None:
        """After the transcript was reloaded: calls still waiting (or running) get their live cards back."""
        if self.controller.streaming and self._here():
            for request in list(self._calls.values()):
                self._show(request)
        elif not self.controller.streaming:
            self._calls.clear()

    def _requested(self, request: ToolCallRequest) -> None:
        self._calls[request.id] = request
        if self._here():
            self._show(request)

    def _show(self, request: ToolCallRequest) -> None:
        card = self.transcript.tool_card(request.id)
        if card is None:
            card = ToolCallCard(request.id, request.tool, request.arguments, self.transcript.palette_)
            self.transcript.add_tool_card(card)
        if not card.property("wired"):
            card.setProperty("wired", True)
            tool = request.tool
            card.decided.connect(lambda call_id, decision: self.controller.answer_tool_call(call_id, tool, decision))
        if request.tool in self.controller.always_allowed:
            card.set_running(always=True)
        elif request.id in self.controller.answered_calls:
            card.set_running()
        else:
            card.set_waiting()

    def _finished(self, result: ToolCallResult) -> None:
        self._calls.pop(result.id, None)
        if self.tools is not None and result.status == "error":
            self.tools.poll()  # the server may have died in this call: Settings and the toggle say so now
        card = self.transcript.tool_card(result.id) if self._here() else None
        if card is not None:
            card.set_result(result.text, result.status)


@dataclass(frozen=True)
class StoredCall:
    """A tool call of a saved conversation, with how it ended."""

    id: str
    tool: str
    arguments: str
    text: str
    status: str  # "ok" | "error" | "denied" | "not_run"


def stored_calls(messages: list[Message]) -> dict[int, list[StoredCall]]:
    """For each assistant message that called tools (by index), its calls matched with their results.

    A call whose result was never stored (the answer was stopped while it waited) reads "not_run";
    a tool message that matches no call is listed under its own index.
    """
    results = {str(m.meta.get("tool_call_id", "")): m for m in messages if m.role == "tool"}
    used: set[str] = set()
    calls: dict[int, list[StoredCall]] = {}
    for i, m in enumerate(messages):
        if m.role == "assistant":
            for call in m.meta.get("tool_calls") or []:
                if not isinstance(call, dict):
                    continue
                call_id = str(call.get("id", ""))
                result = results.get(call_id)
                if result is not None:
                    used.add(call_id)
                calls.setdefault(i, []).append(StoredCall(
                    id=call_id, tool=str(call.get("tool", "")), arguments=_text(call.get("arguments", "")),
                    text=result.content if result is not None else "",
                    status=str(result.meta.get("status", "ok")) if result is not None else "not_run"))
        elif m.role == "tool" and str(m.meta.get("tool_call_id", "")) not in used:
            calls.setdefault(i, []).append(StoredCall(
                id=str(m.meta.get("tool_call_id", "")), tool=str(m.meta.get("tool", "")),
                arguments=_text(m.meta.get("arguments", "")), text=m.content, status=str(m.meta.get("status", "ok"))))
    return calls


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    import json

    return json.dumps(value, ensure_ascii=False)
