"""Fill-in-the-blank probes from documents, and the handbook fixture the knowledge benchmark uses."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from core.finetune.data.documents import load_documents
from core.finetune.data.probes import MONTHS, STOP_WORDS, Probe, build_probes, split_sentences
from tests.fixtures.import_check import ROOT, assert_not_imported

HANDBOOK = ROOT / "tests" / "fixtures" / "handbook"
QUESTIONS = ROOT / "tests" / "fixtures" / "handbook_questions.json"
_MONTH = "|".join(MONTHS)
# The shape of each kind of answer, to check that every choice is of the answer's kind.
SHAPES = {
    "year": re.compile(r"1\d{3}|20\d{2}"),
    "number": re.compile(r"[£€$]?\d{1,3}(?:,\d{3})*(?:\.\d+)?%?|[£€$]?\d+(?:\.\d+)?%?"),
    "date": re.compile(rf"(?:\d{{1,2}}(?:st|nd|rd|th)? (?:{_MONTH})|(?:{_MONTH}) \d{{1,2}})(?:,? \d{{4}})?"),
    "name": re.compile(r"[A-Z][\w'’-]*(?:(?: &| of| of the|'|’)? [A-Z][\w'’-]*)+"),
    "term": re.compile(r"[A-Z][a-z][\w-]*|[a-z][a-z-]{8,}"),
}


def _handbook() -> list[tuple[str, str]]:
    docs, skipped = load_documents([HANDBOOK])
    assert not skipped
    return [(d.path, d.text) for d in docs]


@pytest.fixture(scope="module")
def probes() -> list[Probe]:
    return build_probes(_handbook(), max_probes=24, seed=0)


def test_the_handbook_gives_a_full_set_of_probes_spread_over_documents_and_kinds(probes: list[Probe]) -> None:
    assert len(probes) == 24
    per_document = Counter(Path(p.source).name for p in probes)
    assert len(per_document) == 6 and max(per_document.values()) - min(per_document.values()) <= 1
    kinds = Counter(p.kind for p in probes)
    assert set(kinds) == {"name", "number", "year", "date", "term"}
    assert max(kinds.values()) <= 8
    assert len({p.answer.casefold() for p in probes}) == len(probes)  # each fact asked once


def test_a_probe_is_its_sentence_with_one_salient_span_blanked(probes: list[Probe]) -> None:
    for p in probes:
        assert p.prefix + p.answer + p.suffix == p.sentence
        assert p.question == f"{p.prefix}____{p.suffix}"
        assert p.choices[p.answer_index] == p.answer
        words = len(p.sentence.split())
        assert words >= 6
        assert len(p.answer.split()) <= 0.4 * words, p
        assert len(re.findall(r"\w+", p.prefix)) >= 3, p
        assert p.answer.casefold() not in STOP_WORDS
        assert not any(w.casefold() in STOP_WORDS for w in re.findall(r"\w+", p.answer)[:1]), p
        assert p.answer.casefold() not in (p.prefix + p.suffix).casefold(), p  # its only occurrence
        sentences = [s for s, _ in split_sentences(Path(p.source).read_text(encoding="utf-8"))]
        previous = sentences.index(p.sentence) - 1
        assert p.context == (sentences[previous] if previous >= 0 else "")


def _text_of(source: str) -> str:
    return " ".join(Path(source).read_text(encoding="utf-8").split()).replace("# ", "").replace("- ", "")


def test_distractors_are_distinct_of_the_answers_kind_and_not_in_the_sentence(probes: list[Probe]) -> None:
    for p in probes:
        assert len(p.choices) == 4
        folded = [c.casefold() for c in p.choices]
        for i, a in enumerate(folded):
            assert all(a not in b for j, b in enumerate(folded) if j != i), p.choices
        for choice in p.choices:
            assert SHAPES[p.kind].fullmatch(choice), (p.kind, choice)
            if choice != p.answer:
                assert choice.casefold() not in p.sentence.casefold(), (choice, p.sentence)
                assert choice.casefold() not in STOP_WORDS
        if p.kind == "number":  # money stays money, a percentage a percentage
            assert {c[0] for c in p.choices if not c[0].isdigit()} <= {p.answer[0]}
            assert {c.endswith("%") for c in p.choices} == {p.answer.endswith("%")}
        if p.kind == "term":
            assert len({c[0].isupper() for c in p.choices}) == 1


def test_the_same_seed_gives_the_same_probes_and_another_seed_others() -> None:
    docs = _handbook()
    first = build_probes(docs, seed=0)
    assert build_probes(docs, seed=0) == first
    other = build_probes(docs, seed=1)
    assert other != first
    assert [p.choices for p in other] != [p.choices for p in first]
    assert build_probes(docs, seed=0, max_probes=5) == first[:5]


def test_probes_are_the_same_in_processes_with_different_string_hashing() -> None:
    code = (
        "import dataclasses, json; from core.finetune.data.documents import load_documents; "
        "from core.finetune.data.probes import build_probes; "
        f"docs, _ = load_documents([{str(HANDBOOK)!r}]); "
        "probes = build_probes([(d.path, d.text) for d in docs], seed=3); "
        "print(json.dumps([dataclasses.asdict(p) for p in probes]))"
    )
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr[-2000:]
        outputs.append(json.loads(result.stdout))
    here = [dataclasses.asdict(p) for p in build_probes(_handbook(), seed=3)]
    assert outputs[0] == outputs[1] == json.loads(json.dumps(here))


def test_no_documents_or_tiny_ones_give_no_probes() -> None:
    assert build_probes([]) == []
    assert build_probes([("a.txt", "")]) == []
    assert build_probes([("a.txt", "Hello there. Short one.")]) == []
    assert build_probes(_handbook(), max_probes=0) == []
    with pytest.raises(ValueError):
        build_probes(_handbook(), n_choices=1)


def test_sentences_respect_abbreviations_decimals_headings_and_lists() -> None:
    text = (
        "# The Harbour Guide\n\nDr. Ina Moss lives on St. Agnes Road with 3.5 cats. She moved in 2003!\n"
        "Is that so? It is.\n\n- First item of a list\n* Second item. With two sentences\n"
        "A line that wraps\nonto the next line.\n"
    )
    assert split_sentences(text) == [
        ("The Harbour Guide", True),
        ("Dr. Ina Moss lives on St. Agnes Road with 3.5 cats.", False),
        ("She moved in 2003!", False),
        ("Is that so?", False),
        ("It is.", False),
        ("First item of a list", False),
        ("Second item.", False),
        ("With two sentences", False),
        ("A line that wraps onto the next line.", False),
    ]


def test_missing_numbers_are_made_up_in_the_answers_format_and_lonely_names_skipped() -> None:
    docs = [
        ("a.txt", "Our small garden shed was bought for €1,200 by the village council last spring."),
        ("b.txt", "The annual open day of the village garden was first organised by Hanna Berg and friends."),
    ]
    made = build_probes(docs, seed=5)
    assert [p.kind for p in made] == ["number"]  # the only name has no other name to stand beside it
    (p,) = made
    assert p.answer == "€1,200"
    assert all(re.fullmatch(r"€\d,\d{3}", c) for c in p.choices) and len(set(p.choices)) == 4
    assert build_probes(docs, seed=5) == made


def test_probes_load_without_heavy_libraries() -> None:
    assert_not_imported("import core.finetune.data.probes", ["torch", "transformers", "numpy", "llama_cpp"])


def test_the_handbook_questions_are_paraphrased_facts_spread_over_every_file() -> None:
    about = json.loads(QUESTIONS.read_text(encoding="utf-8"))
    assert about["about"]
    questions = about["questions"]
    files = sorted(p.name for p in HANDBOOK.iterdir())
    assert len(files) == 6 and {Path(f).suffix for f in files} == {".md", ".txt"}
    words = sum(len(_text_of(str(HANDBOOK / f)).split()) for f in files)
    assert 900 <= words <= 1300
    assert len(questions) == 24
    assert Counter(q["source"] for q in questions) == dict.fromkeys(files, 4)
    assert Counter(q["answer"] for q in questions) == dict.fromkeys(range(4), 6)
    for q in questions:
        assert set(q) == {"source", "direction", "stem", "choices", "answer"} and q["direction"] in ("forward", "reverse")
        choices = q["choices"]
        assert len(choices) == 4 and len({c.casefold() for c in choices}) == 4
        source = _text_of(str(HANDBOOK / q["source"]))
        assert choices[q["answer"]] in source, q
        stem = q["stem"].split()
        # Paraphrased: no run of six words of a stem is copied from the handbook.
        for i in range(len(stem) - 5):
            assert " ".join(stem[i : i + 6]) not in source, q["stem"]
