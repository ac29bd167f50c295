"""The chat's tool loop: a scripted tool-calling model, the real engine and a real MCP server."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from core.chats import ChatStore
from core.chats.session import ChatSession, ToolCallRequest, ToolCallResult
from core.chats.tool_loop import DENIED
from core.engine import Completion, Engine, LoadOptions, SamplingParams, TextChunk
from core.tools import McpServerConfig, ToolRegistry, tools_unavailable_reason
from tests.fixtures.mcp_servers import stdio_entry
from tests.fixtures.tool_chat_model import ANSWER_TEXT, call_script, write_tool_chat_llama
from tests.fixtures.tool_model import TEXT_ANSWER, write_text_model

GREEDY = SamplingParams(temperature=0, max_tokens=40, repeat_penalty=1.0)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A HEARTH_HOME for the module's engines and servers (the per-test one comes later)."""
    folder = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEARTH_HOME", str(folder))
        yield folder


def _engine(path: Path) -> Engine:
    engine = Engine()
    engine.load(path, LoadOptions(n_ctx=4096, n_threads=2))
    return engine


@pytest.fixture(scope="module")
def engine(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The scripted model: it calls add(2, 3), and answers ANSWER_TEXT after a tool result."""
    with _engine(write_tool_chat_llama(tmp_path_factory.mktemp("m") / "tool-chat.gguf")) as eng:
        yield eng


@pytest.fixture(scope="module")
def registry(home: Path) -> Iterator[ToolRegistry]:
    with ToolRegistry([McpServerConfig(name="fixture", **stdio_entry())]) as reg:
        reg.start()
        yield reg


class Asker:
    """An approval callback that answers from a script and remembers what it was asked."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked: list[ToolCallRequest] = []

    def __call__(self, request: ToolCallRequest) -> str:
        self.asked.append(request)
        return self.answers.pop(0)


def _collect(stream: Iterable[object]) -> list[object]:
    return list(stream)


def _text(items: list[object]) -> str:
    return "".join(i.text for i in items if isinstance(i, TextChunk))


def _of(items: list[object], kind: type) -> list:  # type: ignore[type-arg]
    return [i for i in items if isinstance(i, kind)]


def test_a_call_is_shown_approved_run_and_answered(engine: Engine, registry: ToolRegistry) -> None:
    store = ChatStore()
    session = ChatSession.start(store, engine, model="tool-chat")
    asker = Asker("once")
    items = _collect(session.send("What is 2 + 3?", GREEDY, tools=registry, approve=asker))
    request, result = _of(items, ToolCallRequest), _of(items, ToolCallResult)
    assert len(request) == 1 and request[0].tool == "add" and request[0].arguments == '{"a": 2, "b": 3}'
    assert asker.asked == request
    assert result == [ToolCallResult(request[0].id, "add", '{"a": 2, "b": 3}', "5", "ok")]
    # The order the caller sees: the request, then its result, then the answer, then one Completion.
    assert items.index(request[0]) < items.index(result[0]) < len(items) - 1
    assert _text(items) == ANSWER_TEXT and "<tool_call>" not in _text(items)
    assert isinstance(items[-1], Completion) and items[-1].text == ANSWER_TEXT
    assert len(_of(items, Completion)) == 1

    messages = store.messages(session.conversation_id)
    assert [m.role for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[1].finish_reason == "tool_calls"
    assert messages[1].meta["tool_calls"] == [{"id": request[0].id, "tool": "add", "arguments": '{"a": 2, "b": 3}'}]
    assert messages[2].content == "5"
    assert messages[2].meta == {"tool_call_id": request[0].id, "tool": "add", "arguments": '{"a": 2, "b": 3}',
                                "status": "ok"}
    assert messages[3].content == ANSWER_TEXT and messages[3].finish_reason == "stop"
    # The result reached the model: it is in the prompt as a tool message (the model answered text
    # only because the template saw a tool result last).
    prompt = session.prompt_messages()
    assert prompt[2] == {"role": "tool", "content": "5", "tool_call_id": request[0].id, "name": "add"}
    assert prompt[1]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}


def test_a_denied_call_tells_the_model_and_the_chat_goes_on(engine: Engine, registry: ToolRegistry) -> None:
    store = ChatStore()
    session = ChatSession.start(store, engine, model="tool-chat")
    items = _collect(session.send("Add 2 and 3", GREEDY, tools=registry, approve=Asker("deny")))
    (result,) = _of(items, ToolCallResult)
    assert result.status == "denied" and result.text == DENIED == "The user denied this tool call."
    assert _text(items) == ANSWER_TEXT
    tool = store.messages(session.conversation_id)[2]
    assert tool.role == "tool" and tool.content == DENIED and tool.meta["status"] == "denied"
    # Without an approval callback nothing runs.
    items = _collect(session.send("Add them again", GREEDY, tools=registry))
    assert [r.status for r in _of(items, ToolCallResult)] == ["denied"] and _text(items) == ANSWER_TEXT


def test_always_is_remembered_for_the_session_and_registry(engine: Engine, registry: ToolRegistry) -> None:
    store = ChatStore()
    session = ChatSession.start(store, engine, model="tool-chat")
    asker = Asker("always")
    _collect(session.send("Add", GREEDY, tools=registry, approve=asker))
    items = _collect(session.send("Add again", GREEDY, tools=registry, approve=asker))
    assert len(asker.asked) == 1 and [r.status for r in _of(items, ToolCallResult)] == ["ok"]
    assert session.always_allowed_tools(registry) == {"add"}
    # Another session on the same conversation asks again.
    other = ChatSession(store, engine, session.conversation_id)
    fresh = Asker("once")
    _collect(other.send("And again", GREEDY, tools=registry, approve=fresh))
    assert len(fresh.asked) == 1


def test_reopen_and_regenerate_replay_the_tool_messages(engine: Engine, registry: ToolRegistry) -> None:
    store = ChatStore()
    session = ChatSession.start(store, engine, model="tool-chat", system_prompt="Use tools.")
    _collect(session.send("What is 2 + 3?", GREEDY, tools=registry, approve=Asker("once")))
    reopened = ChatSession(ChatStore(), engine, session.conversation_id)
    prompt = reopened.prompt_messages()
    assert prompt == session.prompt_messages()
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "tool", "assistant"]
    assert prompt[3]["content"] == "5"
    items = _collect(reopened.regenerate(GREEDY, tools=registry, approve=Asker("once")))
    assert [r.text for r in _of(items, ToolCallResult)] == ["5"]
    messages = store.messages(session.conversation_id)
    assert [m.role for m in messages] == ["user", "assistant", "tool", "assistant"]  # replaced, not added


