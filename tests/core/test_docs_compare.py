"""Which helps here? ``compare_collection`` and ``hearth docs compare`` on tiny llama.cpp models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from core.docs import DocsLibrary
from core.docs.compare import Comparison, SetupScore, compare_collection, probe_query, recommendation
from core.engine import Engine
from core.errors import CancelledError, HearthError, NotFoundError
from tests.fixtures.tiny_hf import write_tiny_chat_llama

ROOT = Path(__file__).resolve().parents[2]
DOCS = {
    "harbour.md": "# Harbour notes\n\nThe harbour office was opened in 1932 by Edwin Marlow. The ferry to Tallis "
                  "Island leaves at 7 each morning. The harbour fee for a small boat is 14 pounds a week.\n",
    "lighthouse.txt": "The lighthouse keeper Agnes Pellow lit the lamp every evening until 1961. The museum keeps "
                      "38 old charts in the west room. Visitors must sign the register before climbing the tower.\n",
}


class RecordingEngine(Engine):
    """A real engine that remembers each scored context and the adapters active for it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[tuple[str, float]]]] = []

    def score(self, context: str, continuations: Sequence[str]) -> list[dict[str, Any]]:
        self.calls.append((context, list(self.status.loras) if self.status else []))
        return super().score(context, continuations)


