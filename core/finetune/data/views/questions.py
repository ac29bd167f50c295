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
from collections.abc import Collection
from typing import Any

from core.finetune.data.probes import STOP_WORDS
from core.finetune.data.views import Item
from core.finetune.data.views.facts import FactLine, Facts, Span, _is_person, people

# A role before a person's name ("Treasurer: ", "Medical officer: Dr. "), asked about as the sentence's start.
_LABEL = re.compile(r"^[A-Z][\w' -]{1,30}:\s+(?:(?:Dr|Mr|Mrs|Ms|Prof|Rev|Sir|Dame)\.?\s+)?")


def question_for(line: FactLine, span: Span, persons: Collection[str] | None = None) -> str | None:
    """A question whose answer is ``span``, or None when the line does not make one. ``persons``: the
    documents' persons (``people``), so a place is asked with "what" ("on what?", not "on who?")."""
    text = line.text.rstrip(".!?")
    start, end = span.start, span.end
    if end > len(text):
        return None
    label = _LABEL.match(text)  # "Treasurer: Ottilie Brask keeps ..." is asked as "Who keeps ...?"
    if label and label.end() == start:
        text, start, end = text[start:], 0, end - start
    # "the Long Watch" is an event, "Greta Holm" a person: a name written after "the" is asked with "what".
    person = (span.text in persons if persons is not None else _is_person(span.text)) \
        and not text[:start].endswith(("the ", "The "))
    if start == 0:
        rest = text[end:]
        if not re.match(r"\s[a-z]", rest):
            return None
        return ("Who" if person else "What") + rest + "?"
    words = {"year": "what year", "date": "what date", "term": "what"}.get(span.kind)
    if span.kind == "name":
        words = "who" if person else "what"
        if person and text[end:].startswith(("'s ", "’s ")):
            words, end = "whose", end + 2
    elif span.kind == "number":
        words = "what amount" if span.text[:1] in "£€$" else "what percentage" if span.text.endswith("%") \
            else "how many"
    if words is None or len(text[:start].split()) < 3:
        return None
    after = re.match(r"\s([a-z]+)", text[end:])
    if words == "what" and after and after[1] not in STOP_WORDS:  # "the team leader": "the what leader?"
        return None
    return text[:start] + words + text[end:] + "?"


def question_items(facts: Facts, rng: random.Random, options: dict[str, Any]) -> list[Item]:
    items = []
    persons = people(facts)
    for line in facts.lines:
        spans = [s for s in line.spans if s.kind != "term"]  # a term asked in place reads badly ("the yearly what")
        rng.shuffle(spans)
        for span in spans:
            question = question_for(line, span, persons)
            if question:
                items.append(Item("questions", f"Answer: {span.text}.", frozenset((line.fact,)),
                                  prompt=f"{line.title}\nQuestion: {question}\n"))
                break
    return items
