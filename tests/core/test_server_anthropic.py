"""The Anthropic-compatible Messages API (/v1/messages) through the official ``anthropic`` client against a
real server and real (tiny, scripted) models."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from core.server.generate import StopWatch
from tests.core.test_server_support import Served, served, served_home, start_server  # noqa: F401  (fixtures)
from tests.fixtures.tool_model import TEXT_ANSWER

WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
# A real 1x1 PNG (the smallest valid file: signature, IHDR, IDAT, IEND).
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


@pytest.fixture(autouse=True)
def hearth_home(served_home: Path) -> Path:  # noqa: F811  (this module's home is the server's)
    return served_home


@pytest.fixture
def client(served: Served) -> anthropic.Anthropic:  # noqa: F811
    return anthropic.Anthropic(base_url=served.base_url, api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def secured(served_home: Path) -> Iterator[Served]:  # noqa: F811
    s = start_server(served_home, api_key="s3cret-key")
    yield s
    s.server.stop()
    s.host.close()


def _user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def _sse(raw: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) for each server-sent event of a raw stream."""
    events = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_plain_message(client: anthropic.Anthropic, served: Served) -> None:  # noqa: F811
    served.records.clear()
    reply = client.messages.create(model="text-llama", max_tokens=64, messages=_user("hello"),
                                   extra_body={"temperature": 0})  # newer clients send no sampling settings
    assert [b.type for b in reply.content] == ["text"] and reply.content[0].text == TEXT_ANSWER  # type: ignore[union-attr]
    assert reply.stop_reason == "end_turn" and reply.stop_sequence is None
    assert reply.id.startswith("msg_") and reply.type == "message" and reply.role == "assistant"
    assert reply.model == "text-llama"
    usage = reply.usage
    assert usage.output_tokens == 4 and usage.input_tokens + (usage.cache_read_input_tokens or 0) > 3
    record = served.logged("/v1/messages")
    assert (record.model, record.status, record.completion_tokens) == ("text-llama", 200, 4)


def test_system_text_blocks_and_max_tokens(client: anthropic.Anthropic) -> None:
    reply = client.messages.create(
        model="count-llama", max_tokens=3, messages=_user("count"),
        extra_body={"temperature": 0, "top_p": 0.9, "top_k": 20},
        system=[{"type": "text", "text": "You count."}, {"type": "text", "text": "Be brief."}],
    )
    assert reply.content[0].text == " one two three" and reply.stop_reason == "max_tokens"  # type: ignore[union-attr]
    assert reply.usage.output_tokens == 3
    plain = client.messages.create(model="text-llama", max_tokens=16, system="Be brief.",
                                   messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    assert plain.content[0].text == TEXT_ANSWER  # type: ignore[union-attr]


def test_stop_sequences(client: anthropic.Anthropic) -> None:
    reply = client.messages.create(model="count-llama", max_tokens=12, messages=_user("count"),
                                   stop_sequences=[" nine", " four"])
    assert reply.content[0].text == " one two three"  # type: ignore[union-attr]
    assert reply.stop_reason == "stop_sequence" and reply.stop_sequence == " four"
    # A stop sequence that spans tokens, and one that never comes.
    spanning = client.messages.create(model="count-llama", max_tokens=12, messages=_user("count"),
                                      stop_sequences=["o thr", "eleven"])
    assert spanning.content[0].text == " one tw" and spanning.stop_sequence == "o thr"  # type: ignore[union-attr]
    missed = client.messages.create(model="count-llama", max_tokens=5, messages=_user("count"),
                                    stop_sequences=["eleven"])
    assert missed.content[0].text == " one two three four five" and missed.stop_reason == "max_tokens"  # type: ignore[union-attr]
    assert missed.stop_sequence is None
    with client.messages.stream(model="count-llama", max_tokens=12, messages=_user("count"),
                                stop_sequences=[" five"]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == " one two three four" and final.stop_reason == "stop_sequence" and final.stop_sequence == " five"


def test_stop_watch_holds_back_what_may_start_a_stop_sequence() -> None:
    watch = StopWatch(["cd", "xyz"])
    assert watch.feed("ab") == "ab"
    assert watch.feed("c") == ""  # perhaps the start of "cd"
    assert watch.feed("de") == "" and watch.matched == "cd" and watch.text == "ab"
    assert watch.feed("more") == "" and watch.finish() == ""
    other = StopWatch(["cd"])
    assert other.feed("ac") == "a" and other.feed("e") == "ce" and other.finish() == "" and other.matched is None
    tail = StopWatch(["xyz"])
    assert tail.feed("axy") == "a" and tail.finish() == "xy" and tail.matched is None


def test_streamed_event_sequence(served: Served) -> None:  # noqa: F811
    body = {"model": "text-llama", "max_tokens": 32, "stream": True, "messages": _user("hi")}
    with httpx.stream("POST", f"{served.base_url}/v1/messages", json=body, timeout=60) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = _sse(response.read().decode())
    names = [name for name, _ in events]
    assert all(data["type"] == name for name, data in events)
    deltas = len(names) - 6
    assert deltas >= 1 and names == (["message_start", "content_block_start", "ping"] + ["content_block_delta"] * deltas
                                     + ["content_block_stop", "message_delta", "message_stop"])
    start = events[0][1]["message"]
    assert start["role"] == "assistant" and start["content"] == [] and start["stop_reason"] is None
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == TEXT_ANSWER
    assert all(data["delta"]["type"] == "text_delta" and data["index"] == 0
               for name, data in events if name == "content_block_delta")
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 4
    assert delta["usage"]["input_tokens"] + delta["usage"]["cache_read_input_tokens"] > 3


def test_streamed_with_the_client(client: anthropic.Anthropic) -> None:
    raw = list(client.messages.create(model="text-llama", max_tokens=32, messages=_user("hi"), stream=True))
    assert raw[0].type == "message_start" and raw[-1].type == "message_stop"  # the client drops pings
    with client.messages.stream(model="text-llama", max_tokens=32, messages=_user("hi")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == TEXT_ANSWER and final.content[0].text == TEXT_ANSWER  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4
    assert final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0) > 3


def test_tool_round_trip(client: anthropic.Anthropic) -> None:
    messages: list[Any] = _user("Weather in Paris?")
    reply = client.messages.create(model="tool-llama", max_tokens=100, tools=[WEATHER], messages=messages)  # type: ignore[list-item]
    assert reply.stop_reason == "tool_use"
    uses = [b for b in reply.content if b.type == "tool_use"]
    assert len(uses) == 1 and not [b for b in reply.content if b.type == "text"]
    use = uses[0]
    assert use.name == "get_weather" and use.input == {"city": "Paris"} and use.id.startswith("toolu_")
    messages += [{"role": "assistant", "content": reply.content},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                               "content": [{"type": "text", "text": '{"temperature": 21}'}]}]}]
    # The scripted model calls the tool whatever it is told; with tool_choice none the call is not read, so
    # its answer is text, and the tool's result is in the prompt it read.
    again = client.messages.create(model="tool-llama", max_tokens=100, tools=[WEATHER], messages=messages,  # type: ignore[list-item]
                                   tool_choice={"type": "none"})
    assert again.stop_reason == "end_turn" and "<tool_call>" in again.content[0].text  # type: ignore[union-attr]
    counted = client.messages.count_tokens(model="tool-llama", messages=messages, tools=[WEATHER],  # type: ignore[list-item]
                                           tool_choice={"type": "none"})
    assert counted.input_tokens == again.usage.input_tokens + (again.usage.cache_read_input_tokens or 0)
    without_result = client.messages.count_tokens(model="tool-llama", messages=messages[:2], tools=[WEATHER],  # type: ignore[list-item]
                                                  tool_choice={"type": "none"})
    assert counted.input_tokens > without_result.input_tokens + 5  # the result's text is in the prompt


