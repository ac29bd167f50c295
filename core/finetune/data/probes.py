"""Fill-in-the-blank probes made from a user's own documents: a knowledge check before and after training.

Each probe is one sentence of a document with a salient span blanked out (a number, a year, a date, a
name or a term) and distractors of the same kind taken from elsewhere in the documents; numbers, years
and dates that lack enough of them get near neighbours made from the answer instead. Scoring each choice
as the continuation of ``prefix`` by log-likelihood says whether a model "knows" the fact.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

KINDS = ("name", "number", "year", "date", "term")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
STOP_WORDS = frozenset(
    (
        "a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any",
        "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but",
        "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "either", "every",
        "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers",
        "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself",
        "just", "last", "least", "many", "may", "me", "might", "more", "most", "much", "must", "my",
        "myself", "neither", "next", "no", "nor", "not", "now", "of", "off", "often", "on", "once", "one",
        "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "same", "shall", "she",
        "should", "since", "so", "some", "still", "such", "than", "that", "the", "their", "theirs",
        "them", "themselves", "then", "there", "these", "they", "this", "those", "though", "through",
        "to", "too", "under", "until", "up", "upon", "us", "very", "was", "we", "were", "what", "when",
        "where", "whether", "which", "while", "who", "whom", "whose", "why", "will", "with", "within",
        "without", "would", "yet", "you", "your", "yours", "yourself", "today", "tomorrow", "yesterday",
        "however", "therefore"
    )
)
# A period after one of these (or after a single capital, an initial) does not end a sentence.
_ABBREVIATIONS = frozenset(
    (
        "dr", "mr", "mrs", "ms", "prof", "st", "mt", "no", "nos", "vs", "etc", "jr", "sr", "co", "ltd",
        "inc", "fig", "approx", "ca", "cf", "e.g", "i.e"
    )
)
# Lowercase words inside a person's name ("Ludwig van Beethoven"); "of" is left out, as "Marta Vell of
# Corrowick" is a name and a place.
_PARTICLES = frozenset(("de", "van", "von", "der", "du", "la", "le"))
_NOT_NAMES = frozenset(w.casefold() for w in (*MONTHS, *WEEKDAYS)) | STOP_WORDS | _ABBREVIATIONS

_MARKER = re.compile(r"^(?:(?P<heading>#{1,6})|[-*+•]|\d+[.)])\s+")
_BOUNDARY = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s+[\"'“‘(\[]?[^\W_a-z])")
_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")
_M = "|".join(MONTHS)
_DATE = re.compile(
    rf"\b(?:(?P<d1>\d{{1,2}}(?:st|nd|rd|th)?)\s+(?P<m1>{_M})(?:,?\s+(?P<y1>\d{{4}}))?"
    rf"|(?P<m2>{_M})\s+(?P<d2>\d{{1,2}}(?:st|nd|rd|th)?)(?:,\s*(?P<y2>\d{{4}}))?"
    rf"|(?P<m3>{_M})\s+(?P<y3>\d{{4}}))\b"
)
_NUMBER = re.compile(
    r"(?<![\w.,:/£€$-])(?P<cur>[£€$])?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?P<pct>%)?"
    r"(?![\w:/%]|[.,]\d)"
)


@dataclass(frozen=True)
class Probe:
    """A sentence with one span blanked: ``prefix + answer + suffix == sentence``.

    ``sentence`` has its whitespace collapsed; ``choices[answer_index] == answer``; ``kind`` is one of
    ``KINDS``. A model is scored on ``prefix`` (after ``context``, if used) continued by each choice.
    """

    source: str
    sentence: str
    prefix: str
    answer: str
    suffix: str
    choices: tuple[str, ...]
    answer_index: int
    kind: str
    context: str = ""  # the previous sentence of the document, for scoring with more context

    @property
    def question(self) -> str:
        """The sentence with its blank shown as ``____``."""
        return f"{self.prefix}____{self.suffix}"


@dataclass(frozen=True)
class _Span:
    doc: int
    sent: int
    start: int
    end: int
    text: str
    kind: str
    cls: str  # distractors must share it: currency/percent of a number, pattern of a date, case of a term
    tiers: tuple[str, ...]  # distractors preferably share these: unit and size of a number, words of a name


def split_sentences(text: str) -> list[tuple[str, bool]]:
    """The sentences of ``text`` with whitespace collapsed, each with whether it is a heading.

    Markdown headings, list items and short unpunctuated title lines are sentences of their own.
    """
    blocks: list[tuple[str, bool]] = []
    lines: list[str] = []

    def flush() -> None:
        if lines:
            block = " ".join(lines)
            titled = len(lines) == 1 and len(block.split()) < 10 and not re.search(r"[.!?:;,]$", block)
            blocks.append((block, titled))
            lines.clear()

    for raw in text.splitlines():
        line = " ".join(raw.split())
        marker = _MARKER.match(line)
        if not line or marker:
            flush()
            if marker:
                blocks.append((line[marker.end():], marker["heading"] is not None))
            continue
        if lines and re.search(r"[.!?:][\"'”’)\]]*$", lines[-1]):
            flush()
        lines.append(line)
    flush()
    out: list[tuple[str, bool]] = []
    for block, heading in blocks:
        start = 0
        for m in _BOUNDARY.finditer(block):
            last = block[start : m.start()].split()[-1:] or [""]
            word = last[0].lstrip("(\"'“‘").casefold()
            if m.group() == "." and (word in _ABBREVIATIONS or re.fullmatch(r"[^\W\d_]", word)):
                continue
            out.append((block[start : m.end()].strip(), heading))
            start = m.end()
        if block[start:].strip():
            out.append((block[start:].strip(), heading))
    return out


def _occurrences(needle: str, text: str) -> int:
    return len(re.findall(rf"(?<!\w){re.escape(needle)}(?!\w)", text, re.IGNORECASE))


def _spans(doc: int, sent: int, text: str, heading: bool, low_counts: Counter[str]) -> list[_Span]:
    """Every blankable span of one sentence; on overlaps dates win over numbers and numbers over names."""
    found: list[_Span] = []
    for m in _DATE.finditer(text):
        pattern = next(g for g in ("d1", "m2", "m3") if m[g])
        cls = pattern + ("y" if m["y1"] or m["y2"] else "")
        found.append(_Span(doc, sent, m.start(), m.end(), m[0], "date", cls, ()))
    for m in _NUMBER.finditer(text):
        num = m["num"]
        if not m["cur"] and not m["pct"] and re.fullmatch(r"1\d{3}|20\d{2}", num):
            found.append(_Span(doc, sent, m.start(), m.end(), m[0], "year", "", ()))
            continue
        unit = (text[m.end() :].split()[:1] or [""])[0].strip(",.;:").casefold()
        digits = str(len(num.replace(",", "").split(".")[0]))
        cls = f"{m['cur'] or ''}{m['pct'] or ''}{'.' if '.' in num else ''}"
        found.append(_Span(doc, sent, m.start(), m.end(), m[0], "number", cls, (unit, digits)))
    words = list(_WORD.finditer(text))
    i = 0
    while i < len(words) and not heading:
        w = words[i]
        if not (w[0][0].isupper() and not w[0].isupper()):
            if w[0].islower() and len(w[0]) >= 9 and w[0] not in STOP_WORDS and low_counts.get(w[0], 0) <= 2:
                found.append(_Span(doc, sent, w.start(), w.end(), w[0], "term", "low", (w[0][-2:],)))
            i += 1
            continue
        run = [w]
        j = i + 1
        while j < len(words):
            gap = text[run[-1].end() : words[j].start()]
            nxt = words[j][0]
            if nxt[0].isupper() and not nxt.isupper() and gap in (" ", " & ", "' ", "’ "):
                run.append(words[j])
                j += 1
            elif (
                gap == " " and nxt in _PARTICLES and j + 1 < len(words) and words[j + 1][0][0].isupper()
                and text[words[j].end() : words[j + 1].start()] == " "
            ):
                run.extend(words[j : j + 2])
                j += 2
            else:
                break
        while run and run[0][0].casefold() in _NOT_NAMES:
            run.pop(0)
        if len(run) >= 2:
            start, end = run[0].start(), run[-1].end()
            found.append(_Span(doc, sent, start, end, text[start:end], "name", "", (str(len(run)),)))
        elif run and run[0].start() > 0 and not re.search(r"[:\"“‘(]\s*$", text[: run[0].start()]):
            found.append(_Span(doc, sent, run[0].start(), run[0].end(), run[0][0], "term", "cap", ()))
        i = j
    kept: list[_Span] = []
    for span in found:  # in priority order: dates, numbers and years, names and terms
        if all(span.end <= k.start or span.start >= k.end for k in kept):
            kept.append(span)
    return kept


SALIENT_KINDS = ("name", "number", "year", "date")


def salient_spans(text: str) -> list[tuple[str, str]]:
    """The names, numbers, years and dates of one sentence as ``(kind, text)``, in reading order.

    The probes' span finder on one sentence; a capitalised word inside it (a place, a surname) counts
    as a name, while rare lowercase terms are left out: a restatement may reword those.
    """
    out: list[tuple[str, str]] = []
    for span in sorted(_spans(0, 0, text, False, Counter()), key=lambda s: s.start):
        if span.kind == "term" and span.cls == "cap":
            out.append(("name", span.text))
        elif span.kind in SALIENT_KINDS:
            out.append((span.kind, span.text))
    return out


def _blankable(span: _Span, sentence: str) -> bool:
    answer = span.text
    words = len(sentence.split())
    return (
        words >= 6
        and len(answer.split()) <= 0.4 * words
        and len(re.findall(r"\w+", sentence[: span.start])) >= 3
        and answer.casefold() not in STOP_WORDS
        and _occurrences(answer, sentence) == 1
    )


def _ordinal(n: int) -> str:
    return "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _near(answer: str, kind: str, rng: random.Random) -> list[str]:
    """Made-up neighbours of a number, year or date answer, written in the answer's format."""
    if kind == "year":
        year = int(answer)
        steps = rng.sample([*range(-12, 0), *range(1, 13)], 24)
        return [str(year + d) for d in steps if 1000 <= year + d <= 2099]
    if kind == "date":
        m = _DATE.fullmatch(answer)
        assert m is not None
        out = []
        for _ in range(24):
            parts = {g: m[g] for g in m.groupdict() if m[g]}
            for g, value in parts.items():
                if g[0] == "m" and rng.random() < 0.6:
                    parts[g] = rng.choice(MONTHS)
                elif g[0] == "d":
                    day = rng.randint(1, 28)
                    parts[g] = f"{day}{_ordinal(day)}" if value[-1].isalpha() else str(day)
                elif g[0] == "y" and rng.random() < 0.5:
                    parts[g] = str(int(value) + rng.choice((-3, -2, -1, 1, 2, 3)))
            text, end = "", 0
            for g in sorted(parts, key=m.start):
                text, end = text + answer[end : m.start(g)] + parts[g], m.end(g)
            out.append(text + answer[end:])
        return out
    m = _NUMBER.fullmatch(answer)
    assert m is not None
    num = m["num"].replace(",", "")
    decimals = len(num.split(".")[1]) if "." in num else 0
    scaled = round(float(num) * 10**decimals)
    unit = 10 ** max(0, len(str(scaled)) - 2)
    # Small steps that keep the answer's number of digits, the smallest first.
    values = [scaled + s * f * unit for f in range(1, 10) for s in (1, -1)]
    values = [v for v in values if v > 0 and len(str(v)) == len(str(scaled))]
    values = sorted(rng.sample(values, len(values)), key=lambda v: abs(v - scaled) > 5 * unit)
    comma = "," if "," in m["num"] else ""
    digits = [f"{v / 10**decimals:{comma}.{decimals}f}" for v in values]
    return [f"{m['cur'] or ''}{t}{m['pct'] or ''}" for t in digits]