def test_the_cap_stops_a_model_that_keeps_calling(home: Path, registry: ToolRegistry, tmp_path: Path) -> None:
    store = ChatStore()
    with _engine(write_tool_chat_llama(tmp_path / "always-calls.gguf", answer=None)) as eng:
        session = ChatSession.start(store, eng, model="always-calls")
        items = _collect(session.send("Add forever", GREEDY, tools=registry, approve=Asker("always"),
                                      max_tool_calls=2))
    assert [r.text for r in _of(items, ToolCallResult)] == ["5", "5"]
    assert isinstance(items[-1], Completion) and items[-1].text == ""
    messages = store.messages(session.conversation_id)
    assert [m.role for m in messages] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert messages[-1].meta["tools_stopped"].startswith("Stopped after 2 tool calls in one answer")
    assert "tool_calls" not in messages[-1].meta


def test_arguments_that_do_not_parse_are_an_error_result(home: Path, registry: ToolRegistry, tmp_path: Path) -> None:
    store = ChatStore()
    asker = Asker()
    with _engine(write_tool_chat_llama(tmp_path / "bad-json.gguf", call=call_script("add", '{"a": 2,,'))) as eng:
        session = ChatSession.start(store, eng, model="bad-json")
        items = _collect(session.send("Add", GREEDY, tools=registry, approve=asker))
    (request,), (result,) = _of(items, ToolCallRequest), _of(items, ToolCallResult)
    assert request.tool == "add" and result.status == "error"
    assert result.text.startswith("The call to 'add' could not be read: its arguments are not valid JSON")
    assert asker.asked == [] and _text(items) == ANSWER_TEXT  # nothing to approve; the chat goes on
    assert [m.role for m in store.messages(session.conversation_id)] == ["user", "assistant", "tool", "assistant"]


def test_a_server_that_dies_mid_chat_is_a_sentence(home: Path, tmp_path: Path) -> None:
    store = ChatStore()
    with ToolRegistry([McpServerConfig(name="fragile", **stdio_entry("fragile"))]) as reg, \
            _engine(write_tool_chat_llama(tmp_path / "dies.gguf", call=call_script("die", "{}"))) as eng:
        reg.start()
        session = ChatSession.start(store, eng, model="dies")
        items = _collect(session.send("Stop the server", GREEDY, tools=reg, approve=Asker("once")))
        (result,) = _of(items, ToolCallResult)
        assert result.status == "error"
        assert result.text.startswith("The tool server 'fragile' stopped while running 'die'")
        assert _text(items) == ANSWER_TEXT and reg.states()[0].status == "failed"
        # The chat keeps working: the next call meets a server that is gone, in a sentence.
        items = _collect(session.send("Again", GREEDY, tools=reg, approve=Asker("once")))
        assert [r.status for r in _of(items, ToolCallResult)] == ["error"]
        assert _of(items, ToolCallResult)[0].text.startswith("There is no tool named 'die'")
        assert _text(items) == ANSWER_TEXT
    assert len(store.messages(session.conversation_id)) == 8


def test_a_model_without_tool_support_chats_as_before(home: Path, registry: ToolRegistry, tmp_path: Path) -> None:
    assert tools_unavailable_reason(None).startswith("No model is loaded")
    store = ChatStore()
    asker = Asker()
    with _engine(write_text_model(tmp_path / "text.gguf")) as eng:
        assert eng.status is not None and not eng.status.supports_tools
        assert tools_unavailable_reason(eng.status).startswith("This model's chat template has no tool support")
        session = ChatSession.start(store, eng, model="text")
        items = _collect(session.send("Hi", GREEDY, tools=registry, approve=asker))
    assert _text(items) == TEXT_ANSWER and not _of(items, ToolCallResult) and asker.asked == []


def test_tools_work_with_the_tool_model(engine: Engine) -> None:
    assert tools_unavailable_reason(engine.status) == ""