def test_tool_use_streamed(client: anthropic.Anthropic, served: Served) -> None:  # noqa: F811
    with client.messages.stream(model="tool-llama", max_tokens=100, tools=[WEATHER],  # type: ignore[list-item]
                                messages=_user("Weather?"), tool_choice={"type": "auto"}) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and [b.type for b in final.content] == ["tool_use"]
    assert final.content[0].input == {"city": "Paris"} and final.content[0].name == "get_weather"  # type: ignore[union-attr]
    partial = [e.delta.partial_json for e in events if e.type == "content_block_delta"  # type: ignore[union-attr]
               and e.delta.type == "input_json_delta"]  # type: ignore[union-attr]
    assert json.loads("".join(partial)) == {"city": "Paris"}
    body = {"model": "tool-llama", "max_tokens": 100, "stream": True, "tools": [WEATHER], "messages": _user("?")}
    with httpx.stream("POST", f"{served.base_url}/v1/messages", json=body, timeout=60) as response:
        names = [name for name, _ in _sse(response.read().decode())]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]


def test_tools_need_a_template_that_reads_them(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="cannot use tools") as caught:
        client.messages.create(model="text-llama", max_tokens=16, tools=[WEATHER], messages=_user("?"))  # type: ignore[list-item]
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError, match="not one of 'tools'"):
        client.messages.create(model="tool-llama", max_tokens=16, tools=[WEATHER], messages=_user("?"),  # type: ignore[list-item]
                               tool_choice={"type": "tool", "name": "get_time"})


def test_image_is_refused_with_400(client: anthropic.Anthropic) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": base64.b64encode(PNG).decode()}}
    with pytest.raises(anthropic.BadRequestError, match="no vision projector") as caught:
        client.messages.create(model="text-llama", max_tokens=16, messages=[
            {"role": "user", "content": [image, {"type": "text", "text": "What is this?"}]}])  # type: ignore[list-item]
    assert caught.value.status_code == 400
    assert caught.value.body == {"type": "error", "error": {"type": "invalid_request_error",  # type: ignore[comparison-overlap]
                                                            "message": caught.value.body["error"]["message"]}}  # type: ignore[index]
    broken = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "not base64!"}}
    with pytest.raises(anthropic.BadRequestError, match="not valid base64"):
        client.messages.create(model="text-llama", max_tokens=16,
                               messages=[{"role": "user", "content": [broken]}])  # type: ignore[list-item]


