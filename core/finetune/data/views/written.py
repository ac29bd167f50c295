"""The "written" view: restatements of fact lines by a local instruct model, kept only where they are faithful.

A writer model (any instruct GGUF in the library, run by the chat engine) rewrites one fact line at a
time in other words. Small writers change facts as they go, so a restatement is kept only when it
keeps every name, number and date of its line and adds none (the guard the knowledge issue asks for,
after EntiGraph, arXiv 2409.07431, and Active Reading, arXiv 2508.09494, which train on a writer's
restatements of documents), is not a copy of the line and is neither empty nor overlong. What is
dropped is counted with its reason, so a user sees what the writer got wrong.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.events import CancelToken
from core.finetune.data.probes import MONTHS, STOP_WORDS, WEEKDAYS, salient_spans

# The first restatement of a line is a paraphrase; the second starts from the line's last name, number or
# date, so the fact is also stated from its other side (the reversal curse, arXiv 2309.12288).
PROMPT = (
    "Rewrite this sentence in different words. Keep every name, number and date exactly as written, "
    "and add no new facts. Reply with the rewritten sentence only.\n\nSentence: {line}"
)
PROMPT_FROM = (
    "Rewrite this sentence in different words so that it begins with \"{start}\". Keep every name, number "
    "and date exactly as written, and add no new facts. Reply with the rewritten sentence only.\n\n"
    "Sentence: {line}"
)
COPY_SIMILARITY = 0.85  # word-sequence similarity from which a restatement is the line itself, barely changed
# Of the line's content words (by their first 4 letters, so "runs" is "run" and "members" "member"), the share
# a restatement must keep: a writer that keeps the names but drops what is said of them ("Lena Okafor, a
# dedicated member.") has not restated the fact. Paraphrases of the handbook's lines keep 75-90%.
CONTENT_KEPT = 0.6
MIN_WORDS = 3
EXAMPLES = 5  # dropped restatements shown in a summary
_WORDS = re.compile(r"\w+")
_DIGITS = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")
_PUNCTUATION = ".,;:!?()[]\"'“”‘’"
_ECHO = frozenset(("rewrite", "rewritten", "sentence", "restatement", "paraphrase"))  # the request, repeated
# Labels and preambles small instruct models put before their answer ("Rewritten sentence: …").
_LABEL = re.compile(
    r"^(?:\*\*)?(?:here(?:'s| is)[^:]*|(?:the )?(?:(?:rewritten|new|restated|paraphrased)(?: sentence| version)?|"
    r"sentence|version)(?: is)?|rewrite|restatement|paraphrase|answer|output)\s*(?:\*\*)?\s*:\s*",
    re.I,
)
_ORDINAL = frozenset(("st", "nd", "rd", "th"))
# Facts the span finder leaves to the sentence's words: a month or weekday on its own ("every April") and a
# number written out ("seven people", which a writer may turn into "7 people"). "one" is left out: it is
# as often a pronoun ("one of the keepers") as a count.
_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
_TENS = ("thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_NUMBER_WORDS = {w: str(n) for n, w in enumerate(_ONES) if n != 1} | {w: str(10 * n) for n, w in enumerate(_TENS, 3)}
_CALENDAR = frozenset(w.casefold() for w in (*MONTHS, *WEEKDAYS))


@dataclass
class WriterReport:
    """What a writer made of some fact lines: the kept ``(line, restatement)`` pairs and what was dropped."""

    kept: list[tuple[str, str]] = field(default_factory=list)
    generated: int = 0
    dropped: list[dict[str, str]] = field(default_factory=list)  # {"line", "text", "why"}
    lines: int = 0

    def dropped_by_reason(self) -> dict[str, int]:
        """How many restatements were dropped for each kind of reason ("lost", "added", "a copy of the line"…)."""
        counts: dict[str, int] = {}
        for item in self.dropped:
            kind = item["why"].split(" '")[0]
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def to_summary(self, model_name: str) -> dict[str, Any]:
        """The data event's ``"written"`` entry (contract of issue 19)."""
        return {
            "model": model_name, "lines": self.lines, "generated": self.generated, "kept": len(self.kept),
            "dropped": len(self.dropped), "dropped_examples": [dict(d) for d in self.dropped[:EXAMPLES]],
        }


def clean_reply(reply: str) -> str:
    """The restatement in a writer's reply: its first line of text, without a label, preamble or quotes."""
    for raw in reply.strip().splitlines():
        line = raw.strip()
        if not line:
            continue
        line = _LABEL.sub("", line).strip()
        if not line or (line.endswith(":") and len(_WORDS.findall(line)) < 12):
            continue  # a preamble ("Sure! Here is the sentence rewritten:")
        return line.strip("\"'“”‘’*` ").strip()
    return ""


