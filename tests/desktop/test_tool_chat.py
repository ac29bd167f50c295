"""Tools in the chat, on tiny scripted tool-calling models (tests/fixtures/tool_chat_model.py) and the real
fixture MCP server over stdio: the call's card waits for the user while the window runs, Allow runs it and
the answer goes on, Deny, Always allow, markup shown as plain text, a server that dies mid-call, reopened
chats, and the Tools control greyed with its reason for the starter model (no tool support)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from core.library import Library
from core.tools import default_config_path, tools_unavailable_reason
from desktop.views.chat_page import ChatPage
from desktop.views.main_window import MainWindow
from desktop.views.tool_call_card import ToolCallCard
from tests.desktop.conftest import WindowFactory, use_model, wait_until
from tests.fixtures.mcp_servers import stdio_entry
from tests.fixtures.tool_chat_model import ANSWER_TEXT, call_script, write_tool_chat_llama

MARKUP = "<b>bold</b> <a href='https://example.com'>link</a>"
START = 90  # bounds for a busy machine, not measurements
ANSWER = 120


@pytest.fixture
def tool_models(tmp_path: Path, hearth_home: Path) -> dict[str, str]:
    """Three scripted models in the library (add, echo with markup, die) and the fixture server in mcp.json."""
    library = Library(discover_hf_cache=False)
    echo_args = json.dumps({"text": MARKUP})
    scripts = {"tool-add": None, "tool-echo": call_script("echo", echo_args), "tool-die": call_script("die", "{}")}
    for name, call in scripts.items():
        path = tmp_path / f"{name}.gguf"
        write_tool_chat_llama(path, call) if call else write_tool_chat_llama(path)
        library.import_file(path, mode="link", name=name)
    default_config_path().parent.mkdir(parents=True, exist_ok=True)
    default_config_path().write_text(json.dumps({"mcpServers": {"fixture": stdio_entry()}}))
    return {name: name for name in scripts}


def _window(make_window: WindowFactory, qtbot: object) -> MainWindow:
    window = make_window()
    wait_until(qtbot, lambda: window.library_model.rowCount() >= 4, 30, "the scripted models in the library")
    wait_until(qtbot, lambda: window.tools.state("fixture").status == "running", START, "the fixture server")
    window.show_page("chat")
    return window


def _use(page: ChatPage, name: str) -> None:
    use_model(page, name, max_tokens=40, n_ctx=4096)  # the 7 tools' schemas are ~1,750 of the tiny vocabulary's tokens


def _send(qtbot: object, page: ChatPage, text: str) -> None:
    page.composer.edit.setPlainText(text)
    qtbot.keyClick(page.composer.edit, Qt.Key.Key_Return)  # type: ignore[attr-defined]


def _card(qtbot: object, page: ChatPage, status: str, index: int = -1) -> ToolCallCard:
    def found() -> bool:
        cards = page.transcript.tool_cards
        return len(cards) > (index if index >= 0 else 0) and cards[index].status == status

    wait_until(qtbot, found, ANSWER, f"a tool card that is {status}")
    return page.transcript.tool_cards[index]


def _idle(qtbot: object, page: ChatPage) -> None:
    wait_until(qtbot, lambda: not page.controller.streaming, ANSWER, "the answer to finish")


def test_the_card_waits_allow_runs_the_tool_and_the_answer_goes_on(
    make_window: WindowFactory, qtbot: object, tool_models: dict[str, str]
) -> None:
    window = _window(make_window, qtbot)
    page = window.chat
    config_before = default_config_path().read_bytes()
    _use(page, "tool-add")
    assert page.tools_toggle.isVisibleTo(page) and page.tools_toggle.check.text() == "Tools · 7 on"
    _send(qtbot, page, "What is 2 + 3?")
    card = _card(qtbot, page, "waiting")
    # The engine thread waits for the user; the GUI does not: events are processed, the card stays.
    qtbot.wait(300)  # type: ignore[attr-defined]
    assert page.controller.streaming and card.status == "waiting" and card.buttons.isVisibleTo(card)
    assert card.tool == "add" and card.title.text() == "Tool call · add"
    assert json.loads(card.arguments.toPlainText()) == {"a": 2, "b": 3}
    assert card.arguments.toPlainText() == '{\n  "a": 2,\n  "b": 3\n}'  # pretty, as the model's JSON
    conv = page.current_id
    assert conv is not None
    assert not any(m.role == "tool" for m in window.store.messages(conv))  # nothing ran yet
    # The Tools control is on the loaded model's side: this one can call tools.
    assert page.tools_toggle.check.isEnabled() and not page.tools_toggle.reason.isVisibleTo(page)

    card.allow_button.click()
    assert card.status == "running" and not card.buttons.isVisibleTo(card)
    _idle(qtbot, page)
    roles = [(m.role, m.content) for m in window.store.messages(conv)]
    assert roles[0] == ("user", "What is 2 + 3?") and roles[2] == ("tool", "5") and roles[3] == ("assistant", ANSWER_TEXT)
    assert window.store.messages(conv)[2].meta["status"] == "ok"
    # After the answer the transcript is the stored chat: the call as a finished card, then the answer.
    card = page.transcript.tool_cards[0]
    assert card.status == "ok" and card.result_text == "5" and card.result.isHidden()
    card.result_toggle.click()
    assert not card.result.isHidden() and card.result.toPlainText() == "5"
    assert [b.message.role for b in page.transcript.bubbles] == ["user", "assistant"]
    assert page.transcript.bubbles[-1].message.content == ANSWER_TEXT
    # Reopened: the same finished card, no buttons.
    page.new_chat()
    assert not page.transcript.tool_cards
    page.open_conversation(conv)
    reopened = page.transcript.tool_cards
    assert len(reopened) == 1 and reopened[0].status == "ok" and not reopened[0].buttons.isVisibleTo(reopened[0])
    # Tool output never changes Hearth's configuration.
    assert default_config_path().read_bytes() == config_before


def test_deny_then_always_allow(make_window: WindowFactory, qtbot: object, tool_models: dict[str, str]) -> None:
    window = _window(make_window, qtbot)
    page = window.chat
    _use(page, "tool-add")
    _send(qtbot, page, "Add two and three.")
    _card(qtbot, page, "waiting").deny_button.click()
    _idle(qtbot, page)
    conv = page.current_id
    assert conv is not None
    tool = next(m for m in window.store.messages(conv) if m.role == "tool")
    assert tool.meta["status"] == "denied" and "denied" in tool.content
    card = page.transcript.tool_cards[0]
    assert card.status == "denied" and "refused" in card.note.text() and card.result_toggle.isHidden()
    assert window.store.messages(conv)[-1].content == ANSWER_TEXT  # the model was told, and answered

    # Stop while a call waits: it is not run, and the answer stops.
    _send(qtbot, page, "And now?")
    _card(qtbot, page, "waiting", 1)
    page.stop()
    _idle(qtbot, page)
    tools = [m for m in window.store.messages(conv) if m.role == "tool"]
    assert [m.meta["status"] for m in tools] == ["denied", "denied"]
    assert [c.status for c in page.transcript.tool_cards] == ["denied", "denied"]

    _send(qtbot, page, "Again, please.")
    _card(qtbot, page, "waiting", 2).always_button.click()
    _idle(qtbot, page)
    assert [c.status for c in page.transcript.tool_cards] == ["denied", "denied", "ok"]
    assert "add" in page.controller.always_allowed
    # Now the tool runs without asking: its card never waits.
    statuses: list[str] = []
    page.controller.tool_call_requested.connect(
        lambda _r: statuses.append(page.transcript.tool_cards[-1].status if page.transcript.tool_cards else ""))
    _send(qtbot, page, "Once more.")
    _idle(qtbot, page)
    assert statuses == ["running"]
    assert [c.status for c in page.transcript.tool_cards] == ["denied", "denied", "ok", "ok"]


def test_markup_stays_text_and_a_dead_server_is_one_sentence(
    make_window: WindowFactory, qtbot: object, tool_models: dict[str, str]
) -> None:
    window = _window(make_window, qtbot)
    page = window.chat
    _use(page, "tool-echo")
    _send(qtbot, page, "Echo something.")
    card = _card(qtbot, page, "waiting")
    assert json.loads(card.arguments.toPlainText()) == {"text": MARKUP}
    assert "<b>" not in card.arguments.toHtml()  # escaped: shown as text, never as markup
    card.allow_button.click()
    _idle(qtbot, page)
    card = page.transcript.tool_cards[0]
    assert card.status == "ok" and card.result.toPlainText() == MARKUP and "<b>" not in card.result.toHtml()

    _use(page, "tool-die")
    _send(qtbot, page, "Stop the server.")
    _card(qtbot, page, "waiting", 1).allow_button.click()
    _idle(qtbot, page)
    card = page.transcript.tool_cards[1]
    assert card.status == "error" and card.note.isVisibleTo(card)
    sentence = card.note.text()
    assert "fixture" in sentence and "\n" not in sentence and "Traceback" not in sentence
    conv = page.current_id
    assert conv is not None and window.store.messages(conv)[-1].content == ANSWER_TEXT  # the chat went on
    assert not page.banner.text
    wait_until(qtbot, lambda: window.tools.state("fixture").status == "failed", START, "the server marked failed")
    window.show_page("settings")
    section = window.settings_page.tools
    assert section is not None and section.rows["fixture"].status.text().startswith("Failed: ")
    assert page.tools_toggle.check.text() == "Tools · none on"


def test_the_tools_control_is_greyed_with_the_reason_for_the_starter_model(
    make_window: WindowFactory, qtbot: object, tool_models: dict[str, str]
) -> None:
    window = _window(make_window, qtbot)
    page = window.chat
    starter = next(e.name for e in window.library_model.entries() if not e.name.startswith("tool-"))
    _use(page, starter)
    page.params.form.editors["max_tokens"].setValue(4)
    _send(qtbot, page, "Hello")
    _idle(qtbot, page)
    status = page.controller.engine.status
    assert status is not None and not status.supports_tools
    reason = tools_unavailable_reason(status)
    assert reason and page.tools_toggle.reason.text() == reason and page.tools_toggle.reason.isVisibleTo(page)
    assert not page.tools_toggle.check.isEnabled() and page.tools_toggle.check.toolTip() == reason
    assert not page.tools_toggle.wanted() and not page.transcript.tool_cards
    # Back to a tool model: the control comes back.
    _use(page, "tool-add")
    wait_until(qtbot, lambda: page.tools_toggle.check.isEnabled(), ANSWER, "the tool model to load")
    assert not page.tools_toggle.reason.isVisibleTo(page)


def test_screenshots_of_tool_calls_in_the_chat(
    make_window: WindowFactory, qtbot: object, tool_models: dict[str, str]
) -> None:
    from tests.desktop.test_tools_section import shoot

    window = _window(make_window, qtbot)
    window.resize(1280, 800)
    page = window.chat
    _use(page, "tool-echo")
    _send(qtbot, page, "Repeat some formatting for me.")
    _card(qtbot, page, "waiting")
    shots = shoot(window, qtbot, "chat-tool-waiting")
    # The smallest window: the card's buttons and arguments stay inside the chat column.
    window.resize(window.minimumSizeHint())
    qtbot.wait(100)  # type: ignore[attr-defined]
    shots += shoot(window, qtbot, "chat-tool-smallest")
    card = page.transcript.tool_cards[0]
    column = page.transcript.viewport()
    right = card.mapTo(column, card.rect().topRight()).x()
    assert right <= column.width() and card.deny_button.mapTo(column, card.deny_button.rect().topRight()).x() <= right
    window.resize(1280, 800)
    card.allow_button.click()
    _idle(qtbot, page)
    page.transcript.tool_cards[0].toggle_result()
    shots += shoot(window, qtbot, "chat-tool-finished")
    starter = next(e.name for e in window.library_model.entries() if not e.name.startswith("tool-"))
    page.new_chat()
    _use(page, starter)
    wait_until(qtbot, lambda: not page.tools_toggle.check.isEnabled(), ANSWER, "the starter model to load")
    shots += shoot(window, qtbot, "chat-tools-greyed")
    page.new_chat()
    _use(page, "tool-die")
    _send(qtbot, page, "Stop the server.")
    _card(qtbot, page, "waiting").allow_button.click()
    _idle(qtbot, page)
    shots += shoot(window, qtbot, "chat-tool-error")
    assert all(p.exists() for p in shots)


def test_an_answer_stopped_by_the_cap_on_tool_calls_says_so(qtbot: object) -> None:
    from core.chats.store import Message
    from desktop.theme import LIGHT
    from desktop.views.transcript import MessageBubble

    note = "Stopped after 8 tool calls in one answer: send a message to let the model go on."
    answer = Message(role="assistant", content="", finish_reason="stop", completion_tokens=3,
                     meta={"tools_stopped": note})
    bubble = MessageBubble(answer, LIGHT, last=True)
    qtbot.addWidget(bubble)  # type: ignore[attr-defined]
    assert note in bubble.stats.text()
    plain = MessageBubble(Message(role="assistant", content="Hi", finish_reason="stop", completion_tokens=1),
                          LIGHT, last=True)
    qtbot.addWidget(plain)  # type: ignore[attr-defined]
    assert "Stopped after" not in plain.stats.text()
