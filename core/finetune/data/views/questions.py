"""The ``questions`` view: question-format items from the documents' own fact lines, trained before the text.

Pre-instruction-tuning (Jiang et al., arXiv 2402.12847) trains on questions about the documents before
the documents themselves, and the model then absorbs more of the text (27.6 → 45.4/48.1 exact match on
Llama-2-7B). Questions are made by rules from one salient span of each line: a name that starts the line
becomes "Who …?" / "What …?"; a span elsewhere is asked in place ("… was built in what year …?").
The answer is trained, the question is context. A question never takes the wording of the knowledge
check's held-out half (those are statements with the name last: "The treasurer is ____").
"""

from __future__ import annotations

import random
import re
from typing import Any

from core.finetune.data.views import Item
from core.finetune.data.views.facts import FactLine, Facts, Span, _is_person


def question_for(line: FactLine, span: Span) -> str | None:
    """A question whose answer is ``span``, or None when the line does not make one."""
    text = line.text.rstrip(".!?")
    if span.end > len(text):
        return None
    # "the Long Watch" is an event, "Greta Holm" a person: a name written after "the" is asked with "what".
    person = _is_person(span.text) and not text[: span.start].endswith(("the ", "The "))
    if span.start == 0:
        rest = text[span.end:]
        if not re.match(r"\s[a-z]", rest):
            return None
        return ("Who" if person else "What") + rest + "?"
    words = {"year": "what year", "date": "what date", "term": "what"}.get(span.kind)
    if span.kind == "name":
        words = "who" if person else "what"
    elif span.kind == "number":
        words = "what amount" if span.text[:1] in "£€$" else "what percentage" if span.text.endswith("%") \
            else "how many"
    if words is None or len(text[: span.start].split()) < 3:
        return None
    return text[: span.start] + words + text[span.end:] + "?"


def question_items(facts: Facts, rng: random.Random, options: dict[str, Any]) -> list[Item]:
    items = []
    for line in facts.lines:
        spans = [s for s in line.spans if s.kind != "term"]  # a term asked in place reads badly ("the yearly what")
        rng.shuffle(spans)
        for span in spans:
            question = question_for(line, span)
            if question:
                items.append(Item("questions", f"Answer: {span.text}.", frozenset((line.fact,)),
                                  prompt=f"{line.title}\nQuestion: {question}\n"))
                break
    return items
