"""Retrieved passages into a prompt: numbered [1], [2]… within a stated token budget, and the sources after."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # search and the store import numpy: the window reads messages without them
    from core.docs.search import Passage
    from core.docs.store import Collection
    from core.docs.vectors import Embedder

# Below this many tokens left, a shortened passage would be a fragment: stop instead.
MIN_PASSAGE_TOKENS = 48

INSTRUCTIONS = (
    "Answer the question using the numbered passages from the user's documents below. Cite the passages you "
    "use like [1] or [2]. If the passages do not contain the answer, say so."
)
# The message ``question_with_context`` writes, as ``read_docs_message`` reads it back.
_PASSAGES_HEAD = f"{INSTRUCTIONS}\n\nPassages:\n\n"
_QUESTION_HEAD = "\n\nQuestion: "
# "[3] notes.md, page 2, lines 4–19" (``passage_header``): a file name ends in its suffix; the location follows.
_HEADER = re.compile(r"^\[(\d+)\] (.+?\.[A-Za-z0-9]{1,5}), (.+)$")


@dataclass(frozen=True)
class RetrievedContext:
    """The passages that fit (numbered in order from 1), their block of text, its tokens and a note on trimming."""

    text: str
    passages: list[Passage]
    tokens: int
    budget: int
    note: str = ""


def passage_header(number: int, passage: Passage) -> str:
    return f"[{number}] {Path(passage.file).name}, {passage.location}"


def build_context(
    passages: Sequence[Passage], budget_tokens: int, count_tokens: Callable[[str], int]
) -> RetrievedContext:
    """Numbered passages that fit in ``budget_tokens`` (as ``count_tokens`` counts them), best first.

    A passage that does not fit whole is shortened to what does (when a useful part fits); the rest are
    left out, and ``note`` says so.
    """
    budget = max(0, int(budget_tokens))
    blocks: list[str] = []
    used: list[Passage] = []
    tokens = 0
    shortened = False
    for passage in passages:
        number = len(used) + 1
        block = f"{passage_header(number, passage)}\n{passage.text}"
        cost = count_tokens(block + "\n\n")
        if tokens + cost <= budget:
            blocks.append(block)
            used.append(passage)
            tokens += cost
            continue
        left = budget - tokens
        if left >= MIN_PASSAGE_TOKENS:
            cut = _shorten(passage, number, left, count_tokens)
            if cut is not None:
                block, cost = cut
                blocks.append(block)
                used.append(passage)
                tokens += cost
                shortened = True
        break
    notes = []
    if len(used) < len(passages):
        notes.append(f"{len(passages) - len(used)} of {len(passages)} passages left out")
    if shortened:
        notes.append(f"passage [{len(used)}] shortened")
    note = f"{' and '.join(notes)} to stay within the {budget}-token budget" if notes else ""
    return RetrievedContext("\n\n".join(blocks), used, tokens, budget, note)


def _shorten(passage: Passage, number: int, left: int, count: Callable[[str], int]) -> tuple[str, int] | None:
    """The longest word prefix of the passage whose block fits ``left`` tokens (binary search)."""
    words = passage.text.split()
    header = passage_header(number, passage)
    best: tuple[str, int] | None = None
    lo, hi = 1, len(words) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        block = f"{header}\n{' '.join(words[:mid])} …"
        cost = count(block + "\n\n")
        if cost <= left:
            best, lo = (block, cost), mid + 1
        else:
            hi = mid - 1
    return best


def retrieval_budget(n_ctx: int, requested: int, reserve: int) -> tuple[int, str]:
    """The passages' token budget: ``requested``, or less when the context (minus ``reserve``) is smaller."""
    room = max(0, n_ctx - reserve)
    if requested <= room:
        return requested, ""
    return room, (f"the {requested}-token retrieval budget is more than the {n_ctx}-token context leaves; "
                  f"using {room} tokens")


def question_with_context(question: str, context: RetrievedContext) -> str:
    """The user message the model sees: instructions, the numbered passages, then the question."""
    if not context.passages:
        return question
    return f"{_PASSAGES_HEAD}{context.text}{_QUESTION_HEAD}{question}"


def source_lines(context: RetrievedContext) -> list[str]:
    """One line per passage used: "[1] /path/file.pdf, page 3, lines 1–20"."""
    return [f"[{n}] {p.file}, {p.location}" for n, p in enumerate(context.passages, start=1)]


@dataclass(frozen=True)
class DocsTurn:
    """One chat turn with documents: the message to send, the passages in it, and notes for the user."""

    message: str
    context: RetrievedContext
    notes: list[str]


def prepare_question(
    collection: Collection,
    question: str,
    *,
    count_tokens: Callable[[str], int],
    n_ctx: int,
    k: int = 5,
    budget_tokens: int = 1024,
    answer_tokens: int = 512,
    embedder: Embedder | None = None,
) -> DocsTurn:
    """Retrieve passages for ``question`` and put them in the message, within the budget and the context.

    The budget shrinks when the context cannot hold it beside the question and ``answer_tokens``.
    """
    from core.docs.search import search

    passages = search(collection, question, k, embedder=embedder)
    reserve = min(answer_tokens, max(n_ctx // 4, 1)) + count_tokens(question) + count_tokens(INSTRUCTIONS) + 64
    budget, budget_note = retrieval_budget(n_ctx, budget_tokens, reserve)
    context = build_context(passages, budget, count_tokens)
    notes = [n for n in (budget_note, context.note) if n]
    if not passages:
        notes.append(f"nothing in '{collection.name}' matches the question; asked without passages")
    return DocsTurn(question_with_context(question, context), context, notes)


# -- reading a stored question back ------------------------------------------------------------
# A question asked with documents is stored as the model saw it (instructions, numbered passages,
# question); a window shows the question alone and the passages as the sources of the answer.
@dataclass(frozen=True)
class Source:
    """One numbered passage the answer was given: its number, file name, location and text."""

    number: int
    file: str
    location: str
    text: str

    @property
    def label(self) -> str:
        return f"[{self.number}] {self.file} · {self.location}"


@dataclass(frozen=True)
class DocsMessage:
    question: str
    sources: list[Source]


def read_docs_message(content: str) -> DocsMessage | None:
    """The question and sources of a message sent with passages; None for an ordinary message."""
    if not content.startswith(_PASSAGES_HEAD):
        return None
    cut = content.rfind(_QUESTION_HEAD)
    if cut < len(_PASSAGES_HEAD) - 2:
        return None
    question = content[cut + len(_QUESTION_HEAD):]
    body = content[len(_PASSAGES_HEAD):cut]
    sources: list[Source] = []
    current: tuple[int, str, str] | None = None
    lines: list[str] = []
    for block_line in body.split("\n"):
        match = _HEADER.match(block_line)
        expected = len(sources) + (2 if current else 1)
        # A header opens a passage only when it carries the next number and follows a blank line.
        if match and int(match.group(1)) == expected and (current is None or not lines or lines[-1] == ""):
            if current is not None:
                sources.append(Source(current[0], current[1], current[2], "\n".join(lines).strip()))
            current, lines = (int(match.group(1)), match.group(2), match.group(3)), []
        else:
            lines.append(block_line)
    if current is not None:
        sources.append(Source(current[0], current[1], current[2], "\n".join(lines).strip()))
    return DocsMessage(question, sources)
