"""``hearth docs`` and ``hearth chat --docs`` end to end (subprocesses, real files, tiny llama.cpp models)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from core.chats import ChatStore
from tests.core.test_docs_support import pdf_bytes, write_handbook
from tests.fixtures.scripted_model import write_scripted_chat_llama
from tests.fixtures.tiny_embed import write_tiny_bert

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = [" Descale", " it", " monthly", " [1]"]


def hearth(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())


def _one_line_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode != 0
    assert result.stderr.startswith("hearth: error: ") and text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_add_list_show_search_rm(tmp_path: Path) -> None:
    folder = write_handbook(tmp_path / "handbook")
    (folder / "empty.txt").write_text("")
    (folder / "manual.pdf").write_bytes(pdf_bytes(["Intro page.", "The fire alarm is tested on Wednesdays."]))

    added = hearth("docs", "add", "office", str(folder))
    assert added.returncode == 0, added.stderr
    assert "13 added, 1 skipped" in added.stdout and f"skipped {folder / 'empty.txt'}: is empty" in added.stdout

    listed = json.loads(hearth("docs", "list", "--json").stdout)
    assert [(c["name"], c["indexed"], c["skipped"]) for c in listed] == [("office", 13, 1)]
    table = hearth("docs", "list").stdout
    assert table.splitlines()[0].split() == ["NAME", "FILES", "INDEXED", "SKIPPED", "CHUNKS", "VECTORS", "UPDATED"]

    shown = json.loads(hearth("docs", "show", "office", "--json").stdout)
    statuses = {Path(f["path"]).name: f["status"] for f in shown["files_detail"]}
    assert statuses["empty.txt"] == "skipped" and statuses["manual.pdf"] == "indexed"
    assert "is empty" in hearth("docs", "show", "office").stdout

    found = json.loads(hearth("docs", "search", "office", "when is the fire alarm tested", "-k", "2", "--json").stdout)
    assert len(found) == 2 and Path(found[0]["file"]).name == "manual.pdf"
    assert found[0]["location"].startswith("page 2") and "Wednesdays" in found[0]["text"]
    assert {"text", "file", "location", "score", "sources"} <= set(found[0])
    plain = hearth("docs", "search", "office", "fire alarm")
    assert plain.stdout.startswith(f"[1] {folder / 'manual.pdf'}, page 2") and "bm25 #1" in plain.stdout

    (folder / "kettle.md").write_text("# Kettle\nThe kettle was replaced by a water boiler in June.\n")
    refreshed = hearth("docs", "search", "office", "water boiler", "-k", "1")  # re-indexed when opened
    assert "[office: 1 re-indexed" in refreshed.stderr and refreshed.stdout.startswith(f"[1] {folder / 'kettle.md'}")

    assert "Removed 1 file" in hearth("docs", "rm", "office", str(folder / "kettle.md")).stdout
    assert hearth("docs", "rm", "office").returncode == 0
    assert json.loads(hearth("docs", "list", "--json").stdout) == []


def test_user_errors_are_one_line(tmp_path: Path) -> None:
    _one_line_error(hearth("docs", "search", "nothing", "x"), "No collection 'nothing'")
    _one_line_error(hearth("docs", "add", "kb", str(tmp_path / "missing")), "does not exist")
    assert hearth("docs", "list", "--json").stdout.strip() == "[]"  # a failed first add keeps no collection
    _one_line_error(hearth("docs", "add", "../kb", str(tmp_path)), "cannot name a collection")
    _one_line_error(hearth("docs", "rm", "nothing"), "No collection 'nothing'")


def test_search_with_an_embedding_model_and_another_models_vectors(tmp_path: Path) -> None:
    folder = write_handbook(tmp_path / "handbook")
    bert = write_tiny_bert(tmp_path / "tiny-bert.gguf", n_ctx=1024)
    other = write_tiny_bert(tmp_path / "other-bert.gguf", n_ctx=1024, n_embd=16)
    assert hearth("docs", "add", "kb", str(folder)).returncode == 0
    hybrid = hearth("docs", "search", "kb", "kettle descaled", "--embed", str(bert), "--json")
    assert hybrid.returncode == 0, hybrid.stderr
    passages = json.loads(hybrid.stdout)
    assert Path(passages[0]["file"]).name == "kettle.md" and set(passages[0]["sources"]) == {"bm25", "vector"}
    info = json.loads(hearth("docs", "show", "kb", "--json").stdout)
    assert (info["vectors"], info["embed_model"], info["embed_dim"]) == (12, "tiny-bert", 32)

    _one_line_error(hearth("docs", "search", "kb", "kettle", "--embed", str(other)),
                    "re-embed the collection with 'hearth docs embed kb other-bert --replace'")
    embedded = hearth("docs", "embed", "kb", str(other), "--replace")
    assert "Embedded 12 chunks of 'kb' with other-bert (16-long vectors)" in embedded.stdout, embedded.stderr
    assert hearth("docs", "search", "kb", "kettle", "--embed", str(other), "--mode", "vector").returncode == 0


def test_chat_with_docs_puts_numbered_passages_in_the_prompt_and_lists_the_sources(tmp_path: Path) -> None:
    folder = write_handbook(tmp_path / "handbook")
    model = write_scripted_chat_llama(tmp_path / "scripted.gguf", SCRIPT)
    assert hearth("docs", "add", "office", str(folder)).returncode == 0

    chat = hearth("chat", str(model), "--docs", "office", "--docs-k", "2", "-p", "How often is the office kettle descaled?",
                  "--max-tokens", str(len(SCRIPT)), "--temperature", "0")
    assert chat.returncode == 0, chat.stderr
    answer, _, sources = chat.stdout.partition("Sources:")
    assert answer.strip() == "Descale it monthly [1]"
    lines = sources.strip().splitlines()
    assert len(lines) == 2 and lines[0] == f"[1] {folder / 'kettle.md'}, § Kitchen kettle, lines 1–2"

    (conversation,) = ChatStore().list()
    assert conversation.title == "How often is the office kettle descaled?"
    user = ChatStore().messages(conversation.id)[0].content
    assert "Cite the passages you use like [1]" in user and "[1] kettle.md, § Kitchen kettle, lines 1–2\n" in user
    assert user.endswith("Question: How often is the office kettle descaled?") and "[2] " in user

    as_json = hearth("chat", str(model), "--docs", "office", "-p", "kettle limescale", "--json",
                     "--max-tokens", str(len(SCRIPT)), "--docs-budget", "100000", "--ctx", "512")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["sources"][0]["n"] == 1 and Path(data["sources"][0]["file"]).name == "kettle.md"
    assert any("more than the 512-token context" in note for note in data["notes"])
    assert data["text"].strip() == "Descale it monthly [1]"

    _one_line_error(hearth("chat", str(model), "--docs", "nothing", "-p", "hi"), "No collection 'nothing'")


def test_chat_with_an_embedded_collection_ranks_by_keywords_and_vectors(tmp_path: Path) -> None:
    from core.library import Library

    folder = write_handbook(tmp_path / "handbook")
    model = write_scripted_chat_llama(tmp_path / "scripted.gguf", SCRIPT)
    bert = Library().import_file(write_tiny_bert(tmp_path / "tiny-bert.gguf", n_ctx=1024), mode="copy")
    assert hearth("docs", "add", "kb", str(folder), "--embed", bert.name).returncode == 0
    ask = ("chat", str(model), "--docs", "kb", "-p", "kettle descaled", "--json", "--max-tokens", "2")
    data = json.loads(hearth(*ask).stdout)
    assert set(data["sources"][0]["sources"]) == {"bm25", "vector"}  # hybrid: the collection's own model

    Library().remove(bert.name)
    gone = hearth("chat", str(model), "--docs", "kb", "-p", "kettle descaled", "--max-tokens", "2")
    assert gone.returncode == 0 and "searching by keywords only: the embedding model tiny-bert" in gone.stderr
