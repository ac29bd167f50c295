"""No network: searching and listing fail within seconds with one clear line, without the library's retry lines.

The Hub endpoint points at a loopback port with nothing listening (connection refused) or at a name
that cannot resolve (``.invalid`` is reserved for that, RFC 6761 §6.4). A Hub that answers 503 once
is still retried (the library's backoff), silently.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from core.errors import OfflineError

ROOT = Path(__file__).resolve().parents[2]
RETRY_WORDS = ("Retrying in", "thrown while requesting", "Retry ")


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there once the socket is closed


ENDPOINTS = {"refused": closed_port_url, "unresolvable": lambda: "http://hearth-offline.invalid"}


def hearth(endpoint: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                            env=env, timeout=120)
    return result, time.monotonic() - started


@pytest.mark.parametrize("kind", list(ENDPOINTS))
@pytest.mark.parametrize("command", [["search", "qwen"], ["files", "someone/Some-Model-GGUF"]])
def test_no_network_fails_fast_with_one_line(kind: str, command: list[str]) -> None:
    endpoint = ENDPOINTS[kind]()
    result, seconds = hearth(endpoint, *command)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hearth: error: Cannot ") and f"the Hub at {endpoint} is unreachable" in lines[0]
    assert "models already in the library still work" in lines[0]
    assert not any(word in result.stderr for word in RETRY_WORDS)
    assert seconds < 3.0, f"took {seconds:.1f} s"
    assert result.stdout == ""


@pytest.mark.parametrize("kind", list(ENDPOINTS))
def test_in_process_search_raises_offline_quickly(kind: str, monkeypatch: pytest.MonkeyPatch,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    from core.hub import search_models

    monkeypatch.setenv("HF_ENDPOINT", ENDPOINTS[kind]())
    started = time.monotonic()
    with pytest.raises(OfflineError, match="unreachable"):
        search_models("qwen")
    assert time.monotonic() - started < 2.0
    assert not any(word in capfd.readouterr().err for word in RETRY_WORDS)


class _FlakyHub(BaseHTTPRequestHandler):
    """``/api/models`` answers 503 to the first request, then an empty result."""

    requests: list[float]
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.requests.append(time.monotonic())
        status, body = (503, b'{"error": "busy"}') if len(self.requests) == 1 else (200, b"[]")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def flaky_hub() -> Iterator[tuple[str, list[float]]]:
    requests: list[float] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_FlakyHub,), {"requests": requests}))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def test_a_busy_hub_is_still_retried_but_quietly(flaky_hub: tuple[str, list[float]]) -> None:
    url, requests = flaky_hub
    result, _ = hearth(url, "search", "qwen", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert len(requests) == 2 and requests[1] - requests[0] >= 0.9  # the library's backoff: 1 s first
    assert not any(word in result.stderr for word in RETRY_WORDS), result.stderr


def test_the_wrapped_client_passes_other_calls_through() -> None:
    """Outside ``hub_errors`` the client behaves as huggingface_hub's own: the library's error, no retry of ours."""
    import httpx2
    from huggingface_hub.utils import get_session

    from core.hub.client import CONNECT_RETRY_DELAY, api

    api()  # installs the wrapped client
    url = closed_port_url()
    started = time.monotonic()
    with pytest.raises(httpx2.ConnectError):
        get_session().get(url + "/api/models")
    assert time.monotonic() - started < CONNECT_RETRY_DELAY  # no quick retry outside hub_errors either
