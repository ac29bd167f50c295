""""Teach it my documents" = tune + index: a documents job makes its Knowledge collection, names it in the
manifest, and the four-way comparison (base, + retrieval, tuned, tuned + retrieval) runs on the job's
held-out questions; ``hearth chat --lora`` turns the collection on.

Real parts: SQLite FTS5 collections, the real starter model trained in a child process (``hearth
finetune``), llama.cpp for the comparison and the chat.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from core.docs import DocsLibrary, search
from core.finetune.indexing import (
    MADE_BY,
    adapter_collection,
    base_collection_name,
    collection_name_for,
    index_documents,
    index_for_job,
    job_probes,
    knowledge_halves,
    probe_from_item,
)

ROOT = Path(__file__).resolve().parents[2]
HANDBOOK = ROOT / "tests" / "fixtures" / "handbook"


def hearth(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                            env=os.environ.copy())
    if check:
        assert result.returncode == 0, f"hearth {' '.join(args)}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "boats.md").write_text("# Boats\n\nThe ferry Morwen takes patients to the hospital at Carrick every "
                                     "Tuesday. Its skipper is Ines Hallam.\n" * 3, encoding="utf-8")
    (folder / "board.txt").write_text("The treasurer of the rowing society is Tomas Ruud. He keeps the accounts in "
                                      "a green ledger.\n" * 3, encoding="utf-8")
    return folder


def test_a_jobs_documents_become_a_searchable_collection_updated_by_the_next_run(notes: Path) -> None:
    first = index_documents("rowing+v2", [str(notes)])
    assert first.collection == "rowing-v2" and first.created and first.documents == 2 and first.chunks >= 2
    with DocsLibrary().open("rowing-v2") as collection:
        assert collection.meta(MADE_BY) == "rowing+v2"
        passages = search(collection, "who is the treasurer", 3)
    assert passages and "Tomas Ruud" in passages[0].text and passages[0].file.endswith("board.txt")

    # The same adapter name again (a new run after the old adapter was removed): the collection follows the files.
    (notes / "board.txt").unlink()
    (notes / "dues.txt").write_text("Members pay 40 crowns a year to the rowing society.\n", encoding="utf-8")
    again = index_documents("rowing+v2", [str(notes)])
    assert again.collection == "rowing-v2" and not again.created and again.documents == 2
    with DocsLibrary().open("rowing-v2") as collection:
        files = sorted(Path(f.path).name for f in collection.files())
    assert files == ["boats.md", "dues.txt"]


def test_a_collection_the_user_made_is_left_alone(notes: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine.txt"
    mine.write_text("My own collection of unrelated notes about the garden shed.\n", encoding="utf-8")
    with DocsLibrary().create("garden") as collection:
        collection.add([mine])
    assert collection_name_for("garden") == "garden-docs"
    made = index_documents("garden", [str(notes)])
    assert made.collection == "garden-docs"
    with DocsLibrary().open("garden") as collection:
        assert [Path(f.path).name for f in collection.files()] == ["mine.txt"]
    assert collection_name_for("garden") == "garden-docs"  # the adapter's own one, on its next run
    assert base_collection_name("x" * 100) == "x" * 64 and base_collection_name("a+b.c") == "a-b.c"


def test_a_failed_index_is_a_warning_and_makes_nothing(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    assert index_for_job("gone", [str(tmp_path / "no-such-folder")], events.append) is None
    kinds = [e["event"] for e in events]
    assert kinds == ["stage", "warning"] and "the adapter is saved" in events[-1]["message"]
    assert "hearth docs add gone" in events[-1]["message"]
    assert not DocsLibrary().exists("gone")


def test_manifest_items_become_probes_and_the_halves_read_in_a_users_words() -> None:
    restated = {"question": "The treasurer is ____.", "prefix": "The treasurer is ", "suffix": ".",
                "answer": "Tomas Ruud", "choices": ["Ines Hallam", "Tomas Ruud", "Carrick"], "answer_index": 1,
                "kind": "restated", "source": "board"}
    old_style = {"question": "The ferry Morwen sails every ____.", "answer": "Tuesday",
                 "choices": ["Monday", "Tuesday"], "kind": "date", "source": "boats"}
    probe = probe_from_item(restated)
    assert probe is not None and probe.answer == "Tomas Ruud" and probe.question == "The treasurer is ____."
    old = probe_from_item(old_style)
    assert old is not None and old.prefix == "The ferry Morwen sails every " and old.suffix == "."
    assert old.answer_index == 1
    assert probe_from_item({"question": "no blank", "answer": "x", "choices": ["x", "y"]}) is None

    knowledge = {"before": 7, "after": 20, "total": 24, "items": [old_style],
                 "restated": {"before": 5, "after": 15, "total": 24, "items": [restated]}}
    assert knowledge_halves(knowledge) == ("From your sentences: 20 of 24 (7 before) · "
                                           "Asked in other words: 15 of 24 (5 before)")
    assert knowledge_halves({"before": 7, "after": 20, "total": 24}) == "From your sentences: 20 of 24 (7 before)"
    assert knowledge_halves(None) == ""
    probes, half = job_probes({"metrics": {"knowledge": knowledge}})
    assert half == "restated" and [p.answer for p in probes] == ["Tomas Ruud"]
    probes, half = job_probes({"metrics": {"knowledge": {**knowledge, "restated": None}}})
    assert half == "sentences" and [p.answer for p in probes] == ["Tuesday"]


def test_no_index_makes_no_collection(tmp_path: Path, notes: Path) -> None:
    from tests.fixtures.tiny_hf import write_tiny_chat_llama

    base = write_tiny_chat_llama(tmp_path / "tiny-chat.gguf")
    hearth("import", str(base), "--name", "tiny-chat")
    fast = ("--max-steps", "2", "--seq-len", "64", "--batch", "2", "--lr", "0.005", "--rank", "4")
    out = hearth("finetune", "tiny-chat", "--docs", str(notes), *fast, "--out", "plain", "--no-index")
    assert "collection" not in out.stdout + out.stderr
    manifest = json.loads((Path(os.environ["HEARTH_HOME"]) / "data" / "adapters" / "plain" / "manifest.json")
                          .read_text(encoding="utf-8"))
    assert "collection" not in manifest and DocsLibrary().names() == []


@pytest.mark.slow
def test_a_documents_job_on_the_starter_model_indexes_compares_and_chats_with_both(starter_in_library: Path) -> None:
    model = str(starter_in_library)
    run = hearth("finetune", model, "--docs", str(HANDBOOK), "--max-steps", "2", "--out", "handbook")
    assert "indexed 6 documents" in run.stderr and "into the collection 'handbook'" in run.stderr
    # The four-way table and the one-sentence recommendation, after the result.
    table = run.stdout[run.stdout.index("SET-UP"):]
    for label in ("Base model", "Base + retrieval", "Tuned adapter (handbook)", "Tuned + retrieval"):
        assert label in table
    assert "For these documents" in table and f"hearth chat {model} --lora handbook" in table

    folder = Path(os.environ["HEARTH_HOME"]) / "data" / "adapters" / "handbook"
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["collection"] == "handbook"
    with DocsLibrary().open("handbook") as collection:
        assert collection.info().indexed == 6
        passages = search(collection, "Who is the treasurer of the cooperative?", 3)
    assert passages and any(Path(p.file).parent == HANDBOOK for p in passages)
    saved = json.loads((folder / "comparison.json").read_text(encoding="utf-8"))
    probes, _half = job_probes(manifest)
    assert [s["key"] for s in saved["setups"]] == ["base", "base+retrieval", "tuned", "tuned+retrieval"]
    assert all(s["total"] == len(probes) > 0 for s in saved["setups"])
    # Retrieval finds the facts the held-out questions ask about: the passages help the base model.
    by = {s["key"]: s["right"] for s in saved["setups"]}
    assert by["base+retrieval"] > by["base"], saved["setups"]

    # hearth chat with the adapter: its collection is on, said in one line; --no-docs turns it off.
    ask = ("chat", model, "--lora", "handbook", "-p", "Who is the treasurer of the cooperative?", "--max-tokens", "4",
           "--ctx", "2048", "--temperature", "0")
    said = hearth(*ask)
    assert "[documents: looking up the collection 'handbook' that handbook was taught with; --no-docs turns it off]" \
        in said.stderr
    assert "Sources:" in said.stdout
    answer = json.loads(hearth(*ask, "--json").stdout)
    assert answer["sources"] and Path(answer["sources"][0]["file"]).parent == HANDBOOK
    plain = json.loads(hearth(*ask, "--json", "--no-docs").stdout)
    assert "sources" not in plain

    shown = hearth("adapters", "show", "handbook").stdout
    assert "From your sentences:" in shown and "collection 'handbook'" in shown
    assert "Tuned + retrieval" in shown and saved["recommendation"] in shown
    assert adapter_collection(manifest) == "handbook"
