"""The ``masked`` view: a fact line with one salient span blanked, then the whole line.

Rebuilding a sentence from a masked copy learns its facts without paraphrases and, with subjects masked
as well as objects, answers from either side (arXiv 2510.09885; MLM-U, Kitouni et al., arXiv 2406.05183).
The masked copy is context (not trained); the whole line is the target. Which span is masked takes turns
over a line's spans, the subject included, so every side of a fact is asked for across the copies.
"""

from __future__ import annotations

import random
from typing import Any

from core.finetune.data.views import Item
from core.finetune.data.views.facts import Facts

MASK = "____"


def masked_items(facts: Facts, rng: random.Random, options: dict[str, Any]) -> list[Item]:
    items = []
    for line in facts.lines:
        spans = [s for s in line.spans if s.end <= len(line.text)]
        if not spans:
            continue
        span = spans[0] if len(spans) == 1 or rng.random() < 0.5 else rng.choice(spans[1:])
        masked = line.text[: span.start] + MASK + line.text[span.end:]
        items.append(Item("masked", line.text, frozenset((line.fact,)), prompt=f"{line.title}\n{masked}\n"))
    return items
