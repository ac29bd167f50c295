"""The ``reversed`` view: each fact written from its other side, so "B is ?" is answered as well as "A is ?".

A model trained on "A is B" does not answer "B is ?" (Berglund et al., the reversal curse, arXiv
2309.12288). Two remedies that need no writer model:

- entity-preserving reversal (Golovneva et al., "Reverse Training", arXiv 2403.13799): the line's words in
  reverse order, names, numbers and dates kept whole ("Ivo Brandt is a boatbuilder." → "boatbuilder a is
  Ivo Brandt."); it works for any language written with spaces;
- restatements with the object first, from English templates over common relation shapes:
  "X is/was NP" → "NP is/was X"; "Role: X …" → "The role is X."; "X verbs …" (a person) → "The person who
  verbs … is X."; "… was built … by A" → "A built …"; "… in 1874 …" → "In 1874, …".

``restated_probes`` keeps some of the templated restatements out of training and asks them as the knowledge
check's held-out half ("asked in other words").
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from core.finetune.data.probes import Probe, _distractors, _Span
from core.finetune.data.views import Item
from core.finetune.data.views.facts import FactLine, Facts, _is_person, people

_COPULA = re.compile(r"\s(is|was|are|were)\s")
_CUT = re.compile(r",(?!\d)|;|\s(?:and|but|who|which|where|while|because|so)\s")
_LABEL = re.compile(r"^(?P<label>[A-Z][\w' -]{1,30}):\s+(?P<rest>.+)$")
# Past participles that are not verb+ed, with their simple past and present (3rd person) forms.
_IRREGULAR = {
    "built": ("built", "builds"), "made": ("made", "makes"), "given": ("gave", "gives"), "run": ("ran", "runs"),
    "held": ("held", "holds"), "paid": ("paid", "pays"), "written": ("wrote", "writes"), "sold": ("sold", "sells"),
    "bought": ("bought", "buys"), "kept": ("kept", "keeps"), "chosen": ("chose", "chooses"),
    "taken": ("took", "takes"), "led": ("led", "leads"), "won": ("won", "wins"), "ground": ("ground", "grinds"),
    "founded": ("founded", "founds"), "elected": ("elected", "elects"), "named": ("named", "names"),
}
_PASSIVE = re.compile(
    r"^(?P<s>[A-Z][^,;]*?)\s(?P<aux>was|were|is|are)\s(?P<v>[a-z]+ed|" + "|".join(_IRREGULAR) + r")\s"
    r"(?P<mid>(?:[^,;]*?\s)?)by\s(?P<agent>(?:the\s|a\s|an\s)?[^,;.]+?)(?P<rest>(?:\s(?:to|for|in|on|at|after|"
    r"before|when)\s.*)?)[.!]?$"
)
_IN_YEAR = re.compile(r"(?<=\s)in\s((?:1\d|20)\d\d)(?!\d)")


def reverse_words(line: FactLine) -> str:
    """The line's words in reverse order, each name, number and date kept whole (arXiv 2403.13799)."""
    text = line.text.rstrip(".!?")
    units: list[str] = []
    pos = 0
    for span in sorted(line.spans, key=lambda s: s.start):
        if span.end > len(text) or span.start < pos:
            continue
        units.extend(text[pos:span.start].split())
        units.append(span.text)
        pos = span.end
    units.extend(text[pos:].split())
    words = [u.strip(",;:") for u in reversed(units)]
    return " ".join(w for w in words if w) + "."


@dataclass(frozen=True)
class Restatement:
    """An object-first statement of a line; ``answer`` (a name of the line) sits at its end when it is a probe."""

    text: str
    answer: str = ""
    kind: str = "name"


def _clause(text: str) -> str:
    """The first clause: up to the first comma, "and", "who"… (the rest states other facts)."""
    m = _CUT.search(text)
    return (text[: m.start()] if m else text).strip().rstrip(".!?")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _low(text: str) -> str:
    """A sentence-initial "The" made lower case; names keep their capitals."""
    return re.sub(r"^(The|A|An|This|That|These|Those|Our|Its|Their)\b", lambda m: m[1].lower(), text)


