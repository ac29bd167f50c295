"""Fact lines: a document's sentences made to stand alone, the base of every knowledge view.

A sentence of a document often names its subject only by a pronoun or a short reference ("He is a
boatbuilder", "the cooperative paid"). Stored that way, the fact is tied to the sentence before it;
with the name written out it is stored on the name (Allen-Zhu & Li, "Physics of Language Models 3.1",
arXiv 2309.14316: a fact is extractable when it is attached to the entity's full name). So each
sentence is rewritten by rules, English first:

- he/she/him/her/his/hers → the person named last (a multi-word name in the sentences before);
- a sentence-initial It/Its → the subject of the sentence before ("Its first keeper" → "The lighthouse
  at Skellan Point's first keeper");
- "the cooperative" → "the Skellan Point Lighthouse Cooperative" when exactly one name in the documents
  ends in that word.

Other languages keep their sentences as they are (``language`` says which was detected).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.finetune.data.probes import STOP_WORDS, _spans, split_sentences

# Words that start a multi-word name of a place or thing, not of a person.
_PLACE_WORDS = frozenset(
    ["lake", "mount", "mountain", "point", "bay", "cape", "river", "street", "lane", "road", "island", "isle", "harbour", "harbor", "port", "fort", "saint", "st", "north", "south", "east", "west", "upper", "lower", "new", "old", "great", "little", "the"]
)
# The last words of organisation names that a text shortens to "the <word>".
_VERBS = re.compile(
    r"\b(?:is|was|are|were|has|had|have|will|would|can|could|may|must|shall|should|keeps|kept|runs|ran|"
    r"stands|stood|holds|held|lies|lay|became|becomes|opened|closed|paid|pays|meets|met|takes|took|"
    r"sends|sent|leaves|left|trains|trained|looks|looked|[a-z]+ed)\b"
)
_PRONOUNS = {"he": "", "she": "", "him": "", "her": "'s?", "his": "'s", "hers": "'s"}
MIN_ENGLISH = 0.18  # the share of English function words above which a text is taken to be English


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    text: str
    kind: str  # core.finetune.data.probes.KINDS


@dataclass
class FactLine:
    """One sentence of a document, standing alone: ``text`` is what the views restate."""

    fact: int  # its number among all fact lines (views of one fact share it)
    doc: int
    title: str
    original: str
    text: str
    spans: list[Span] = field(default_factory=list)

    @property
    def subject(self) -> Span | None:
        """The name or term the line starts with, if it starts with one."""
        first = self.spans[0] if self.spans else None
        return first if first is not None and first.start == 0 else None


@dataclass
class Facts:
    lines: list[FactLine]
    titles: list[str]
    language: str  # "en", or "other" (no English rules applied)

    def by_doc(self) -> list[list[FactLine]]:
        out: list[list[FactLine]] = [[] for _ in self.titles]
        for line in self.lines:
            out[line.doc].append(line)
        return out


def detect_language(texts: Sequence[str]) -> str:
    words = [w.casefold() for t in texts for w in re.findall(r"[^\W\d_]+", t)]
    if not words:
        return "other"
    share = sum(w in STOP_WORDS for w in words) / len(words)
    return "en" if share >= MIN_ENGLISH else "other"


def document_title(path: str, text: str) -> str:
    """The first heading or short first line of a document, else its file name in words."""
    for sentence, heading in split_sentences(text)[:1]:
        if heading or (len(sentence.split()) <= 10 and not sentence.endswith(".")):
            return sentence.strip("# ").rstrip(":")
    stem = re.sub(r"^\d+[_\- ]*", "", Path(path).stem)
    return stem.replace("_", " ").replace("-", " ").strip().capitalize() or Path(path).stem


def fact_lines(documents: Sequence[tuple[str, str]]) -> Facts:
    """The fact lines of ``documents`` (path, text), in document order; headings are titles, not facts."""
    language = detect_language([text for _, text in documents])
    sentences = [split_sentences(text) for _, text in documents]
    low_counts = Counter(w for _, text in documents for w in re.findall(r"[^\W\d_]+", text))
    titles = [document_title(path, text) for path, text in documents]
    short = _short_references(documents) if language == "en" else {}
    persons = _persons(documents)
    lines: list[FactLine] = []
    for d, doc in enumerate(sentences):
        person = ""
        previous = ""
        for s, (sentence, heading) in enumerate(doc):
            if heading or len(sentence.split()) < 4:
                continue
            text = sentence
            if language == "en":
                text = _resolve(text, person, previous, short)
            spans = [Span(sp.start, sp.end, sp.text, sp.kind) for sp in _spans(d, s, text, False, low_counts)]
            spans.sort(key=lambda sp: sp.start)
            lines.append(FactLine(len(lines), d, titles[d], sentence, text, spans))
            # The sentence's first person is most often its subject, whom the next "he" or "she" means.
            named = [sp.text for sp in spans if sp.kind == "name" and sp.text in persons]
            if named:
                person = named[0]
            previous = text
    return Facts(lines, titles, language)


def _is_person(name: str) -> bool:
    """Whether a multi-word name looks like a person's: no place or organisation word in it."""
    words = name.split()
    return (2 <= len(words) <= 4 and "&" not in name and "'" not in name and "’" not in name
            and not any(w.casefold() in _ORG_WORDS or w.casefold() in _PLACE_WORDS for w in words))


