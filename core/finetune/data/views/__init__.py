"""Knowledge views: the user's documents rewritten by rules so a small model stores their facts.

Plain next-token training ties a fact to the wording around it. What makes a fact extractable and
answerable from the other side, without a writer model (each view's module cites its paper):
each fact stated with its entity's full name (``facts``), several copies in shuffled order
(``shuffled``), the relation written from both sides (``reversed``), the line rebuilt from a masked copy
(``masked``), question-format items before the text (``questions``), questions asked after a passage as
retrieval shows it, so the tuned model still reads (``reading``, not a default: it cost more than it gave),
and a little of the base model's own text against forgetting (``replay``). One module per view; each
returns ``Item`` s tagged with the fact lines they state, so the packer can keep two views of one fact
out of the same training row (Allen-Zhu & Li: copies of a fact in one window are copied from context,
not stored).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.errors import DatasetError
from core.finetune.data.views.facts import Facts, fact_lines


@dataclass(frozen=True)
class Item:
    """One training text of a view: ``prompt`` (not trained) then ``text`` (trained)."""

    view: str
    text: str
    facts: frozenset[int]
    prompt: str = ""


@dataclass(frozen=True)
class View:
    name: str
    title: str
    english_only: bool  # needs English templates or rules
    build: Callable[[Facts, random.Random, dict[str, Any]], list[Item]]
    phase: int = 1  # 0: trained before the documents' text in each epoch (question warm-up)
    # For estimates before the text is read: characters of items per character of the documents (per copy for
    # ``shuffled``), measured on tests/fixtures/handbook and rescue; prose with fewer facts per line makes less.
    size: float = 1.0


@dataclass
class ViewSet:
    facts: Facts
    items: list[Item]
    held_out: list[Any] = field(default_factory=list)  # Probe: restatements kept out of ``items``
    note: str = ""

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in self.items:
            out[item.view] = out.get(item.view, 0) + 1
        return out


@functools.cache
def _registry() -> dict[str, View]:
    from core.finetune.data.views import both, masked, questions, reading, replay, shuffled

    views = [
        View("facts", "fact lines (names written out)", False, shuffled.fact_items, size=1.15),
        View("shuffled", "shuffled copies", False, shuffled.shuffled_items, size=1.15),
        View("reversed", "both directions", False, both.both_items, size=1.45),
        View("masked", "masked reconstruction", False, masked.masked_items, size=2.1),
        View("questions", "question warm-up", True, questions.question_items, phase=0, size=1.2),
        View("reading", "reading retrieved passages", True, reading.reading_items, size=1.8),
        View("replay", "the base model's own text", False, replay.replay_items, size=0.3),
    ]
    return {v.name: v for v in views}


VIEW_NAMES = ("facts", "shuffled", "reversed", "masked", "questions", "reading", "replay")
# Reading is left out by default: measured with the bench's ablation and three seeds per fixture
# (bench/document_learning.py, 2026-12-03), training without it answered more questions alone (medians of
# three seeds: handbook 50% -> 67%, rescue 53% -> 60%) with tuned + retrieval within a question either way
# (79% -> 75%, 63% -> 67%); its items teach reading passages, which the base model already does, at the
# expense of storing the facts. ``--views`` still offers it.
DEFAULT_VIEWS = tuple(v for v in VIEW_NAMES if v != "reading")


def parse_views(value: str | Sequence[str] | None) -> list[str]:
    """The view names a spec asks for ("facts,masked", or a list of such): None → the default set; "none" or
    [] → none (plain text)."""
    if value is None:
        return list(DEFAULT_VIEWS)
    names = [n.strip() for v in ([value] if isinstance(value, str) else value) for n in str(v).split(",") if n.strip()]
    if names in ([], ["none"]):
        return []
    unknown = [n for n in names if n not in VIEW_NAMES]
    if unknown:
        raise DatasetError(f"Unknown view {', '.join(unknown)}: use {', '.join(VIEW_NAMES)}, or none.")
    return [n for n in VIEW_NAMES if n in names]


def copies_for(tokens: int) -> int:
    """How many shuffled copies: more for a small set (Physics 3.1: 5 varied copies stored 96.6%), fewer as
    the text grows so a large library still trains in hours (measured in bench/document_learning.py)."""
    if tokens < 4_000:
        return 3
    if tokens < 40_000:
        return 2
    return 1


def view_size(names: Sequence[str], tokens: int) -> int:
    """About how many tokens the views ``names`` make of ``tokens`` tokens of documents: for a plan made before
    the documents are read and rewritten (``core.finetune.cost``)."""
    registry = _registry()
    return int(sum(tokens * registry[n].size * (copies_for(tokens) if n == "shuffled" else 1) for n in names))


def build_views(
    documents: Sequence[tuple[str, str]], names: Sequence[str], *, seed: int = 0, row_chars: int = 400,
    tokens: int = 0, held_out: int = 12, replay: Sequence[str] = (),
) -> ViewSet:
    """The items of the views ``names`` over ``documents`` (path, text), the same for a seed.

    ``row_chars``: the longest item (about one training row). ``held_out``: how many restated questions
    to keep aside for the knowledge check (their restatements are left out of every view). ``replay``: the
    base model's own texts for the ``replay`` view (``core.finetune.data.views.replay``).
    """
    from core.finetune.data.views.both import restated_probes

    facts = fact_lines(documents)
    registry = _registry()
    chosen = [registry[n] for n in names]
    note = ""
    if facts.language != "en":
        skipped = [v.title for v in chosen if v.english_only]
        chosen = [v for v in chosen if not v.english_only]
        note = ("The documents are not in English: names are not written out in place of pronouns and "
                "restatements use word order only" + (f"; left out: {', '.join(skipped)}" if skipped else "") + ".")
    probes = restated_probes(facts, count=held_out, seed=seed) if facts.language == "en" else []
    options: dict[str, Any] = {"row_chars": row_chars, "copies": copies_for(tokens or len(" ".join(
        line.text for line in facts.lines)) // 4), "held_out": {p.fact: p.probe.sentence for p in probes},
        "replay": list(replay), "paths": [path for path, _ in documents]}
    items: list[Item] = []
    for view in sorted(chosen, key=lambda v: v.phase):
        items.extend(view.build(facts, random.Random(f"{seed}:{view.name}"), options))
    return ViewSet(facts, items, [p.probe for p in probes], note)


def phase_of(item: Item) -> int:
    """The training phase of an item: its view's (a writer's restatements train with the documents)."""
    view = _registry().get(item.view)
    return view.phase if view is not None else 1
