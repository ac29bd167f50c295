"""Shared set-up for the API server tests: a library of tiny scripted models and a running server."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.server import ApiServer, ModelHost, RequestRecord, ServerConfig
from tests.fixtures.scripted_model import write_scripted_chat_llama
from tests.fixtures.tiny_embed import write_tiny_bert
from tests.fixtures.tool_model import write_lora_for, write_text_model, write_tool_model

COUNT_SCRIPT = [" one", " two", " three", " four", " five", " six", " seven", " eight", " nine", " ten"]


@dataclass
class Served:
    home: Path
    host: ModelHost
    server: ApiServer
    records: list[RequestRecord] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def logged(self, path: str, timeout: float = 10.0) -> RequestRecord:
        """The newest request record for ``path``. The log is written once the answer has been sent, so a client
        can see its answer a moment before the record exists: wait for it."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.records if r.path == path]
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                raise AssertionError(f"no request to {path} was logged within {timeout} s: {self.records}")
            time.sleep(0.01)

    @property
    def base_url(self) -> str:
        return self.server.base_url


def build_library(home: Path) -> None:
    """Tiny models registered in the library (HEARTH_HOME must point at ``home``) and one adapter of text-llama."""
    models = home / "data" / "models"
    models.mkdir(parents=True, exist_ok=True)
    write_text_model(models / "text-llama.gguf")
    write_tool_model(models / "tool-llama.gguf")
    write_scripted_chat_llama(models / "count-llama.gguf", COUNT_SCRIPT)
    # Bigger, so that a long answer takes seconds (for the disconnect tests).
    write_scripted_chat_llama(models / "slow-llama.gguf", COUNT_SCRIPT, n_embd=512, n_layer=4)
    write_tiny_bert(models / "tiny-bert.gguf")
    from core.library import Library

    library = Library()
    for path in sorted(models.glob("*.gguf")):
        library.register(path, name=path.stem, source="copy")
    adapter = home / "data" / "adapters" / "shouty"
    adapter.mkdir(parents=True)
    write_lora_for(adapter / "shouty-lora-f32.gguf")
    manifest = {"base": {"name": "text-llama", "path": str(models / "text-llama.gguf")},
                "method": {"name": "lora"}, "created_at": time.time()}
    (adapter / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


@pytest.fixture(scope="module")
def served_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One HEARTH_HOME for a whole test module (the server outlives single tests)."""
    home = tmp_path_factory.mktemp("server-home")
    patch = pytest.MonkeyPatch()
    patch.setenv("HEARTH_HOME", str(home))
    patch.setenv("HF_HUB_CACHE", str(home / "hf-cache"))
    patch.setenv("HF_HUB_OFFLINE", "1")
    build_library(home)
    yield home
    patch.undo()


def start_server(home: Path, **config: object) -> Served:
    host = ModelHost()
    records: list[RequestRecord] = []
    server = ApiServer(ServerConfig(port=0, **config), host, on_request=records.append)  # type: ignore[arg-type]
    server.start()
    return Served(home, host, server, records)


@pytest.fixture(scope="module")
def served(served_home: Path) -> Iterator[Served]:
    s = start_server(served_home)
    yield s
    s.server.stop()
    s.host.close()


def wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def engine_pid(s: Served) -> int:
    pid = s.host.engine.pid
    assert pid is not None
    return pid


os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
