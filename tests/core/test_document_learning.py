"""The real starter model learns the handbook with no settings, and the knowledge check says so.

One documents job on ``tests/fixtures/handbook`` (fictional facts the base model cannot know), with
the planner's defaults; the job's own knowledge check (probes built from the handbook's sentences,
scored in torch) and the hand-written paraphrased questions (scored in llama.cpp with the exported
GGUF LoRA) must move the same way: up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.engine import Engine, LoadOptions
from core.finetune.adapters import list_adapters

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _accuracy(engine: Engine) -> float:
    questions = json.loads((FIXTURES / "handbook_questions.json").read_text(encoding="utf-8"))["questions"]
    right = 0
    for q in questions:
        scores = engine.score(q["stem"], [" " + c for c in q["choices"]])
        right += int(max(range(len(scores)), key=lambda i: scores[i]["logprob"]) == q["answer"])
    return right / len(questions)


def test_the_handbook_is_learned_and_both_checks_agree(starter_model: Path, tmp_path: Path) -> None:
    from core.finetune.job import run
    from core.gguf_export.lora import export_lora_gguf

    events: list[dict[str, Any]] = []
    code = run({"base": str(starter_model), "name": "handbook", "docs": [str(FIXTURES / "handbook")]},
               events.append, lambda: False)
    assert code == 0
    knowledge = list_adapters()[0].manifest["metrics"]["knowledge"]
    assert knowledge["total"] >= 16
    assert knowledge["after"] >= knowledge["before"] + knowledge["total"] // 4, knowledge

    lora = export_lora_gguf("handbook", tmp_path / "handbook.gguf", base=starter_model).path
    with Engine() as engine:
        engine.load(starter_model, LoadOptions(n_ctx=512, n_threads=2))
        before = _accuracy(engine)
        engine.set_loras([(lora, 1.0)])
        after = _accuracy(engine)
    assert after >= before + 0.15, (before, after)
    # The samples still read as text, not one sentence parroted over and over.
    for sample in list_adapters()[0].manifest["metrics"]["samples"]:
        words = sample["after"].split()
        assert len(words) >= 5 and len(set(words)) >= len(words) // 3, sample
