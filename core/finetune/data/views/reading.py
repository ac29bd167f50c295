"""The ``reading`` view: a passage of the documents as retrieval shows it, then a question it answers.

A model tuned on its documents starts to trust what it stored over what a retrieved passage says, and
tuning plus retrieval then answers less than retrieval alone (measured in bench/document_learning.py).
Retrieval-augmented fine-tuning (Zhang et al., "RAFT", arXiv 2403.10131) keeps the reading: train on
questions asked after the passage that holds the answer. Here the passage is the fact line with the
lines around it, under a header like the chat's retrieved passages ("[1] people.txt"); the question is
an object-first restatement with its name last, or a question from ``questions`` when the line has no such
restatement; only the answer is trained. Half the lines get one (seeded), to keep the cost small.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from core.finetune.data.views import Item
from core.finetune.data.views.both import restatements
from core.finetune.data.views.facts import FactLine, Facts
from core.finetune.data.views.questions import question_for

SHARE = 0.5  # of the fact lines that get a reading item
AROUND = 1  # lines of the same document on each side of the fact line in its passage


def _ask(line: FactLine, held: str | None, rng: random.Random) -> tuple[str, str] | None:
    """(question text, answer) for one line: a restatement with the answer last, or a question."""
    for r in restatements(line):
        if r.answer and r.kind == "name" and r.text != held and r.text.endswith(r.answer + "."):
            return r.text[: len(r.text) - len(r.answer) - 2], r.answer
    spans = [s for s in line.spans if s.kind != "term"]
    rng.shuffle(spans)
    for span in spans:
        question = question_for(line, span)
        if question:
            return f"Question: {question}\nAnswer:", span.text
    return None


def reading_items(facts: Facts, rng: random.Random, options: dict[str, Any]) -> list[Item]:
    held: dict[int, str] = options.get("held_out", {})
    names: list[str] = options.get("paths", [])
    items = []
    by_doc = facts.by_doc()
    for lines in by_doc:
        for i, line in enumerate(lines):
            if rng.random() >= SHARE:
                continue
            asked = _ask(line, held.get(line.fact), rng)
            if asked is None:
                continue
            question, answer = asked
            near = lines[max(0, i - AROUND): i + AROUND + 1]
            passage = " ".join(n.original for n in near)
            source = Path(names[line.doc]).name if line.doc < len(names) else line.title
            items.append(Item("reading", f" {answer}.", frozenset(n.fact for n in near),
                              prompt=f"[1] {source}\n{passage}\n\n{question}"))
    return items