def _occurs(needle: str, text: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", text, re.I) is not None


def _atoms(kind: str, text: str) -> set[str]:
    """What must match of a number, year or date: its digits (no separators), and a date's month."""
    if kind == "date":
        return {t.casefold() for t in re.findall(r"\d+|[^\W\d_]+", text) if t.casefold() not in _ORDINAL}
    return {re.sub(r"[^\d.]", "", text).strip(".")}


def _word_facts(text: str) -> list[tuple[str, str]]:
    """``(as written, atom)`` for each month, weekday and written-out number of ``text``."""
    out = []
    for word in _WORDS.findall(text):
        folded = word.casefold()
        if folded in _CALENDAR:
            out.append((word, folded))
        elif folded in _NUMBER_WORDS:
            out.append((word, _NUMBER_WORDS[folded]))
    return out


def _digit_runs(text: str) -> set[str]:
    return {m.replace(",", "") for m in _DIGITS.findall(text)}


def _content(text: str) -> set[str]:
    """The content words of ``text`` by their first 4 letters (numbers, months and stop-words left out)."""
    return {w[:4] for w in _WORDS.findall(text.casefold())
            if len(w) >= 3 and w.isalpha() and w not in STOP_WORDS and w not in _NUMBER_WORDS and w not in _CALENDAR}


def check_restatement(line: str, text: str) -> str | None:
    """Why ``text`` is not a faithful restatement of ``line`` ("lost 'Ivo Brandt'", "added '1962'", "left out
    most of the line", "an echo of the request", "a copy of the line", "empty", "too long"), or None when it
    is one.

    Names must appear as written (any case); numbers, years and dates by their digits and month, so
    "14 October 1983" may become "October 14, 1983" and "£4,800" "4800 pounds".
    """
    words = _WORDS.findall(text.casefold())
    if len(words) < MIN_WORDS:
        return "empty"
    if len(text) > 2 * len(line) + 60:
        return "too long"
    source, restated = salient_spans(line), salient_spans(text)
    source_words, restated_words = _word_facts(line), _word_facts(text)
    restated_atoms = {a for _, a in restated_words}.union(*(_atoms(k, t) for k, t in restated if k != "name"))
    for kind, span in source:
        kept = _occurs(span, text) if kind == "name" else _atoms(kind, span) <= restated_atoms or _occurs(span, text)
        if not kept:
            return f"lost '{span}'"
    for word, atom in source_words:
        if atom not in restated_atoms:
            return f"lost '{word}'"
    source_atoms = {a for _, a in source_words}.union(*(_atoms(k, t) for k, t in source if k != "name"))
    for kind, span in restated:
        added = not _occurs(span, line) if kind == "name" else not (_atoms(kind, span) <= source_atoms or _occurs(span, line))
        if added:
            return f"added '{span}'"
    for word, atom in restated_words:
        if atom not in source_atoms:
            return f"added '{word}'"
    allowed = source_atoms | _digit_runs(line)
    for token in re.findall(r"\S*\d\S*", text):  # any other number, e.g. in "2009-09-20"
        if not _digit_runs(token) <= allowed:
            return f"added '{token.strip(_PUNCTUATION)}'"
    if any(w in _ECHO for w in words) and not any(w in _ECHO for w in _WORDS.findall(line.casefold())):
        return "an echo of the request"
    content = _content(line)
    if len(content & _content(text)) < CONTENT_KEPT * len(content):
        return "left out most of the line"
    if difflib.SequenceMatcher(None, _WORDS.findall(line.casefold()), words, autojunk=False).ratio() >= COPY_SIMILARITY:
        return "a copy of the line"
    return None


def prompts_for(line: str, per_line: int) -> list[str]:
    """The ``per_line`` requests for one line: a paraphrase, then one starting from its last salient span."""
    spans = salient_spans(line)
    out = []
    for k in range(per_line):
        start = spans[-1][1] if spans and k % 2 == 1 and not line.startswith(spans[-1][1]) else None
        out.append(PROMPT_FROM.format(start=start, line=line) if start else PROMPT.format(line=line))
    return out


def resolve_writer(name_or_path: str) -> tuple[str, str]:
    """The GGUF path and the display name of a writer given by library name or path.

    ``InvalidModelError`` when the model has no chat template: a base model continues the request
    instead of answering it, so nothing it writes would be a restatement.
    """
    from core.errors import InvalidModelError
    from core.library import Library

    entry = Library().get(name_or_path)
    if not entry.has_chat_template:
        raise InvalidModelError(
            f"'{entry.name}' is not a chat (instruct) model, so it cannot rewrite your documents: pick an instruct "
            "model as the writer (Discover recommends one), or leave the writer out."
        )
    return str(entry.path), entry.name


def write_restatements(
    lines: list[str],
    model_path: str,
    *,
    seed: int = 0,
    per_line: int = 2,
    on_progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
    n_ctx: int = 2048,
) -> WriterReport:
    """Up to ``per_line`` restatements of each of ``lines`` by the instruct GGUF at ``model_path``, guarded.

    The same for a seed: the first request of a line is greedy, the others sample at a low temperature
    with a seed from ``seed`` and the line's place. ``on_progress(done, total)`` after each line.
    """
    from core.engine import Engine, LoadOptions, SamplingParams

    report = WriterReport(lines=len(lines))
    seen: set[str] = set()
    with Engine() as engine:
        engine.load(model_path, LoadOptions(n_ctx=n_ctx))
        for n, line in enumerate(lines):
            if cancel is not None:
                cancel.raise_if_cancelled("Writing restatements")
            limit = min(n_ctx // 2, 2 * len(_WORDS.findall(line)) + 48)  # tokens: room for a longer wording
            for k, prompt in enumerate(prompts_for(line, per_line)):
                params = SamplingParams(
                    max_tokens=limit, temperature=0.0 if k == 0 else 0.4, seed=seed * 100_003 + n * per_line + k,
                    repeat_penalty=1.0,
                )
                text = clean_reply(engine.chat([{"role": "user", "content": prompt}], params).text)
                report.generated += 1
                key = " ".join(_WORDS.findall(text.casefold()))
                why = check_restatement(line, text) or ("a repeat" if key in seen else None)
                if why is None:
                    seen.add(key)
                    report.kept.append((line, text))
                else:
                    report.dropped.append({"line": line, "text": text, "why": why})
            if on_progress is not None:
                on_progress(n + 1, len(lines))
    return report