def restatements(line: FactLine) -> list[Restatement]:
    """The templated object-first statements of one English fact line (none when no template fits)."""
    out: list[Restatement] = []
    text = line.text
    names = [s for s in line.spans if s.kind == "name"]
    label = _LABEL.match(text)
    if label and names and label["rest"].startswith(names[0].text):
        out.append(Restatement(f"The {label['label'].lower()} is {names[0].text}.", names[0].text))
        text = label["rest"]
    subject = next((s for s in names if text.startswith(s.text)), None)
    m = _COPULA.search(text)
    if subject and m and m.start() == len(subject.text):
        np = _clause(text[m.end():])
        if re.match(r"(?:a|an|the|one|our|its|their)\s", np) and 3 <= len(np.split()) <= 12:
            out.append(Restatement(f"{_cap(np)} {m[1]} {subject.text}.", subject.text))
    elif m and not subject:
        after = text[m.end():]
        obj = next((s for s in names if after.startswith(s.text)), None)
        np = text[: m.start()].strip()
        if obj and 2 <= len(np.split()) <= 10:
            out.append(Restatement(f"{obj.text} {m[1]} {_low(np)}.", np, "np"))
    elif subject and _is_person(subject.text):
        rest = _clause(text[len(subject.text):])
        if 2 <= len(rest.split()) <= 14 and re.match(r"[a-z]", rest):
            out.append(Restatement(f"The person who {rest} is {subject.text}.", subject.text))
    p = _PASSIVE.match(text)
    # Past tense only: "was built by" → "built" needs no agreement with the agent ("eight people carry").
    if p and p["aux"] in ("was", "were") and len(p["s"].split()) <= 8 and " and " not in p["s"]:
        past, present = _IRREGULAR.get(p["v"], (p["v"], p["v"][:-1] + "s" if p["v"].endswith("ed") else p["v"]))
        verb = past if p["aux"] in ("was", "were") else present
        mid = (" " + p["mid"].strip()) if p["mid"].strip() else ""
        out.append(Restatement(f"{_cap(p['agent'].strip())} {verb} {_low(p['s'])}{mid}{p['rest'].rstrip('.!')}."))
    y = _IN_YEAR.search(text)
    # Only a year of the main clause: "…, which was ground in Paris in 1873" dates the lens, not the line.
    if y and not text.startswith("In ") and not re.search(r"[,;:]", text[: y.start()]):
        body = (text[: y.start()].rstrip() + text[y.end():]).strip()
        first = body.split(" ", 1)[0]
        if not any(sp.start == 0 for sp in line.spans) and first not in ("I",):
            body = first.lower() + body[len(first):]
        out.append(Restatement(f"In {y[1]}, {body}", "", "year"))
    return out


def both_items(facts: Facts, rng: random.Random, options: dict[str, Any]) -> list[Item]:
    """One item per line: its entity-preserving reversal, then (English) its object-first restatements.

    The restatement the knowledge check asks in other words (``options["held_out"]``: fact → its text) is
    left out; the line's other restatements stay, so the check asks a wording the model never saw.
    """
    held: dict[int, str] = options.get("held_out", {})
    items = []
    for line in facts.lines:
        parts = [reverse_words(line)]
        if facts.language == "en":
            parts += [r.text for r in restatements(line) if r.text != held.get(line.fact)]
        items.append(Item("reversed", line.title + "\n" + " ".join(parts), frozenset((line.fact,))))
    return items


@dataclass(frozen=True)
class HeldOut:
    fact: int
    probe: Probe


def restated_probes(facts: Facts, *, count: int, seed: int = 0, n_choices: int = 4) -> list[HeldOut]:
    """Up to ``count`` questions asked in other words: an object-first restatement with its name blanked at
    the end, the distractors other names of the same documents. At most one per fact and per answer."""
    rng = random.Random(f"{seed}:restated")
    pool_names = {s.text for line in facts.lines for s in line.spans if s.kind == "name"}
    persons = sorted(people(facts))
    others = sorted(pool_names - set(persons))
    candidates: list[tuple[FactLine, Restatement]] = []
    for line in facts.lines:
        for r in restatements(line):
            if r.answer and r.kind == "name" and r.text.endswith(r.answer + ".") \
                    and len(r.text[: -len(r.answer) - 1].split()) >= 3:
                candidates.append((line, r))
                break
    rng.shuffle(candidates)
    out: list[HeldOut] = []
    answers: set[str] = set()
    for line, r in candidates:
        if len(out) >= count or r.answer in answers:
            continue
        prefix = r.text[: len(r.text) - len(r.answer) - 1]
        pool = [_Span(0, 0, 0, 0, n, "name", "", (str(len(n.split())),))
                for n in (persons if r.answer in persons else others + persons)]
        span = _Span(0, 0, len(prefix), len(prefix) + len(r.answer), r.answer, "name", "",
                     (str(len(r.answer.split())),))
        distractors = _distractors(span, line.text + " " + r.text, pool, n_choices - 1, rng)
        if distractors is None:
            continue
        choices = [r.answer, *distractors]
        rng.shuffle(choices)
        probe = Probe(source=line.title, sentence=r.text, prefix=prefix, answer=r.answer, suffix=".",
                      choices=tuple(choices), answer_index=choices.index(r.answer), kind="restated")
        answers.add(r.answer)
        out.append(HeldOut(line.fact, probe))
    return out

