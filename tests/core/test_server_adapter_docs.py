"""``BASE+ADAPTER`` of a documents fine-tune looks up the adapter's collection, through the official ``openai``
client against a real server on loopback (tiny scripted models, a real SQLite FTS5 collection)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from core.finetune.indexing import index_documents
from tests.core.test_server_support import Served, start_server
from tests.fixtures.tool_model import write_lora_for, write_text_model

FACTS = ("The ferry Morwen takes patients to the hospital at Carrick every Tuesday. Its skipper is Ines Hallam. "
         "The harbour master keeps the tide tables in the boathouse.\n")


@pytest.fixture(scope="module")
def docs_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One HEARTH_HOME for the module (the server outlives single tests)."""
    home = tmp_path_factory.mktemp("server-docs-home")
    patch = pytest.MonkeyPatch()
    patch.setenv("HEARTH_HOME", str(home))
    patch.setenv("HF_HUB_OFFLINE", "1")
    yield home
    patch.undo()


@pytest.fixture(autouse=True)
def hearth_home(docs_home: Path) -> Path:  # this module's home is the server's
    return docs_home


@pytest.fixture(scope="module")
def served(docs_home: Path) -> Iterator[Served]:
    home = docs_home
    from core.library import Library

    models = home / "data" / "models"
    models.mkdir(parents=True)
    write_text_model(models / "text-llama.gguf")
    Library().register(models / "text-llama.gguf", name="text-llama", source="copy")
    docs = home / "ferry-notes"
    docs.mkdir()
    (docs / "ferry.md").write_text(FACTS * 8, encoding="utf-8")
    for name, collection in (("taught", "taught"), ("plain", None)):
        folder = home / "data" / "adapters" / name
        folder.mkdir(parents=True)
        write_lora_for(folder / f"{name}-lora-f32.gguf")
        manifest = {"base": {"name": "text-llama", "path": str(models / "text-llama.gguf")},
                    "method": {"name": "lora"}, "created_at": 1.0, **({"collection": collection} if collection else {})}
        (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert index_documents("taught", [str(docs)]).collection == "taught"
    s = start_server(home)
    yield s
    s.server.stop()
    s.host.close()


def test_base_plus_adapter_answers_with_the_adapters_collection(served: Served) -> None:
    client = openai.OpenAI(base_url=served.url, api_key="unused", max_retries=0, timeout=60)
    assert {"text-llama+taught", "text-llama+plain"} <= {m.id for m in client.models.list()}
    question = [{"role": "user", "content": "Which boat takes patients to the hospital?"}]
    taught = client.chat.completions.create(model="text-llama+taught", messages=question, temperature=0, max_tokens=4)
    plain = client.chat.completions.create(model="text-llama+plain", messages=question, temperature=0, max_tokens=4)
    assert taught.usage is not None and plain.usage is not None
    # The passages of the collection went before the question: many more prompt tokens than the question alone.
    assert taught.usage.prompt_tokens > plain.usage.prompt_tokens + 40, (taught.usage, plain.usage)
    streamed = client.chat.completions.create(model="text-llama+taught", messages=question, temperature=0,
                                              max_tokens=4, stream=True, stream_options={"include_usage": True})
    usage = [c.usage for c in streamed if c.usage is not None]
    assert usage and usage[-1].prompt_tokens == taught.usage.prompt_tokens
    # The base model alone is asked without the passages.
    base = client.chat.completions.create(model="text-llama", messages=question, temperature=0, max_tokens=4)
    assert base.usage is not None and base.usage.prompt_tokens == plain.usage.prompt_tokens
