"""Many clients at once, clients that go away, a crashing engine, the window's turn, idle unload."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from core.engine import Completion
from core.server import ModelHost
from tests.core.test_server_support import COUNT_SCRIPT, Served, served, served_home, wait_for  # noqa: F401
from tests.fixtures.tool_model import TEXT_ANSWER


@pytest.fixture(autouse=True)
def hearth_home(served_home: Path) -> Path:  # noqa: F811
    return served_home


@pytest.fixture
def client(served: Served) -> openai.OpenAI:  # noqa: F811
    return openai.OpenAI(base_url=served.url, api_key="unused", max_retries=0, timeout=60)


@pytest.fixture
def spied(served: Served, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:  # noqa: F811
    """Every item the engine streams, as the server's request thread reads it (slowly: 20 ms each)."""
    engine = served.host.engine
    real = engine.stream_chat
    seen: list[Any] = []

    def slow(*args: Any, **kwargs: Any) -> Iterator[Any]:
        stream = real(*args, **kwargs)
        try:
            for item in stream:
                seen.append(item)
                time.sleep(0.02)
                yield item
        finally:
            stream.close()

    monkeypatch.setattr(engine, "stream_chat", slow)
    yield seen


def test_eight_clients_at_once_get_their_own_complete_answers(served: Served) -> None:  # noqa: F811
    def ask(i: int) -> str:
        c = openai.OpenAI(base_url=served.url, api_key="x", max_retries=0, timeout=120)
        stream = c.chat.completions.create(model="count-llama", messages=[{"role": "user", "content": f"go {i}"}],
                                           max_tokens=i + 1, stream=True, temperature=0)
        return "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    assert answers == ["".join(COUNT_SCRIPT[: i + 1]) for i in range(8)]


def test_a_disconnect_mid_stream_cancels_the_generation(client: openai.OpenAI, served: Served,  # noqa: F811
                                                        spied: list[Any]) -> None:
    stream = client.chat.completions.create(model="count-llama", messages=[{"role": "user", "content": "go"}],
                                            max_tokens=2000, stream=True)
    for n, _ in enumerate(stream):
        if n == 3:
            break
    stream.close()
    _assert_cancelled(served, spied)
    reply = client.chat.completions.create(model="text-llama", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == TEXT_ANSWER


def _assert_cancelled(served: Served, spied: list[Any]) -> None:  # noqa: F811
    """The answer stopped early: the engine is free long before 2000 tokens, and no full answer came."""
    wait_for(lambda: len(spied) > 0 and not served.host.busy, timeout=30)
    assert sum(getattr(i, "n_tokens", 0) for i in spied) < 1000
    assert not any(isinstance(i, Completion) and i.finish_reason != "cancelled" for i in spied)


def test_a_disconnect_while_waiting_for_a_plain_answer_cancels_it(served: Served,  # noqa: F811
                                                                   spied: list[Any]) -> None:
    body = {"model": "slow-llama", "messages": [{"role": "user", "content": "go"}], "max_tokens": 2000}
    httpx.post(f"{served.url}/chat/completions", json={**body, "max_tokens": 1}, timeout=60)  # loaded first
    spied.clear()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{served.url}/chat/completions", json=body, timeout=httpx.Timeout(10, read=0.8))
    _assert_cancelled(served, spied)


def test_a_request_waits_for_the_window_chat(client: openai.OpenAI, served: Served) -> None:  # noqa: F811
    result: dict[str, str] = {}

    def ask() -> None:
        reply = client.chat.completions.create(model="text-llama", messages=[{"role": "user", "content": "hi"}])
        result["text"] = reply.choices[0].message.content or ""

    with served.host.lock("window"):
        thread = threading.Thread(target=ask)
        thread.start()
        wait_for(lambda: served.host.lock.waiting == 1)
        time.sleep(0.3)
        assert "text" not in result and served.host.holder == "window"
    thread.join(30)
    assert result["text"] == TEXT_ANSWER


def test_an_engine_crash_is_a_500_and_the_next_request_is_served(
    client: openai.OpenAI, served: Served, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    engine = served.host.engine
    real = engine.stream_chat

    def crashing(*args: Any, **kwargs: Any) -> Iterator[Any]:
        stream = real(*args, **kwargs)
        yield next(stream)
        os.kill(engine.pid or 0, signal.SIGKILL)
        yield from stream

    monkeypatch.setattr(engine, "stream_chat", crashing)
    long = {"model": "slow-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1500}
    with pytest.raises(openai.InternalServerError, match="engine stopped"):
        client.chat.completions.create(**long)  # type: ignore[call-overload]
    with pytest.raises(openai.APIError, match="engine stopped"):
        list(client.chat.completions.create(**long, stream=True))  # type: ignore[call-overload]
    monkeypatch.setattr(engine, "stream_chat", real)
    reply = client.chat.completions.create(model="text-llama", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == TEXT_ANSWER


def test_idle_unload_only_of_what_the_server_loaded(served_home: Path) -> None:  # noqa: F811
    from core.library import Library

    host = ModelHost(idle_unload_s=0.3)
    try:
        with host.use("text-llama", "server: test") as engine:
            assert engine.status is not None
        wait_for(lambda: engine.status is None, timeout=10)
        with host.use("text-llama", "server: test"):
            pass
        with host.lock("window"):  # the window loads another model meanwhile: it stays
            engine.load(Library().get("count-llama").path)
        time.sleep(1.0)
        assert engine.status is not None and engine.status.path.endswith("count-llama.gguf")
    finally:
        host.close()


def test_only_the_named_models_are_served(served_home: Path) -> None:  # noqa: F811
    host = ModelHost(only=["text-llama"])
    try:
        assert [m.name for m in host.models()] == ["text-llama"]
        from core.server import ModelNotFound

        with pytest.raises(ModelNotFound):
            host.resolve("count-llama")
    finally:
        host.close()