def test_unknown_model_is_not_found(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError, match="does not exist") as caught:
        client.messages.create(model="claude-sonnet-4-0", max_tokens=16, messages=_user("hi"))
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def test_adapter_model_by_name(client: anthropic.Anthropic) -> None:
    adapted = client.messages.create(model="text-llama+shouty", max_tokens=8, messages=_user("hello"))
    assert adapted.model == "text-llama+shouty" and adapted.content[0].text != TEXT_ANSWER  # type: ignore[union-attr]


def test_api_key_as_x_api_key_or_bearer(secured: Served) -> None:
    wrong = anthropic.Anthropic(base_url=secured.base_url, api_key="wrong", max_retries=0, timeout=60)
    with pytest.raises(anthropic.AuthenticationError, match="API key") as caught:
        wrong.messages.create(model="text-llama", max_tokens=16, messages=_user("hi"))
    assert caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    missing = httpx.post(f"{secured.base_url}/v1/messages", json={"model": "text-llama", "max_tokens": 8,
                                                                   "messages": _user("hi")})
    assert missing.status_code == 401 and missing.json()["type"] == "error"
    assert missing.json()["error"]["type"] == "authentication_error"
    right = anthropic.Anthropic(base_url=secured.base_url, api_key="s3cret-key", max_retries=0, timeout=60)
    assert right.messages.create(model="text-llama", max_tokens=16, messages=_user("hi")).content[0].text == TEXT_ANSWER  # type: ignore[union-attr]
    bearer = anthropic.Anthropic(base_url=secured.base_url, auth_token="s3cret-key", max_retries=0, timeout=60)
    assert bearer.messages.count_tokens(model="text-llama", messages=_user("hi")).input_tokens > 0


def _anthropic_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error", body
    assert set(body["error"]) == {"type", "message"} and body["error"]["message"], body
    return dict(body["error"])


def test_malformed_requests_are_4xx_in_anthropic_shape(served: Served) -> None:  # noqa: F811
    url = f"{served.base_url}/v1/messages"
    ok = {"model": "text-llama", "max_tokens": 16, "messages": _user("hi")}
    cases: list[tuple[dict[str, Any] | bytes, str]] = [
        (b'{"model": "text-llama", "messages": [', "not valid JSON"),
        ({k: v for k, v in ok.items() if k != "max_tokens"}, "'max_tokens' is required"),
        ({**ok, "max_tokens": 0}, "'max_tokens' is invalid"),
        ({**ok, "max_tokens": 10**6}, "more than the model's 2048-token context"),
        ({**ok, "messages": []}, "'messages' is invalid"),
        ({**ok, "messages": [{"role": "system", "content": "x"}]}, "'messages.0.role' is invalid"),
        ({**ok, "messages": [{"role": "user", "content": [{"type": "audio", "data": "x"}]}]}, "messages.0.content.0"),
        ({**ok, "messages": [{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "f",
                                                          "input": {}}]}]}, "belong to the assistant"),
        ({**ok, "messages": [{"role": "user", "content": [{"type": "document"}]}]}, "document block"),
        ({**ok, "temperature": 1.5}, "'temperature' is invalid"),
        ({**ok, "stop_sequences": ["x"] * 17}, "'stop_sequences' is invalid"),
        ({**ok, "system": 5}, "'system' is invalid"),
        ({**ok, "tools": [{"name": "bad name", "input_schema": {"type": "object"}}]}, "'tools.0.name' is invalid"),
        ({**ok, "messages": _user("hello " * 3000)}, "context"),
    ]
    for body, message in cases:
        response = (httpx.post(url, content=body, headers={"content-type": "application/json"})
                    if isinstance(body, bytes) else httpx.post(url, json=body))
        assert response.status_code == 400, (body, response.text)
        error = _anthropic_error(response)
        assert error["type"] == "invalid_request_error" and message in error["message"], (message, error)
    nothing = httpx.post(f"{served.base_url}/v1/messages/nothing", json=ok)
    assert nothing.status_code == 404 and _anthropic_error(nothing)["type"] == "not_found_error"
    wrong_method = httpx.get(url)
    assert wrong_method.status_code == 405 and _anthropic_error(wrong_method)["type"] == "invalid_request_error"
    big = httpx.post(url, content=b"x" * (33 * 2**20), headers={"content-type": "application/json"})
    assert big.status_code == 413 and _anthropic_error(big)["type"] == "request_too_large"
    assert httpx.post(url, json=ok).json()["content"][0]["text"] == TEXT_ANSWER  # still serving
