"""Hostile requests against all three APIs (OpenAI /v1, Ollama /api, Anthropic /v1/messages): each gets a clean
4xx in its API's error shape, never a 500, and the server keeps serving.

Two parts per API: hand-written cases (wrong types, huge fields, deep nesting, bad UTF-8, lone surrogates,
bad numbers, empty and unknown things, bad tool schemas, broken images), then a bounded, seeded run of
random mutations of a good request (a mutation may make a valid request: then any non-5xx answer will do).
Loopback only; the model is a tiny scripted one that answers in four tokens.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.core.test_server_support import Served, served, served_home  # noqa: F401  (fixtures)
from tests.fixtures.tool_model import TEXT_ANSWER

MUTATIONS = 40  # random mutations per API (seeded: the same requests every run)
HUGE = "m" * 100_000
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(autouse=True)
def hearth_home(served_home: Path) -> Path:  # noqa: F811
    return served_home


def _openai_error(body: Any) -> bool:
    return (isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], dict)
            and set(body["error"]) == {"message", "type", "param", "code"} and bool(body["error"]["message"]))


def _ollama_error(body: Any) -> bool:
    return isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str) and bool(body["error"])


def _anthropic_error(body: Any) -> bool:
    return (isinstance(body, dict) and body.get("type") == "error" and set(body) == {"type", "error"}
            and set(body["error"]) == {"type", "message"} and bool(body["error"]["message"]))


def _deep_schema(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


def _common(good: dict[str, Any], text_at: Callable[[dict[str, Any], Any], dict[str, Any]]) -> list[Any]:
    """Cases every API gets: ``text_at(body, value)`` puts ``value`` where the user's text goes."""
    return [
        b"", b"null", b"[]", b'"text"', b"42", b"{", b'{"model": }', b"\xff\xfe{}", b"\x00" * 64,
        b'{"model": "text-llama", "x": "\xc3\x28"}',  # not UTF-8
        json.dumps(good).encode()[:-1] + b', "bad": "\xed\xa0\x80"}',  # a surrogate written as raw UTF-8 bytes
        DEEP.encode(), json.dumps({**good, "n": json.loads("[" * 70 + "]" * 70)}).encode(),
        b'{"model": "text-llama", "temperature": NaN}', b'{"model": "text-llama", "seed": Infinity}',
        b'{"model": "text-llama", "max_tokens": 1' + b"0" * 5000 + b"}",
        text_at(good, "\ud800"), text_at(good, "a\udfffb"), text_at(good, "x" * 200_000),
        text_at(good, 5), text_at(good, {"nested": True}), text_at(good, [5]),
        {**good, "model": HUGE}, {**good, "model": "\ud800"}, {**good, "model": ""}, {**good, "model": 5},
        {**good, "model": "../../etc/passwd"}, {**good, "model": ["text-llama"]},
        {k: v for k, v in good.items() if k != "model"}, {**good, "stream": "maybe"},
    ]


