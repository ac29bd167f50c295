"""The writer view: a local instruct model restates fact lines; the guard keeps only faithful restatements."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.finetune.data.probes import salient_spans
from core.finetune.data.views.written import (
    WriterReport,
    check_restatement,
    clean_reply,
    prompts_for,
    write_restatements,
)
from tests.fixtures.tool_model import write_scripted_turn_llama

LINE = "Today the cooperative has about 240 members and is run by a board of seven people elected every April."
SALE = "The sale was signed on 14 October 1983 for a price of £4,800, raised by a swim across Lake Orrin."


def test_salient_spans_are_the_names_numbers_years_and_dates_in_reading_order() -> None:
    assert salient_spans(SALE) == [("date", "14 October 1983"), ("number", "£4,800"), ("name", "Lake Orrin")]
    assert salient_spans("In 1981 Marta Vell moved to Corrowick with 11 neighbours.") == [
        ("year", "1981"), ("name", "Marta Vell"), ("name", "Corrowick"), ("number", "11"),
    ]


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (LINE, "A board of seven people, elected each April, runs the cooperative, which today has about 240 members."),
        (LINE, "Every April the cooperative's roughly 240 members elect a board of 7 people to run it."),
        (SALE, "Lake Orrin saw a sponsored swim that raised the £4,800 paid when the sale was signed on 14 October 1983."),
        # a date reworded, a sum written out in words around its digits
        (SALE, "On October 14th, 1983 the sale was signed for 4800 pounds, money a swim across Lake Orrin raised."),
    ],
)
def test_the_guard_keeps_a_restatement_with_every_fact_of_its_line(line: str, text: str) -> None:
    assert check_restatement(line, text) is None


@pytest.mark.parametrize(
    ("line", "text", "why"),
    [
        (SALE, "The sale was signed on 14 October 1983 for £4,800, raised by a swim in the lake.", "lost 'Lake Orrin'"),
        (SALE, "A swim across Lake Orrin raised £4,800 for the sale, signed in October 1983.", "lost '14 October 1983'"),
        (SALE, "A swim across Lake Orrin raised £4,900 for the sale, signed on 14 October 1983.", "lost '£4,800'"),
        (LINE, "Each April the 240 members elect a board of six people to run the cooperative.", "lost 'seven'"),
        (LINE, "About 240 members elect a board of seven people to run the cooperative every year.", "lost 'April'"),
        (LINE, "Since 1962 a board of seven people, elected each April, has run the 240-member cooperative.",
         "added '1962'"),
        (LINE, "Ivo Brandt chairs the board of seven people that the 240 members elect every April.",
         "added 'Ivo Brandt'"),
        (LINE, "Today the cooperative has about 240 members and is run by a board of seven people chosen every April.",
         "a copy of the line"),
        ("Marta Vell died in 2009 at the age of 88.", "Marta Vell died on 2009-09-20, aged 88.",
         "added '2009-09-20'"),
        # the names kept, what is said of them lost (SmolLM2-135M wrote these for the handbook)
        ("Members should write to Lena Okafor about anything to do with keys.",
         "Lena Okafor, a dedicated and dedicated member.", "left out most of the line"),
        ("Head guide: Greta Holm trains the new guides.", "Head: Greta Holm", "left out most of the line"),
        ("Marta Vell died in 2009 at the age of 88.",
         "Rewrite this sentence in other words: Marta Vell died in 2009 at the age of 88 years.",
         "an echo of the request"),
        (LINE, "Yes.", "empty"),
        (LINE, "Every April, " + "a board of seven people and about 240 members, " * 8, "too long"),
    ],
)
def test_the_guard_drops_a_restatement_that_loses_or_adds_a_fact_or_copies(line: str, text: str, why: str) -> None:
    assert check_restatement(line, text) == why


def test_a_reply_is_cleaned_of_labels_preambles_and_quotes() -> None:
    assert clean_reply('Sure! Here is the sentence rewritten:\n\n"The board meets in April."\n') == (
        "The board meets in April."
    )
    assert clean_reply("Rewritten sentence: The board meets in April.\nI hope this helps!") == "The board meets in April."
    assert clean_reply("**The board meets in April.**") == "The board meets in April."
    assert clean_reply('The sentence is: "The board meets in April."') == "The board meets in April."
    assert clean_reply("   \n") == ""


def test_the_second_request_starts_from_the_lines_last_fact() -> None:
    first, second = prompts_for(SALE, 2)
    assert "begins with" not in first and SALE in first
    assert 'begins with "Lake Orrin"' in second and SALE in second


def test_the_summary_has_the_contracts_keys_and_five_examples() -> None:
    report = WriterReport(kept=[("a", "b")], generated=9, lines=4,
                          dropped=[{"line": "l", "text": f"t{i}", "why": "lost 'X'"} for i in range(8)])
    summary = report.to_summary("writer")
    assert summary == {"model": "writer", "lines": 4, "generated": 9, "kept": 1, "dropped": 8,
                       "dropped_examples": report.dropped[:5]}
    assert report.dropped_by_reason() == {"lost": 8}


# The scripted writer answers every request with this sentence (tests/fixtures/tool_model.py; " the" is a
# word of its vocabulary already, so "his"), so each line
# below meets the guard differently: the same real llama.cpp output, judged against four lines.
RESTATED = ["In", " 1962", " Ivo", " Brandt", " built", " his", " boat", " at", " Corrowick", "."]
LINES = {
    "Ivo Brandt built the boat in 1962 at Corrowick.": None,
    "Ivo Brandt and Abel Tamsin built the boat in 1962 at Corrowick.": "lost 'Abel Tamsin'",
    "Ivo Brandt built the boat at Corrowick.": "added '1962'",
    "In 1962 Ivo Brandt built his boat at Corrowick.": "a copy of the line",
}


@pytest.fixture(scope="module")
def scripted_writer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_scripted_turn_llama(tmp_path_factory.mktemp("writer") / "writer.gguf", RESTATED,
                                     name="scripted-writer")


def test_a_writer_run_through_the_engine_keeps_and_drops_by_the_guard(scripted_writer: Path) -> None:
    progress: list[tuple[int, int]] = []
    report = write_restatements(list(LINES), str(scripted_writer), per_line=2, on_progress=lambda *a: progress.append(a))
    text = "".join(RESTATED)
    assert report.generated == 8 and report.lines == 4
    assert report.kept == [("Ivo Brandt built the boat in 1962 at Corrowick.", text)]
    whys = [(d["line"], d["why"]) for d in report.dropped]
    # The line's second request gets the same sentence again: a repeat is not kept twice.
    assert whys[0] == ("Ivo Brandt built the boat in 1962 at Corrowick.", "a repeat")
    for line, why in LINES.items():
        if why is not None:
            assert whys.count((line, why)) == 2
    assert all(d["text"] == text for d in report.dropped)
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert report.to_summary("scripted-writer")["dropped"] == 7


def test_a_writer_must_be_a_chat_model_and_is_found_by_path(scripted_writer: Path, starter_model: Path) -> None:
    from core.errors import InvalidModelError
    from core.finetune.data.views.written import resolve_writer

    assert resolve_writer(str(scripted_writer)) == (str(scripted_writer), "writer")
    with pytest.raises(InvalidModelError, match="not a chat \\(instruct\\) model"):
        resolve_writer(str(starter_model))


def _cli_spec(base: Path, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """``hearth finetune BASE FLAGS...`` as the CLI turns it into a spec (a notes folder at ``NOTES``)."""
    import argparse

    from core.cli import cmd_finetune

    notes = tmp_path / "notes"
    notes.mkdir(exist_ok=True)
    (notes / "a.md").write_text("Ivo Brandt built the boat in 1962 at Corrowick.\n" * 20)
    parser = argparse.ArgumentParser()
    cmd_finetune.register(parser.add_subparsers())

    def spec(*flags: str) -> dict[str, Any]:
        flags = tuple(str(notes) if f == "NOTES" else f for f in flags)
        return dict(cmd_finetune.build_spec(parser.parse_args(["finetune", str(base), *flags])))

    return spec


def test_the_cli_puts_the_writer_in_the_spec_and_refuses_it_without_documents(
    scripted_writer: Path, tmp_path: Path
) -> None:
    from core.errors import TrainingError

    spec = _cli_spec(scripted_writer, tmp_path)
    assert spec("--docs", "NOTES", "--writer", "my-writer")["writer"] == "my-writer"
    with pytest.raises(TrainingError, match="--writer rewrites documents"):
        spec("--data", str(tmp_path / "d.jsonl"), "--writer", "w")


def test_the_cli_chooses_the_views_and_refuses_unknown_ones_or_views_without_documents(
    scripted_writer: Path, tmp_path: Path
) -> None:
    from core.errors import TrainingError

    spec = _cli_spec(scripted_writer, tmp_path)
    assert spec("--docs", "NOTES")["views"] is None  # the default set
    assert spec("--docs", "NOTES", "--views", "facts,masked", "--out", "a")["views"] == "facts,masked"
    assert spec("--docs", "NOTES", "--views", "none", "--out", "b")["views"] == "none"
    with pytest.raises(TrainingError, match="Unknown --views name paraphrase: use facts, shuffled"):
        spec("--docs", "NOTES", "--views", "facts,paraphrase", "--out", "c")
    with pytest.raises(TrainingError, match="--views rewrites documents"):
        spec("--data", str(tmp_path / "d.jsonl"), "--views", "facts", "--out", "d")
