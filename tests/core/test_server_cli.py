"""``hearth serve`` in a terminal, and the real starter model served to both clients (slow)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.core.test_server_support import served_home, start_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


def test_hearth_serve_prints_the_url_serves_the_named_models_and_stops_on_ctrl_c(served_home: Path) -> None:  # noqa: F811
    env = {**os.environ, "HEARTH_HOME": str(served_home), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "core", "serve", "--port", "0", "--model", "text-llama"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"Serving at (http://127\.0\.0\.1:\d+)", line)
        assert match, line + (proc.stderr.read() if proc.stderr else "")
        base = match.group(1)
        assert [m["id"] for m in httpx.get(f"{base}/v1/models").json()["data"]] == ["text-llama"]
        reply = httpx.post(f"{base}/v1/chat/completions", timeout=60,
                           json={"model": "text-llama", "messages": [{"role": "user", "content": "hi"}]})
        assert reply.json()["choices"][0]["message"]["content"] == "Hi from Hearth!"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert proc.stderr is not None and "/v1/chat/completions text-llama 200" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_hearth_serve_refuses_the_network_without_a_key(served_home: Path) -> None:  # noqa: F811
    env = {**os.environ, "HEARTH_HOME": str(served_home)}
    done = subprocess.run([sys.executable, "-m", "core", "serve", "--host", "0.0.0.0", "--port", "0"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "without an API key" in done.stderr


@pytest.mark.slow
def test_the_starter_model_through_both_clients(starter_in_library: Path, hearth_home: Path) -> None:
    from core.library import Library

    Library().register(starter_in_library, name="starter", source="starter")
    s = start_server(hearth_home)
    try:
        client = openai.OpenAI(base_url=s.url, api_key="x", max_retries=0, timeout=120)
        reply = client.chat.completions.create(model="starter", temperature=0, max_tokens=24,
                                               messages=[{"role": "user", "content": "Name a colour."}])
        assert (reply.choices[0].message.content or "").strip() and reply.usage is not None
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="starter", temperature=0, max_tokens=24, stream=True,
            messages=[{"role": "user", "content": "Name a colour."}]) if c.choices)
        assert text == reply.choices[0].message.content
        schema = {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 20}},
                  "required": ["colour"]}
        shaped = client.chat.completions.create(
            model="starter", max_tokens=60, messages=[{"role": "user", "content": "Name a colour as JSON."}],
            response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}})
        assert isinstance(json.loads(shaped.choices[0].message.content or "")["colour"], str)
        answer = ollama.Client(host=s.base_url).chat(model="starter", options={"temperature": 0, "num_predict": 24},
                                                     messages=[{"role": "user", "content": "Name a colour."}])
        assert (answer.message.content or "").strip() and answer.done_reason in ("stop", "length")
    finally:
        s.server.stop()
        s.host.close()
