"""The second benchmark fixture (``tests/fixtures/rescue``) asks what its documents say, in other words.

The questions in ``rescue_questions.json`` are the bench's test of knowledge "in other words": every choice,
the answer and each distractor, is a fact of the same documents (so a model that mixes the documents' facts
up is caught), at least a third ask from the other side of the relation, and no stem copies the documents'
wording. No model is needed.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DOCS = FIXTURES / "rescue"
QUESTIONS = FIXTURES / "rescue_questions.json"
RUN = 6  # words: a stem sharing a run this long with the documents copies their sentence


def _words(text: str) -> list[str]:
    return re.findall(r"[\w£',.]+", text.casefold().replace("’", "'"))


def _normal(words: list[str]) -> list[str]:
    return [w.strip(",.") for w in words if w.strip(",.")]


def _load() -> tuple[dict[str, str], list[dict[str, Any]]]:
    docs = {p.name: p.read_text(encoding="utf-8") for p in sorted(DOCS.iterdir()) if p.is_file()}
    about = json.loads(QUESTIONS.read_text(encoding="utf-8"))
    assert about["about"]
    return docs, list(about["questions"])


def test_the_documents_are_five_to_eight_mixed_files_of_a_fitting_size() -> None:
    docs, _ = _load()
    assert 5 <= len(docs) <= 8
    assert {Path(name).suffix for name in docs} == {".md", ".txt"}
    # 1,000-2,000 tokens (1,558 with the starter model's tokenizer); about 1.3 tokens a word.
    words = sum(len(text.split()) for text in docs.values())
    assert 1000 / 1.3 <= words <= 2000 / 1.3


def test_every_choice_is_a_fact_of_the_documents_and_the_answers_vary() -> None:
    docs, questions = _load()
    corpus = "\n".join(docs.values()).casefold()
    assert 25 <= len(questions) <= 30
    for q in questions:
        assert set(q) == {"source", "direction", "stem", "choices", "answer"}, q
        assert q["source"] in docs, q
        choices = q["choices"]
        assert len(choices) == 4 and len({c.casefold() for c in choices}) == 4, q
        assert isinstance(q["answer"], int) and 0 <= q["answer"] < 4, q
        # The answer is stated in its source file; every distractor is another fact of the documents.
        assert choices[q["answer"]].casefold() in docs[q["source"]].casefold(), q
        for choice in choices:
            assert choice.casefold() in corpus, (choice, q["stem"])
    assert set(Counter(q["answer"] for q in questions)) == {0, 1, 2, 3}
    assert max(Counter(q["answer"] for q in questions).values()) <= len(questions) // 3
    assert set(q["source"] for q in questions) == set(docs)


def test_at_least_a_third_ask_from_the_other_side_of_the_relation() -> None:
    _, questions = _load()
    directions = Counter(q["direction"] for q in questions)
    assert set(directions) == {"forward", "reverse"}
    assert directions["reverse"] * 3 >= len(questions)


def test_no_stem_copies_the_documents_wording() -> None:
    docs, questions = _load()
    runs = set()
    for text in docs.values():
        words = _normal(_words(text))
        runs.update(" ".join(words[i : i + RUN]) for i in range(len(words) - RUN + 1))
    for q in questions:
        stem = _normal(_words(q["stem"]))
        copied = [" ".join(stem[i : i + RUN]) for i in range(len(stem) - RUN + 1) if " ".join(stem[i : i + RUN]) in runs]
        assert not copied, (q["stem"], copied)
