"""Bad input, security and start-up failures of the API server: 4xx bodies that say what to fix."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from core.server import ApiServer, ModelHost, RequestRecord, ServerConfig, ServerStartError
from tests.core.test_server_support import Served, served, served_home, start_server  # noqa: F401
from tests.fixtures.tool_model import TEXT_ANSWER


@pytest.fixture(autouse=True)
def hearth_home(served_home: Path) -> Path:  # noqa: F811
    return served_home


@pytest.fixture
def client(served: Served) -> openai.OpenAI:  # noqa: F811
    return openai.OpenAI(base_url=served.url, api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def secured(served_home: Path) -> Iterator[Served]:  # noqa: F811
    s = start_server(served_home, api_key="s3cret-key", cors_origins=["http://app.example"])
    yield s
    s.server.stop()
    s.host.close()


def _error(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return dict(body["error"])


def test_unknown_model_is_not_found(client: openai.OpenAI, served: Served) -> None:  # noqa: F811
    served.records.clear()
    with pytest.raises(openai.NotFoundError, match=r"does not exist.*text-llama"):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    logged = served.logged("/v1/chat/completions")
    assert (logged.status, logged.model) == (404, "no-such-model")  # the log says what the app asked for
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="/etc/passwd", messages=[{"role": "user", "content": "hi"}])


def test_malformed_json_and_wrong_types_are_400(served: Served) -> None:  # noqa: F811
    url = f"{served.url}/chat/completions"
    bad = httpx.post(url, content=b'{"model": "text-llama", "messages": [', headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "not valid JSON" in str(_error(bad)["message"])
    wrong = httpx.post(url, json={"model": "text-llama", "messages": "hi"})
    err = _error(wrong)
    assert wrong.status_code == 400 and err["param"] == "messages" and err["type"] == "invalid_request_error"
    missing = httpx.post(url, json={"messages": [{"role": "user", "content": "hi"}]})
    assert missing.status_code == 400 and _error(missing)["param"] == "model"
    role = httpx.post(url, json={"model": "text-llama", "messages": [{"role": "wizard", "content": "hi"}]})
    assert role.status_code == 400 and _error(role)["param"] == "messages.0.role"
    temp = httpx.post(url, json={"model": "text-llama", "messages": [{"role": "user", "content": "x"}],
                                 "temperature": "hot"})
    assert temp.status_code == 400 and _error(temp)["param"] == "temperature"
    array = httpx.post(url, json=[1, 2])
    assert array.status_code == 400
    nothing = httpx.get(f"{served.url}/nothing-here")
    assert nothing.status_code == 404 and "/v1/nothing-here" in str(_error(nothing)["message"])


def test_limits(client: openai.OpenAI, served: Served) -> None:  # noqa: F811
    with pytest.raises(openai.BadRequestError, match="more than the model's 2048-token context") as caught:
        client.chat.completions.create(model="text-llama", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=100000)
    assert caught.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError, match="context") as overflow:
        client.chat.completions.create(model="text-llama", messages=[{"role": "user", "content": "hello " * 3000}])
    assert overflow.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="n"):
        client.chat.completions.create(model="text-llama", messages=[{"role": "user", "content": "hi"}], n=2)
    big = httpx.post(f"{served.url}/chat/completions", content=b"x" * (33 * 2**20),
                     headers={"content-type": "application/json"})
    assert big.status_code == 413 and "larger than 32 MB" in str(_error(big)["message"])
    # The server keeps serving after all of that.
    reply = client.chat.completions.create(model="text-llama", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == TEXT_ANSWER


def test_ollama_errors_use_ollama_shape(served: Served) -> None:  # noqa: F811
    response = httpx.post(f"{served.base_url}/api/chat", json={"model": "nope", "messages": []})
    assert response.status_code == 404 and isinstance(response.json()["error"], str)


def test_host_header_must_be_local(served: Served) -> None:  # noqa: F811
    response = httpx.get(f"{served.url}/models", headers={"Host": "evil.example:8765"})
    assert response.status_code == 403 and "evil.example" in str(_error(response)["message"])
    assert httpx.get(f"{served.url}/models", headers={"Host": "localhost:1"}).status_code == 200


def test_api_key_required_when_set(secured: Served) -> None:
    wrong = openai.OpenAI(base_url=secured.url, api_key="wrong", max_retries=0)
    secured.records.clear()
    with pytest.raises(openai.AuthenticationError, match="API key"):
        wrong.models.list()
    assert httpx.get(f"{secured.base_url}/api/tags").status_code == 401
    assert secured.logged("/api/tags").status == 401
    right = openai.OpenAI(base_url=secured.url, api_key="s3cret-key", max_retries=0)
    assert "text-llama" in {m.id for m in right.models.list()}


def test_cors_allow_list(secured: Served, served: Served) -> None:  # noqa: F811
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    allowed = httpx.options(f"{secured.url}/chat/completions", headers=preflight)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "http://app.example"
    other = httpx.options(f"{secured.url}/chat/completions", headers={**preflight, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    off = httpx.get(f"{served.url}/models", headers={"Origin": "http://app.example"})
    assert "access-control-allow-origin" not in off.headers  # CORS is off by default


def test_network_listening_needs_a_key(served: Served) -> None:  # noqa: F811
    with pytest.raises(ServerStartError, match="without an API key"):
        ApiServer(ServerConfig(host="0.0.0.0", port=0), served.host).start()


def test_port_in_use_says_so(served: Served) -> None:  # noqa: F811
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(ServerStartError, match=f"Port {port} is in use by another program"):
            ApiServer(ServerConfig(port=port), served.host).start()


def test_start_stop_and_urls(served_home: Path) -> None:  # noqa: F811
    host = ModelHost()
    server = ApiServer(ServerConfig(port=0), host)
    server.start()
    try:
        assert server.running and server.url == f"http://127.0.0.1:{server.port}/v1"
        assert server.base_url == f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{server.url}/models").status_code == 200
    finally:
        server.stop()
        host.close()
    assert not server.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.base_url}/api/version")


def test_lone_surrogates_are_400_in_every_api(served: Served) -> None:  # noqa: F811
    """A "\\ud800" escape is valid JSON syntax but no Unicode text: refused where the body is parsed (it used to
    reach the engine and come back as a 500)."""
    cases = {
        f"{served.url}/chat/completions": {"model": "text-llama", "messages": [{"role": "user", "content": "a\ud800"}]},
        f"{served.base_url}/api/chat": {"model": "text-llama", "stream": False,
                                        "messages": [{"role": "user", "content": "a\ud800"}]},
        f"{served.base_url}/v1/messages": {"model": "text-llama", "max_tokens": 8,
                                           "messages": [{"role": "user", "content": "a\ud800"}]},
    }
    for url, body in cases.items():
        raw = json.dumps(body).encode()  # ensure_ascii: the surrogate travels as the escape \ud800
        assert b"\\ud800" in raw
        response = httpx.post(url, content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 400, (url, response.text)
        error = response.json()["error"]  # each API's shape: {"error": text} or {"error": {"message": ...}}
        message = error if isinstance(error, str) else error["message"]
        assert "lone UTF-16 surrogate (\\ud800)" in message and "'messages.0.content'" in message
    # In a model name, a key, a raw UTF-8-encoded surrogate; a proper pair (an emoji) is fine.
    url = f"{served.url}/chat/completions"
    for raw in (b'{"model": "\\udfff", "messages": []}', b'{"model": "text-llama", "\\ud800": 1, "messages": []}'):
        assert httpx.post(url, content=raw, headers={"content-type": "application/json"}).status_code == 400
    bad_bytes = httpx.post(url, content=b'{"model": "\xed\xa0\x80"}', headers={"content-type": "application/json"})
    assert bad_bytes.status_code == 400 and "not valid UTF-8" in _error(bad_bytes)["message"]  # type: ignore[operator]
    pair = httpx.post(url, content=json.dumps({"model": "text-llama", "messages": [
        {"role": "user", "content": "\U0001f525 hi"}]}).encode(), headers={"content-type": "application/json"})
    assert pair.status_code == 200 and pair.json()["choices"][0]["message"]["content"] == TEXT_ANSWER


def test_client_chosen_fields_are_cut_in_the_log(served: Served) -> None:  # noqa: F811
    served.records.clear()
    huge = "m" * 100_000
    response = httpx.post(f"{served.url}/chat/completions",
                          json={"model": huge, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 404 and len(response.text) < 2000  # the error does not echo it whole
    record = served.logged("/v1/chat/completions")
    assert record.model is not None and len(record.model) == 200 and record.model.endswith("…")
    long_path = "/v1/" + "p" * 5000
    assert httpx.get(f"{served.base_url}{long_path}").status_code == 404
    logged = served.logged(long_path[:199] + "…")
    assert len(logged.path) == 200 and record.method == "POST"
    direct = RequestRecord(time=0, client="c" * 300, method="M" * 300, path="/", model="x" * 100_000, status=200,
                           prompt_tokens=0, completion_tokens=0, seconds=0.1)
    assert {len(direct.client), len(direct.method), len(direct.model or "")} == {200}