@pytest.fixture
def harbour(tmp_path: Path) -> str:
    folder = tmp_path / "harbour-docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    with DocsLibrary().create("harbour") as collection:
        collection.add([folder])
    return "harbour"


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_chat_llama(tmp_path_factory.mktemp("compare") / "tiny-chat.gguf")


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny HF llama, its GGUF and a random-B LoRA exported as a GGUF LoRA (torch, peft)."""
    from core.gguf_export.lora import export_lora_gguf
    from tests.fixtures.tiny_hf_export import build_tiny_hf_llama, make_lora

    root = tmp_path_factory.mktemp("compare-lora")
    hf = build_tiny_hf_llama(root)
    adapter = make_lora(hf.folder, root / "lora")
    lora = export_lora_gguf(adapter, root / "notes-lora-f32.gguf", base=hf.gguf).path
    return {"model": hf.gguf, "lora": lora}


def install_adapter(home: Path, name: str, lora: Path, base: Path) -> Path:
    """An adapter folder as training leaves it, with its GGUF LoRA already exported."""
    folder = home / "data" / "adapters" / name
    folder.mkdir(parents=True)
    (folder / f"{name}-lora-f32.gguf").write_bytes(lora.read_bytes())
    manifest = {"format": 1, "kind": "adapter", "created_at": time.time(), "method": {"name": "lora"},
                "base": {"name": base.stem, "path": str(base)}}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


# -- the sentence ----------------------------------------------------------------------------------


def _setups(base: int, retrieval: int, tuned: int | None = None, both: int | None = None, total: int = 12
            ) -> list[SetupScore]:
    out = [SetupScore("Base model", "base", base, total), SetupScore("Base + retrieval", "base+retrieval",
                                                                      retrieval, total)]
    if tuned is not None:
        out += [SetupScore("Tuned", "tuned", tuned, total),
                SetupScore("Tuned + retrieval", "tuned+retrieval", both if both is not None else tuned, total)]
    return out


@pytest.mark.parametrize(("scores", "expected"), [
    ((3, 11, 7, 11), "retrieval answers 11 of 12, fine-tuning 7 of 12: use retrieval, or both for the tone"),
    ((3, 11, 7, 9), "use retrieval, on its own (both together answer 9)"),
    ((3, 6, 10, 10), "fine-tuning answers 10 of 12, retrieval 6 of 12: use the tuned adapter, or both"),
    ((3, 6, 10, 8), "use the tuned adapter, on its own (with retrieval it answers 8)"),
    ((3, 8, 9, 12), "both 12 of 12: use both"),
    ((3, 8, 8, 8), "retrieval and fine-tuning each answer 8 of 12 (both 8 of 12): use retrieval"),
    ((5, 5, 5, 5), "and the model alone answers as many (5 of 12): neither helps"),
    ((6, 4, 5, 3), "fewer than the model alone (6 of 12): neither helps"),
])
def test_the_recommendation_covers_every_ordering(scores: tuple[int, int, int, int], expected: str) -> None:
    sentence = recommendation(_setups(*scores))
    assert expected in sentence, sentence
    assert sentence.startswith("For these documents") and sentence.endswith(".") and sentence.count(". ") == 0


@pytest.mark.parametrize(("base", "retrieval", "expected"), [
    (4, 9, "retrieval answers 9 of 12, the model alone 4 of 12: use retrieval"),
    (4, 4, "the same as the model alone: retrieval does not help"),
    (6, 4, "fewer than the model alone (6 of 12)"),
])
def test_without_an_adapter_the_sentence_compares_retrieval_with_the_model(base: int, retrieval: int,
                                                                           expected: str) -> None:
    sentence = recommendation(_setups(base, retrieval))
    assert expected in sentence and "fine-tune an adapter" in sentence


def test_no_questions_say_so() -> None:
    assert "No questions" in recommendation(_setups(0, 0, total=0))


# -- end to end on tiny models ---------------------------------------------------------------------


def test_base_and_retrieval_are_scored_and_the_passages_are_in_the_context(harbour: str, tiny_chat: Path) -> None:
    seen: list[tuple[str, float]] = []
    with RecordingEngine() as engine:
        result = compare_collection(harbour, str(tiny_chat), engine=engine,
                                    progress=lambda m, f: seen.append((m, f)))
        assert engine.status is not None and engine.status.loras == []
    assert [s.key for s in result.setups] == ["base", "base+retrieval"] and result.adapter is None
    total = len(result.items)
    assert total == 5 and all(s.total == total and 0 <= s.right <= total for s in result.setups)
    for setup in result.setups:
        assert setup.right == sum(setup.key in item.right for item in result.items)
    # Each probe was scored twice: on its own, then after the passages found by its sentence.
    assert len(engine.calls) == 2 * total
    plain, retrieved = engine.calls[:total], engine.calls[total:]
    for item, (bare, (with_passages, _)) in zip(result.items, zip(plain, retrieved, strict=True), strict=True):
        assert item.passages and "____" in item.stem and item.answer in item.choices
        assert with_passages.endswith(bare[0]) and with_passages != bare[0]
        assert item.stem.split("____")[0].strip() in item.passages[0].text  # its own sentence was found
        assert item.passages[0].text.split()[0] in with_passages
    assert seen[-1] == ("done", 1.0) and [f for _, f in seen] == sorted(f for _, f in seen)
    data = json.loads(json.dumps(result.to_dict()))
    assert set(data) == {"collection", "base", "adapter", "setups", "items", "recommendation", "notes"}
    assert data["setups"][0] == {"label": "Base model", "key": "base", "right": result.setups[0].right,
                                 "total": total, "percent": round(result.setups[0].percent, 1)}
    assert set(data["items"][0]) == {"stem", "choices", "answer", "source", "right", "picked", "passages"}
    assert result.recommendation == recommendation(result.setups)


def test_the_four_set_ups_with_a_tuned_adapter(harbour: str, tiny_lora: dict[str, Path], hearth_home: Path) -> None:
    install_adapter(hearth_home, "notes", tiny_lora["lora"], tiny_lora["model"])
    with RecordingEngine() as engine:
        result = compare_collection(harbour, str(tiny_lora["model"]), adapter="notes", engine=engine)
        assert engine.status is not None and engine.status.loras == []  # taken off again
    assert [s.key for s in result.setups] == ["base", "base+retrieval", "tuned", "tuned+retrieval"]
    assert result.setups[2].label == "Tuned adapter (notes)" and result.adapter == "notes"
    total = len(result.items)
    active = [bool(loras) for _, loras in engine.calls]
    assert active == [False] * (2 * total) + [True] * (2 * total)  # the LoRA on for the tuned set-ups only
    assert engine.calls[0][0] == engine.calls[2 * total][0]  # the same probe text, with and without it
    assert engine.calls[total][0] == engine.calls[3 * total][0]
    assert result.recommendation == recommendation(result.setups)


def test_an_adapter_of_another_base_is_refused(harbour: str, tiny_chat: Path, tmp_path: Path,
                                               hearth_home: Path) -> None:
    other = write_tiny_chat_llama(tmp_path / "other-model.gguf", seed=3)
    install_adapter(hearth_home, "elsewhere", other, other)  # any file: it is refused before use
    with pytest.raises(HearthError, match="'elsewhere' was trained on other-model, not tiny-chat"):
        compare_collection(harbour, str(tiny_chat), adapter="elsewhere")
    with pytest.raises(NotFoundError, match="No adapter called 'nope'"):
        compare_collection(harbour, str(tiny_chat), adapter="nope")
    with pytest.raises(NotFoundError, match="No collection 'missing'"):
        compare_collection("missing", str(tiny_chat))


def test_cancel_stops_it_and_leaves_the_engine_as_it_was(harbour: str, tiny_chat: Path) -> None:
    cancel = threading.Event()

    def progress(message: str, _fraction: float) -> None:
        if "question 2" in message:
            cancel.set()

    with RecordingEngine() as engine:
        with pytest.raises(CancelledError, match="cancelled"):
            compare_collection(harbour, str(tiny_chat), engine=engine, progress=progress, cancel=cancel)
        assert len(engine.calls) == 1 and engine.status is not None and engine.alive


def test_the_search_is_the_sentence_without_its_blank(harbour: str) -> None:
    from core.docs.compare import build_collection_probes

    with DocsLibrary().open(harbour) as collection:
        probes = build_collection_probes(collection)
    assert probes and all("____" not in probe_query(p) and p.prefix.strip() in probe_query(p) for p in probes)


# -- the command line ------------------------------------------------------------------------------


def hearth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=240, env=os.environ.copy())


def _one_line_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode != 0
    assert result.stderr.startswith("hearth: error: ") and text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_cli_prints_the_table_and_the_json(harbour: str, tiny_chat: Path) -> None:
    plain = hearth("docs", "compare", harbour, "--model", str(tiny_chat))
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[0].split() == ["SET-UP", "RIGHT", "%"] and lines[2].startswith("Base model")
    assert lines[3].startswith("Base + retrieval") and "/5" in lines[3]
    assert lines[-1].startswith("For these documents retrieval answers")
    data = json.loads(hearth("docs", "compare", harbour, "--model", str(tiny_chat), "--json").stdout)
    comparison = Comparison(**{**data, "setups": [SetupScore(**{k: v for k, v in s.items() if k != "percent"})
                                                  for s in data["setups"]]})
    assert [s.key for s in comparison.setups] == ["base", "base+retrieval"] and len(data["items"]) == 5
    assert data["recommendation"] == recommendation(comparison.setups)


def test_cli_errors_are_one_line(harbour: str, tiny_chat: Path, tmp_path: Path, hearth_home: Path) -> None:
    _one_line_error(hearth("docs", "compare", "missing", "--model", str(tiny_chat)), "No collection 'missing'")
    _one_line_error(hearth("docs", "compare", harbour, "--model", "no-such-model"), "no-such-model")
    _one_line_error(hearth("docs", "compare", harbour, "--model", str(tiny_chat), "--adapter", "nope"),
                    "No adapter called 'nope'")
    other = tmp_path / "other-model.gguf"
    install_adapter(hearth_home, "elsewhere", tiny_chat, other)
    _one_line_error(hearth("docs", "compare", harbour, "--model", str(tiny_chat), "--adapter", "elsewhere"),
                    "was trained on other-model, not tiny-chat")


@pytest.mark.slow
def test_the_starter_model_on_the_handbook(starter_in_library: Path) -> None:
    with DocsLibrary().create("handbook") as collection:
        collection.add([ROOT / "tests" / "fixtures" / "handbook"])
    result = compare_collection("handbook", str(starter_in_library))
    by = {s.key: s for s in result.setups}
    print({k: f"{s.right}/{s.total}" for k, s in by.items()}, result.recommendation)
    assert by["base+retrieval"].right > by["base"].right  # the passages hold the blanked facts
