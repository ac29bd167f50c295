"""The Ollama-compatible API (/api) through the official ``ollama`` client against a real server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import ollama
import pytest

from tests.core.test_server_support import Served, served, served_home  # noqa: F401
from tests.fixtures.tool_model import TEXT_ANSWER


@pytest.fixture(autouse=True)
def hearth_home(served_home: Path) -> Path:  # noqa: F811
    return served_home


@pytest.fixture
def client(served: Served) -> ollama.Client:  # noqa: F811
    return ollama.Client(host=served.base_url, timeout=60)


def test_list_and_show(client: ollama.Client) -> None:
    models = {m.model: m for m in client.list().models}
    assert {"text-llama", "tool-llama", "tiny-bert", "text-llama+shouty"} <= set(models)
    text = models["text-llama"]
    assert text.size and text.details is not None and text.details.family == "llama"
    assert text.details.format == "gguf"
    shown = client.show("tool-llama")
    assert "tools" in (shown.capabilities or []) and "<tool_call>" in (shown.template or "")
    assert shown.modelinfo is not None and shown.modelinfo["general.architecture"] == "llama"


def test_chat_plain_and_streamed(client: ollama.Client) -> None:
    reply = client.chat(model="text-llama", messages=[{"role": "user", "content": "hello"}],
                        options={"temperature": 0})
    assert reply.message.content == TEXT_ANSWER and reply.done and reply.done_reason == "stop"
    assert reply.eval_count == 4 and reply.prompt_eval_count and reply.eval_duration
    parts = list(client.chat(model="text-llama:latest", messages=[{"role": "user", "content": "hello"}],
                             stream=True))
    assert "".join(p.message.content or "" for p in parts) == TEXT_ANSWER
    assert [p.done for p in parts].count(True) == 1 and parts[-1].done and parts[-1].done_reason == "stop"


def test_chat_options_and_format(client: ollama.Client) -> None:
    reply = client.chat(model="count-llama", messages=[{"role": "user", "content": "count"}],
                        options={"num_predict": 2, "temperature": 0, "seed": 1, "top_k": 10})
    assert reply.message.content == " one two" and reply.done_reason == "length"
    schema = {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"]}
    shaped = client.chat(model="text-llama", messages=[{"role": "user", "content": "city?"}], format=schema,
                         options={"num_predict": 40})
    assert json.loads(shaped.message.content or "")["city"] in ("Paris", "Rome")


def test_chat_tool_call(client: ollama.Client) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
                                                "parameters": {"type": "object", "properties": {}}}}]
    reply = client.chat(model="tool-llama", messages=[{"role": "user", "content": "weather?"}], tools=tools)
    calls = reply.message.tool_calls or []
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    assert dict(calls[0].function.arguments) == {"city": "Paris"}


def test_generate(client: ollama.Client) -> None:
    reply = client.generate(model="text-llama", prompt="hello")
    assert reply.response == TEXT_ANSWER and reply.done
    raw = client.generate(model="count-llama", prompt="hello", raw=True, options={"num_predict": 3})
    assert raw.response == " one two three" and raw.done_reason == "length"
    parts = list(client.generate(model="text-llama", prompt="hello", system="Be brief.", stream=True))
    assert "".join(p.response for p in parts) == TEXT_ANSWER and parts[-1].done
    loaded = client.generate(model="text-llama", prompt="")
    assert loaded.done and loaded.done_reason == "load"


def test_embed_and_version(client: ollama.Client, served: Served) -> None:  # noqa: F811
    result = client.embed(model="tiny-bert", input=["the cat sat", "hello world"])
    assert len(result.embeddings) == 2 and len(result.embeddings[0]) == 32
    assert sum(x * x for x in result.embeddings[0]) == pytest.approx(1.0, abs=1e-4)
    single = client.embed(model="tiny-bert", input="the cat sat")
    assert single.embeddings[0] == pytest.approx(result.embeddings[0], abs=1e-6)
    legacy = client.embeddings(model="tiny-bert", prompt="the cat sat")
    assert list(legacy.embedding) == pytest.approx(result.embeddings[0], abs=1e-6)
    assert httpx.get(f"{served.base_url}/api/version").json()["version"]
    assert httpx.get(served.base_url + "/").text.startswith("Ollama is running")
    assert client.ps().models[0].model == "tiny-bert"


def test_errors_raise_response_error(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="nope", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 404 and "does not exist" in caught.value.error
    with pytest.raises(ollama.ResponseError) as bad:
        client.chat(model="text-llama", messages=[{"role": "user", "content": "x"}], options={"num_predict": 10**6})
    assert bad.value.status_code == 400 and "num_predict" in bad.value.error