def _distractors(
    span: _Span, sentence: str, pool: list[_Span], need: int, rng: random.Random
) -> list[str] | None:
    """``need`` distractors for ``span``: of its kind from ``pool``, the most alike first, then made up."""
    answer = span.text
    same = [s for s in pool if s.kind == span.kind and s.cls == span.cls]
    alike = [sum(a == b for a, b in zip(s.tiers, span.tiers, strict=True)) for s in same]
    ranked = sorted(zip(alike, same, strict=True), key=lambda e: (-e[0], rng.random()))
    options = [s.text for _, s in ranked]
    if span.kind in ("number", "year", "date"):
        options += _near(answer, span.kind, rng)
    chosen: list[str] = []
    for option in options:
        taken = [answer, *chosen]
        if _occurrences(option, sentence) or any(
            option.casefold() in t.casefold() or t.casefold() in option.casefold() for t in taken
        ):
            continue
        chosen.append(option)
        if len(chosen) == need:
            return chosen
    return None


def build_probes(
    documents: Sequence[tuple[str, str]], *, max_probes: int = 24, n_choices: int = 4, seed: int = 0
) -> list[Probe]:
    """Up to ``max_probes`` fill-in-the-blank probes from ``documents`` (path, text), the same for a seed.

    Probes take turns over the documents and, within each, over the kinds of span; at most one probe is
    made per sentence and per answer. Sentences without a blankable span or without enough distractors are
    skipped.
    """
    if n_choices < 2:
        raise ValueError("A probe needs at least 2 choices.")
    rng = random.Random(seed)
    sentences = [split_sentences(text) for _, text in documents]
    low_counts = Counter(w for _, text in documents for w in _WORD.findall(text))
    spans = [
        [_spans(d, s, text, heading, low_counts) for s, (text, heading) in enumerate(doc)]
        for d, doc in enumerate(sentences)
    ]
    unique: dict[tuple[str, str, str], _Span] = {}
    for sp in (sp for doc_spans in spans for ss in doc_spans for sp in ss):
        unique.setdefault((sp.kind, sp.cls, sp.text.casefold()), sp)
    pool = [unique[key] for key in sorted(unique)]  # sorted: the same order whatever the string hashing
    queues: list[dict[str, list[_Span]]] = []
    for d, doc_spans in enumerate(spans):
        by_kind: dict[str, list[_Span]] = {}
        blankable = [sp for ss in doc_spans for sp in ss if _blankable(sp, sentences[d][sp.sent][0])]
        for kind in KINDS:
            found = [sp for sp in blankable if sp.kind == kind]
            rng.shuffle(found)
            found.sort(key=lambda sp: sp.cls == "low")  # a capitalised term before a rare lowercase word
            if found:
                by_kind[kind] = found
        queues.append(by_kind)
    counts = dict.fromkeys(KINDS, 0)
    used: set[tuple[int, int]] = set()
    answers: set[str] = set()  # each fact is asked once, even when several sentences state it
    probes: list[Probe] = []
    while len(probes) < max_probes and any(queues):
        for d, by_kind in enumerate(queues):
            probe = None
            while probe is None and by_kind:
                kind = min(by_kind, key=lambda k: (counts[k], KINDS.index(k)))
                span = by_kind[kind].pop(0)
                if not by_kind[kind]:
                    del by_kind[kind]
                sentence = sentences[d][span.sent][0]
                answer = span.text
                if (d, span.sent) in used or answer.casefold() in answers:
                    continue
                distractors = _distractors(span, sentence, pool, n_choices - 1, rng)
                if distractors is None:
                    continue
                choices = [answer, *distractors]
                rng.shuffle(choices)
                probe = Probe(
                    source=documents[d][0], sentence=sentence, prefix=sentence[: span.start], answer=answer,
                    suffix=sentence[span.end :], choices=tuple(choices), answer_index=choices.index(answer),
                    kind=kind, context=sentences[d][span.sent - 1][0] if span.sent else "",
                )
                used.add((d, span.sent))
                answers.add(answer.casefold())
                counts[kind] += 1
                probes.append(probe)
            if len(probes) >= max_probes:
                break
    return probes
