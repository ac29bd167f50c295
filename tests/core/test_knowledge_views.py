"""Knowledge views of documents (core.finetune.data.views): names written out, both directions, masked lines,
question warm-up, the packing rule and the held-out questions asked in other words."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import DatasetError
from core.finetune.data.formatting import Encoded
from core.finetune.data.packing import pack
from core.finetune.data.views import DEFAULT_VIEWS, build_views, parse_views
from core.finetune.data.views.both import restatements, reverse_words
from core.finetune.data.views.facts import fact_lines
from core.finetune.data.views.questions import question_for

HANDBOOK = Path(__file__).resolve().parents[1] / "fixtures" / "handbook"


def handbook() -> list[tuple[str, str]]:
    return [(str(p), p.read_text(encoding="utf-8")) for p in sorted(HANDBOOK.iterdir())]


def lines_of(text: str, title: str = "# The Harbour Rowing Club") -> list[str]:
    return [line.text for line in fact_lines([("club.md", f"{title}\n\n{text}")]).lines]


@pytest.mark.parametrize(("text", "expected"), [
    ("Ivo Brandt chairs the board. He is a boatbuilder from Corrowick.",
     "Ivo Brandt is a boatbuilder from Corrowick."),
    ("Greta Holm trains the guides. Every guide must shadow her on three tours.",
     "Every guide must shadow Greta Holm on three tours."),
    ("Marta Vell died in 2009. The bench carries her name.", "The bench carries Marta Vell's name."),
    ("Tomas Ruud keeps the accounts. His report goes out in March.", "Tomas Ruud's report goes out in March."),
    ("The boathouse at Pell Creek was built in 1931. Its roof was mended in 1990.",
     "The boathouse at Pell Creek's roof was mended in 1990."),
    ("The Harbour Rowing Club has 80 members. Every April the club elects a captain.",
     "Every April the Harbour Rowing Club elects a captain."),
])
def test_pronouns_and_short_references_become_the_name(text: str, expected: str) -> None:
    assert expected in lines_of(text)


def test_pronouns_follow_a_person_not_a_place() -> None:
    lines = lines_of("Last year the club bought a boat that Piet Moll built at Lake Orrin. He builds boats in Pell.")
    assert "Piet Moll builds boats in Pell." in lines


def test_text_that_is_not_english_is_left_as_written_and_said_so() -> None:
    docs = [("verein.md", "# Der Ruderverein\n\nAnna Berg ist die Kassenwartin des Vereins. Sie wohnt in Pell "
             "und rudert seit 1990 mit dem Verein auf dem See.")]
    views = build_views(docs, DEFAULT_VIEWS, seed=0)
    assert views.facts.language == "other"
    assert "questions" not in views.counts() and views.counts()["reversed"] >= 1
    assert "not in English" in views.note and "question warm-up" in views.note
    assert views.held_out == []
    assert any("Sie wohnt" in line.text for line in views.facts.lines)  # no English pronoun rules applied


def test_reversal_keeps_names_numbers_and_dates_whole() -> None:
    line = fact_lines([("a.md", "The sale of Skellan Point was signed on 14 October 1983 for £4,800 by Marta "
                        "Vell and Ivo Brandt.")]).lines[0]
    reversed_text = reverse_words(line)
    for span in ("Skellan Point", "14 October 1983", "£4,800", "Marta Vell", "Ivo Brandt"):
        assert span in reversed_text
    assert reversed_text.startswith("Ivo Brandt and Marta Vell by £4,800 for 14 October 1983 on")


def test_templates_restate_common_relation_shapes_object_first() -> None:
    facts = fact_lines([("people.txt", "Who is who\n\nTreasurer: Tomas Ruud keeps the accounts.\n"
                         "Ivo Brandt is a boatbuilder from Corrowick.\n"
                         "The lighthouse at Skellan Point was built in 1874 by the harbour board of Corrowick.\n"
                         "Anna Berg trains the new rowers every Saturday.")])
    texts = [r.text for line in facts.lines for r in restatements(line)]
    assert "The treasurer is Tomas Ruud." in texts
    assert "The person who keeps the accounts is Tomas Ruud." in texts
    assert "A boatbuilder from Corrowick is Ivo Brandt." in texts
    assert "The harbour board of Corrowick built the lighthouse at Skellan Point in 1874." in texts
    assert "In 1874, the lighthouse at Skellan Point was built by the harbour board of Corrowick." in texts
    assert "The person who trains the new rowers every Saturday is Anna Berg." in texts


def test_a_year_of_a_side_clause_is_not_moved_to_the_front() -> None:
    facts = fact_lines([("a.md", "Nobody may touch the lens, which was ground in Paris in 1873.")])
    assert not any(r.text.startswith("In 1873") for r in restatements(facts.lines[0]))


def test_questions_ask_for_one_span_of_the_line() -> None:
    facts = fact_lines([("a.md", "Ivo Brandt chairs the board of the cooperative.\n"
                         "The tower closes when the wind passes 40 knots.")])
    first, second = facts.lines
    name = next(s for s in first.spans if s.text == "Ivo Brandt")
    assert question_for(first, name) == "Who chairs the board of the cooperative?"
    knots = next(s for s in second.spans if s.text == "40")
    assert question_for(second, knots) == "The tower closes when the wind passes how many knots?"


def test_views_are_the_same_for_a_seed_and_differ_across_seeds() -> None:
    a = build_views(handbook(), DEFAULT_VIEWS, seed=3)
    b = build_views(handbook(), DEFAULT_VIEWS, seed=3)
    c = build_views(handbook(), DEFAULT_VIEWS, seed=4)
    assert a.items == b.items and [p.prefix for p in a.held_out] == [p.prefix for p in b.held_out]
    assert a.items != c.items


def test_every_view_is_made_and_questions_come_first() -> None:
    views = build_views(handbook(), DEFAULT_VIEWS, seed=0)
    counts = views.counts()
    assert set(counts) == set(DEFAULT_VIEWS) - {"replay"}  # replay: the base model's texts, written in the job
    assert counts["shuffled"] >= 2 * counts["facts"]  # several shuffled copies of a small set
    assert views.items[0].view == "questions"
    masked = next(i for i in views.items if i.view == "masked")
    assert "____" in masked.prompt and "____" not in masked.text


def test_held_out_restatements_never_appear_in_the_training_text() -> None:
    views = build_views(handbook(), DEFAULT_VIEWS, seed=0)
    assert len(views.held_out) >= 5
    training = "\n".join(i.prompt + i.text for i in views.items).casefold()
    for probe in views.held_out:
        stem = probe.prefix.strip().casefold()
        assert stem not in training, stem
        assert probe.choices[probe.answer_index] == probe.answer
        assert probe.answer.casefold() in training  # the fact itself is trained, in its own words
        # Every distractor is another name of the same documents.
        for choice in probe.choices:
            assert choice.casefold() in "\n".join(t for _, t in handbook()).casefold()


def test_no_packed_row_holds_two_views_of_one_fact() -> None:
    views = build_views(handbook(), DEFAULT_VIEWS, seed=0)
    # Token counts as a whitespace tokenizer would give: the rule is the packer's, whatever the tokenizer.
    units = [[Encoded(list(range(len((i.prompt + i.text).split()) + 2)), [True] * (len((i.prompt + i.text).split()) + 2))]
             for i in views.items]
    keys = [i.facts for i in views.items]
    rows = pack(units, 160, pad_id=0, seed=0, keys=keys)
    assert len(rows) < len(units)  # it still packs several items per row
    for segments in rows.segments:
        facts: list[int] = []
        for unit in {s for s in segments if s >= 0}:
            facts.extend(keys[unit])
        assert len(facts) == len(set(facts))
    without = pack(units, 160, pad_id=0, seed=0)
    clashes = sum(1 for seg in without.segments
                  if len(f := [k for u in {s for s in seg if s >= 0} for k in keys[u]]) != len(set(f)))
    assert clashes > 0  # without the rule, the same packing would put views of one fact together


def test_view_names_are_parsed_and_unknown_ones_refused() -> None:
    assert parse_views(None) == list(DEFAULT_VIEWS)
    assert parse_views(["none"]) == []
    assert parse_views(["masked,facts"]) == ["facts", "masked"]
    assert parse_views("masked, facts") == ["facts", "masked"] and parse_views("none") == []  # a spec's string
    with pytest.raises(DatasetError, match="Unknown view paraphrase"):
        parse_views(["facts,paraphrase"])


def test_replay_texts_join_the_views_without_facts() -> None:
    views = build_views(handbook(), DEFAULT_VIEWS, seed=0, replay=["The river flows through the valley and on."])
    replay = [i for i in views.items if i.view == "replay"]
    assert [i.text for i in replay] == ["The river flows through the valley and on."] and replay[0].facts == frozenset()


def test_reading_items_ask_after_a_passage_that_holds_the_answer() -> None:
    assert "reading" not in DEFAULT_VIEWS  # measured to cost more than it gives; --views reading asks for it
    views = build_views(handbook(), [*DEFAULT_VIEWS, "reading"], seed=0)
    reading = [i for i in views.items if i.view == "reading"]
    assert len(reading) >= 10
    for item in reading:
        header, rest = item.prompt.split("\n", 1)
        assert header.startswith("[1] ") and header[4:] in {Path(p).name for p, _ in handbook()}
        answer = item.text.strip().rstrip(".")
        passage, question = rest.rsplit("\n\n", 1)
        assert answer in passage  # the passage answers it: the model learns to read, not to recall
        assert answer not in question
    held = {p.sentence for p in views.held_out}
    assert not any(i.prompt.rsplit("\n\n", 1)[1] + i.text.rstrip(".") + "." in held for i in reading)


def test_a_pronoun_means_the_sentences_first_person_not_a_place_named_after_them() -> None:
    lines = lines_of("Dr. Hanne Corvell, the only doctor in the village of Lisk Mawr, called a meeting. She asked "
                     "for volunteers. A forester from Lisk Mawr joined.")
    assert "Hanne Corvell asked for volunteers." in lines


def test_the_base_gguf_writes_its_replay_text_in_llama_cpp_the_same_for_a_seed(starter_model: Path) -> None:
    from core.finetune.data.views.replay import OPENINGS, write_replay_gguf

    first = write_replay_gguf(str(starter_model), seed=3)
    assert first == write_replay_gguf(str(starter_model), seed=3)
    assert first != write_replay_gguf(str(starter_model), seed=4)
    assert len(first) >= len(OPENINGS) // 2
    # Each sample is its opening carried on in the model's own words.
    assert all(any(t.startswith(o) and len(t) > len(o) + 20 for o in OPENINGS) for t in first)


class _WordTokenizer:
    """One token per word (ids by first appearance), a BOS of id 1: enough to count what an item keeps."""

    bos_token, eos_token, bos_token_id, eos_token_id, add_bos_token = "<bos>", "<eos>", 1, 2, True

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [self.vocab.setdefault(w, 3 + len(self.vocab)) for w in text.split()]}


def test_an_item_too_long_for_its_row_keeps_the_end_of_its_context() -> None:
    """A reading item whose passage does not fit keeps the question and the passage's tail, not the bare answer."""
    from core.finetune.data.formatting import ExampleEncoder
    from core.finetune.data.views import Item
    from core.finetune.dataset import MIN_CONTEXT_TOKENS, _encode_item

    tokenizer = _WordTokenizer()
    encoder = ExampleEncoder(tokenizer, None)  # type: ignore[arg-type]  # plain text only: no chat format
    passage = " ".join(f"p{i}" for i in range(60))
    item = Item("reading", " Marta Vell.", frozenset({0}), prompt=f"[1] history.md {passage} The retired teacher was")
    encoded = _encode_item(item, encoder, 40)
    assert encoded is not None and len(encoded.ids) == 40 and encoded.ids[0] == 1
    words = {v: k for k, v in tokenizer.vocab.items()}
    kept = [words[i] for i in encoded.ids[1:]]
    assert kept[-2:] == ["Marta", "Vell."] and kept[-6:-2] == ["The", "retired", "teacher", "was"]
    assert [words[i] for i, t in zip(encoded.ids, encoded.trained, strict=True) if t] == ["Marta", "Vell."]
    # With no room for a useful context, the item trains its own text alone (as a long fact line does).
    short = _encode_item(item, encoder, MIN_CONTEXT_TOKENS + 2)
    assert short is not None and [words[i] for i in short.ids[1:]] == ["Marta", "Vell."]