def _openai_cases() -> tuple[str, dict[str, Any], list[Any]]:
    good = {"model": "text-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}

    def text_at(body: dict[str, Any], value: Any) -> dict[str, Any]:
        return {**body, "messages": [{"role": "user", "content": value}]}

    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    cases = [
        *_common(good, text_at),
        {**good, "messages": []}, {**good, "messages": "hi"}, {**good, "messages": [{}]},
        {**good, "messages": [{"role": "wizard", "content": "hi"}]}, {**good, "messages": [None]},
        {**good, "max_tokens": -1}, {**good, "max_tokens": 0}, {**good, "max_tokens": 10**12},
        {**good, "max_tokens": 1.5}, {**good, "temperature": -1}, {**good, "temperature": "hot"},
        {**good, "top_p": 0}, {**good, "top_k": -5}, {**good, "n": 3}, {**good, "seed": 2**70},
        {**good, "seed": -(2**70)}, {**good, "stop": ["x"] * 40}, {**good, "stop": 7},
        {**good, "logprobs": True, "top_logprobs": 99}, {**good, "top_logprobs": 3},
        {**good, "response_format": {"type": "xml"}}, {**good, "response_format": {"type": "json_schema"}},
        {**good, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}},
        {**good, "tools": "f"}, {**good, "tools": [{"type": "function"}]},
        {**good, "tools": [{"type": "function", "function": {"name": ""}}]}, {**good, "tools": [tool]},
        {**good, "tools": [{**tool, "function": {"name": "f", "parameters": _deep_schema(80)}}]},
        {**good, "tool_choice": "sometimes"},
        text_at(good, [{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!!"}}]),
        text_at(good, [{"type": "input_audio"}]), text_at(good, [{"text": "no type"}]),
    ]
    return "/v1/chat/completions", good, cases


def _ollama_cases() -> tuple[str, dict[str, Any], list[Any]]:
    good = {"model": "text-llama", "messages": [{"role": "user", "content": "hi"}], "stream": False,
            "options": {"num_predict": 8}}

    def text_at(body: dict[str, Any], value: Any) -> dict[str, Any]:
        return {**body, "messages": [{"role": "user", "content": value}]}

    cases = [
        *_common(good, text_at),
        {**good, "messages": "hi"}, {**good, "messages": [None]}, {**good, "messages": [{"content": "no role"}]},
        text_at(good, None),
        {**good, "options": "fast"}, {**good, "options": {"temperature": -3}}, {**good, "options": {"top_p": 7}},
        {**good, "options": {"num_predict": 10**12}}, {**good, "options": {"seed": 2**70}},
        {**good, "options": {"stop": ["x"] * 40}}, {**good, "options": {"repeat_penalty": 0}},
        {**good, "format": "xml"}, {**good, "format": 5}, {**good, "format": {"type": 5}},
        {**good, "tools": "f"}, {**good, "tools": [{"type": "function", "function": {"name": "f"}}]},
        {**good, "messages": [{"role": "user", "content": "look", "images": ["!!!not base64"]}]},
        {**good, "messages": [{"role": "user", "content": "look", "images": [5]}]},
    ]
    return "/api/chat", good, cases


def _anthropic_cases() -> tuple[str, dict[str, Any], list[Any]]:
    good = {"model": "text-llama", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}

    def text_at(body: dict[str, Any], value: Any) -> dict[str, Any]:
        return {**body, "messages": [{"role": "user", "content": value}]}

    def block(b: dict[str, Any]) -> dict[str, Any]:
        return text_at(good, [b])

    tool = {"name": "get_weather", "input_schema": {"type": "object"}}
    cases = [
        *_common(good, text_at),
        {**good, "messages": []}, {**good, "messages": "hi"}, {**good, "messages": [{}]},
        {**good, "messages": [{"role": "system", "content": "hi"}]}, {**good, "messages": [{"role": "tool"}]},
        {k: v for k, v in good.items() if k != "max_tokens"}, {**good, "max_tokens": -1},
        {**good, "max_tokens": 0}, {**good, "max_tokens": 10**12}, {**good, "max_tokens": "eight"},
        {**good, "temperature": 2}, {**good, "top_p": 0}, {**good, "top_k": -1}, text_at(good, None),
        {**good, "stop_sequences": "x"}, {**good, "stop_sequences": ["x"] * 100}, {**good, "system": 5},
        {**good, "system": [{"type": "image"}]}, {**good, "system": "\ud83d"},
        block({"type": "unknown"}), block({"type": "text"}), block({"type": "text", "text": 5}),
        block({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "!!!"}}),
        block({"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": "AAAA"}}),
        block({"type": "image", "source": {"type": "url", "url": "http://127.0.0.1:1/cat.png"}}),
        block({"type": "image", "source": {"type": "file", "file_id": "file_1"}}),
        block({"type": "image", "source": "AAAA"}), block({"type": "document", "source": {}}),
        block({"type": "tool_use", "id": "t", "name": "f", "input": {}}), block({"type": "tool_result"}),
        block({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {
            "type": "base64", "media_type": "image/png", "data": "AAAA"}}]}),
        {**good, "messages": [{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]},
        {**good, "tools": "f"}, {**good, "tools": [{"name": "f"}]}, {**good, "tools": [{**tool, "name": "a b"}]},
        {**good, "tools": [{**tool, "name": "x" * 100}]}, {**good, "tools": [{**tool, "input_schema": 5}]},
        {**good, "tools": [{**tool, "input_schema": {"type": "array"}}]}, {**good, "tools": [tool]},
        {**good, "tools": [{**tool, "input_schema": _deep_schema(80)}]},
        {**good, "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        {**good, "model": "text-llama", "tools": [tool], "tool_choice": {"type": "tool", "name": "nope"}},
        {**good, "tool_choice": {"type": "sometimes"}}, {**good, "tool_choice": "auto"},
    ]
    return "/v1/messages", good, cases


def _mutants(good: dict[str, Any], rng: random.Random, count: int) -> list[Any]:
    """``count`` copies of ``good`` with one hostile value put somewhere in each (a field or a new one)."""
    values: list[Any] = [None, True, -1, 0, 2**64, -(2**64), 1e308, -0.5, "", "x" * 50_000, "\ud800", "\udc00x",
                         "\x00", [], {}, [[[[[]]]]], {"a": {"b": {"c": {}}}}, ["x"] * 1000, "🔥" * 1000,
                         {"type": "image"}, {"role": "wizard"}, "<tool_call>", "\u202e", 3.14159, "NaN"]
    out = []
    for _ in range(count):
        body = copy.deepcopy(good)
        at: Any = body
        while True:  # walk down a random path into the body
            keys = list(at) if isinstance(at, dict) else list(range(len(at)))
            key = rng.choice([*keys, "extra"]) if isinstance(at, dict) else rng.choice(keys) if keys else None
            if key is None:
                break
            if isinstance(at[key] if key in keys else None, dict | list) and at[key] and rng.random() < 0.6:
                at = at[key]
                continue
            at[key] = rng.choice(values)
            break
        out.append(body)
    return out


def _send(client: httpx.Client, path: str, body: Any) -> httpx.Response:
    if isinstance(body, bytes):
        return client.post(path, content=body, headers={"content-type": "application/json"})
    return client.post(path, content=json.dumps(body, ensure_ascii=True).encode(),  # \ud800 stays an escape
                       headers={"content-type": "application/json"})


CHECKS = {"/v1/chat/completions": _openai_error, "/api/chat": _ollama_error, "/v1/messages": _anthropic_error}


def _answer(path: str, response: httpx.Response) -> str:
    body = response.json()
    if path == "/api/chat":
        return str(body["message"]["content"])
    if path == "/v1/messages":
        return str(body["content"][0]["text"])
    return str(body["choices"][0]["message"]["content"])


@pytest.mark.parametrize("cases", [_openai_cases, _ollama_cases, _anthropic_cases], ids=["openai", "ollama",
                                                                                       "anthropic"])
def test_hostile_requests_get_clean_4xx(cases: Callable[[], tuple[str, dict[str, Any], list[Any]]],
                                        served: Served) -> None:  # noqa: F811
    path, good, hostile = cases()
    check = CHECKS[path]
    wrong: list[str] = []  # every case that failed, to see them all at once
    with httpx.Client(base_url=served.base_url, timeout=120) as client:
        first = _send(client, path, good)
        assert first.status_code == 200 and _answer(path, first) == TEXT_ANSWER
        engine_pid = served.host.engine.pid
        for body in hostile:
            response = _send(client, path, body)
            if not 400 <= response.status_code < 500 or not check(response.json()) or len(response.text) > 2000:
                wrong.append(f"{repr(body)[:160]} -> {response.status_code} {response.text[:300]}")
        for body in _mutants(good, random.Random(f"hearth-fuzz-{path}"), MUTATIONS):
            response = _send(client, path, body)
            if response.status_code >= 500 or (response.status_code >= 400 and not check(response.json())):
                wrong.append(f"{repr(body)[:160]} -> {response.status_code} {response.text[:300]}")
        last = _send(client, path, good)  # still serving, with the same engine process
        assert last.status_code == 200 and _answer(path, last) == TEXT_ANSWER
    assert not wrong, "\n".join(wrong)
    assert served.host.engine.pid == engine_pid
