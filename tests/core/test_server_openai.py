"""The OpenAI-compatible API (/v1) through the official ``openai`` client against a real server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest

from tests.core.test_server_support import Served, served, served_home  # noqa: F401  (fixtures)
from tests.fixtures.tool_model import TEXT_ANSWER


@pytest.fixture(autouse=True)
def hearth_home(served_home: Path) -> Path:  # noqa: F811  (this module's home is the server's)
    return served_home


@pytest.fixture
def client(served: Served) -> openai.OpenAI:  # noqa: F811
    return openai.OpenAI(base_url=served.url, api_key="unused", max_retries=0, timeout=60)


def test_lists_library_models_and_adapters(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"text-llama", "tool-llama", "count-llama", "tiny-bert", "text-llama+shouty"} <= ids
    assert client.models.retrieve("text-llama").owned_by == "hearth"


def test_chat_plain(client: openai.OpenAI, served: Served) -> None:  # noqa: F811
    served.records.clear()
    reply = client.chat.completions.create(model="text-llama", messages=[{"role": "user", "content": "hello"}],
                                           temperature=0)
    choice = reply.choices[0]
    assert choice.message.content == TEXT_ANSWER and choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens == 4 and reply.usage.prompt_tokens > 3
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.object == "chat.completion" and reply.model == "text-llama" and reply.id.startswith("chatcmpl-")
    record = served.logged("/v1/chat/completions")
    assert record.path == "/v1/chat/completions" and record.model == "text-llama" and record.status == 200
    assert record.completion_tokens == 4 and record.tokens_per_second > 0 and record.client == "127.0.0.1"


def test_chat_streamed_in_openai_chunks(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="text-llama", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        stream=True, stream_options={"include_usage": True}, temperature=0,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == TEXT_ANSWER
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)


def test_raw_sse_format_ends_with_done(served: Served) -> None:  # noqa: F811
    body = {"model": "text-llama", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", f"{served.url}/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert payloads[0]["choices"][0] == {"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "logprobs": None, "finish_reason": None}
    assert payloads[-1]["choices"][0]["delta"] == {} and payloads[-1]["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in payloads[0]  # only with stream_options.include_usage


def test_max_tokens_and_stop(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="count-llama", messages=[{"role": "user", "content": "count"}],
                                           max_tokens=3, temperature=0)
    assert reply.choices[0].message.content == " one two three" and reply.choices[0].finish_reason == "length"
    reply = client.chat.completions.create(model="count-llama", messages=[{"role": "user", "content": "count"}],
                                           max_completion_tokens=8, stop=[" four"], seed=3, temperature=0,
                                           presence_penalty=0.5, frequency_penalty=0.5, top_p=0.9)
    assert reply.choices[0].message.content == " one two three" and reply.choices[0].finish_reason == "stop"


def test_json_schema_output_parses_and_validates(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}, "ok": {"type": "boolean"}},
              "required": ["city", "ok"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model="text-llama", messages=[{"role": "user", "content": "Which city?"}], temperature=0, max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}},
    )
    data = json.loads(reply.choices[0].message.content or "")
    assert data["city"] in ("Paris", "Rome") and isinstance(data["ok"], bool) and set(data) == {"city", "ok"}


def test_tool_call_round_trip(client: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    messages: list[dict[str, object]] = [{"role": "user", "content": "Weather in Paris?"}]
    reply = client.chat.completions.create(model="tool-llama", messages=messages, tools=tools, temperature=0)  # type: ignore[arg-type]
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    call = (choice.message.tool_calls or [])[0]
    assert call.type == "function" and call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'}]
    again = client.chat.completions.create(model="tool-llama", messages=messages, tools=tools,  # type: ignore[arg-type]
                                           tool_choice="none", temperature=0)
    assert again.choices[0].finish_reason == "stop" and "<tool_call>" in (again.choices[0].message.content or "")
    assert again.usage is not None and again.usage.prompt_tokens > reply.usage.prompt_tokens  # type: ignore[union-attr]


def test_tool_call_streamed(client: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    chunks = list(client.chat.completions.create(model="tool-llama", messages=[{"role": "user", "content": "?"}],
                                                 tools=tools, stream=True, temperature=0))  # type: ignore[arg-type]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or [])]
    assert content == "" and len(calls) == 1 and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(calls[0].function.arguments or "") == {"city": "Paris"}  # type: ignore[union-attr]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tools_on_a_model_without_tool_support_is_400(client: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with pytest.raises(openai.BadRequestError, match="cannot use tools") as caught:
        client.chat.completions.create(model="text-llama", messages=[{"role": "user", "content": "?"}],
                                       tools=tools)  # type: ignore[arg-type]
    assert caught.value.code == "tools_not_supported" and caught.value.param == "tools"


def test_logprobs(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="text-llama", messages=[{"role": "user", "content": "hi"}],
                                           logprobs=True, top_logprobs=3, temperature=0)
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and "".join(t.token for t in content) == TEXT_ANSWER
    for token in content:
        assert token.logprob <= 0 and len(token.top_logprobs) == 3
        assert token.top_logprobs[0].logprob >= token.top_logprobs[-1].logprob
    chunks = list(client.chat.completions.create(model="text-llama", messages=[{"role": "user", "content": "hi"}],
                                                 logprobs=True, stream=True, temperature=0))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content or []]
    assert "".join(t.token for t in streamed) == TEXT_ANSWER


def test_completions(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="count-llama", prompt="hello", max_tokens=2, temperature=0)
    assert reply.choices[0].text == " one two" and reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 2
    text = "".join(c.choices[0].text for c in client.completions.create(
        model="count-llama", prompt="hello", max_tokens=3, stream=True, temperature=0) if c.choices)
    assert text == " one two three"
    echoed = client.completions.create(model="count-llama", prompt="hello", max_tokens=1, echo=True, logprobs=2)
    assert echoed.choices[0].text == "hello one" and echoed.choices[0].logprobs is not None
    assert echoed.choices[0].logprobs.tokens == [" one"]


def test_embeddings(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="tiny-bert", input=["the cat sat", "hello world", "the cat sat"])
    vectors = [d.embedding for d in result.data]
    assert len(vectors) == 3 and len(vectors[0]) == 32 and vectors[0] == pytest.approx(vectors[2])
    assert sum(x * x for x in vectors[0]) == pytest.approx(1.0, abs=1e-4) and vectors[0] != vectors[1]
    assert result.usage.prompt_tokens > 0
    floats = client.embeddings.create(model="tiny-bert", input="the cat sat", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)
    # A chat model answers again after embeddings (reloaded for generation).
    reply = client.chat.completions.create(model="text-llama", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == TEXT_ANSWER


def test_adapter_model_by_name(client: openai.OpenAI, served: Served) -> None:  # noqa: F811
    messages = [{"role": "user", "content": "hello"}]
    adapted = client.chat.completions.create(model="text-llama+shouty", messages=messages,  # type: ignore[arg-type]
                                             temperature=0, max_tokens=8)
    status = served.host.engine.status
    assert status is not None and len(status.loras) == 1 and status.loras[0][0].endswith("shouty-lora-f32.gguf")
    assert adapted.model == "text-llama+shouty" and adapted.choices[0].message.content != TEXT_ANSWER
    base = client.chat.completions.create(model="text-llama", messages=messages, temperature=0)  # type: ignore[arg-type]
    assert base.choices[0].message.content == TEXT_ANSWER
    assert served.host.engine.status is not None and served.host.engine.status.loras == []