# A name written after one of these is a place or a thing ("the Long Watch", "from Lisk Mawr"), not a person.
_NOT_BEFORE_PERSONS = ("the", "from", "in", "at", "near", "across", "on", "into", "onto")


def _persons(documents: Sequence[tuple[str, str]]) -> set[str]:
    """The names of persons in ``documents``: person-like names never written after "the", "from", "in"…"""
    text = " ".join(t for _, t in documents)
    names = {m[0] for m in re.finditer(r"\b[A-Z][a-z]+(?:\s(?:[A-Z][a-z]+|van|von|de|der))*\s[A-Z][a-z]+\b", text)}
    after = "|".join(_NOT_BEFORE_PERSONS)
    return {n for n in names if _is_person(n) and not re.search(rf"\b(?i:{after})\s+{re.escape(n)}\b", text)}


def people(facts: Facts) -> set[str]:
    """The persons named in the fact lines (see ``_persons``)."""
    return _persons([("", line.text) for line in facts.lines])


_ORG_WORDS = frozenset(
    ["cooperative", "society", "association", "club", "team", "trust", "company", "board", "council", "service", "services", "school", "church", "inn", "hotel", "hut", "hall", "house", "museum", "station", "clinic", "hospital", "centre", "center", "group", "foundation", "committee", "federation", "union", "league", "network", "partnership", "guild"]
)


def _short_references(documents: Sequence[tuple[str, str]]) -> dict[str, str]:
    """"the <last word>" → the full name, for names of organisations that end in one word no other name ends in."""
    ends: dict[str, set[str]] = {}
    for _, text in documents:
        for m in re.finditer(r"\b(?:[A-Z][\w'’&-]*[ \t]+){1,5}([A-Z][a-z]+)\b", text):
            last = m[1].casefold()
            if last in _ORG_WORDS:
                ends.setdefault(last, set()).add(m[0])
    out = {}
    for last, names in ends.items():
        # The longest name wins when one contains the others ("Lighthouse Cooperative" in "Skellan Point ...").
        longest = max(names, key=len)
        if all(n in longest for n in names):
            out[last] = re.sub(r"^(?:The|A|An)\s+", "", longest)
    return out


def _subject(sentence: str) -> str:
    """The words before a sentence's first verb (its subject), or "" when that is not a plain noun phrase."""
    m = _VERBS.search(sentence)
    if not m or m.start() == 0:
        return ""
    subject = sentence[: m.start()].strip().rstrip(",")
    words = subject.split()
    if not 1 <= len(words) <= 8 or words[0].casefold() in ("it", "this", "that", "there", "he", "she", "they"):
        return ""
    return subject


def _resolve(text: str, person: str, previous: str, short: dict[str, str]) -> str:
    if person:
        def person_for(m: re.Match[str]) -> str:
            word = m[0]
            low = word.casefold()
            nxt = text[m.end():].lstrip()
            if low == "her":
                # "her name" is a possessive, "shadow her on" an object.
                possessive = bool(re.match(r"[a-z]", nxt)) and not re.match(r"(?:on|in|at|to|for|with|and|or|as|"
                                                                            r"from|about|by)\b", nxt)
                value = person + ("'s" if possessive else "")
            else:
                value = person + _PRONOUNS[low]
            return value
        text = re.sub(r"\b(?:[Hh]e|[Ss]he|[Hh]im|[Hh]er|[Hh]is|[Hh]ers)\b", person_for, text)
    m = re.match(r"(It|Its)\b", text)
    if m:
        subject = _subject(previous)
        if subject:
            text = (subject + ("'s" if m[1] == "Its" else "") + text[m.end():])
            text = text[0].upper() + text[1:]
    for last, full in short.items():
        text = re.sub(rf"\b([Tt]he) {last}\b(?![\w-])", rf"\1 {full}", text)
    return text
