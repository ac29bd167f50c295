"""Documents, JSONL readers, chat-format loss masks and packing (no torch needed except the tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.engine.templates import choose_format
from core.errors import DatasetError
from core.finetune.data.documents import chunk_documents, clean_text, load_documents
from core.finetune.data.formatting import Encoded, assistant_spans
from core.finetune.data.jsonl import Conversation, Preference, Text, read_jsonl
from core.finetune.data.packing import IGNORE, pack, split_held_out


def _minimal_pdf(text: str) -> bytes:
    """A one-page PDF with a text layer (PDF 1.4 object syntax; xref offsets computed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return out


def test_documents_of_every_type_are_read_and_bad_ones_reported(tmp_path: Path) -> None:
    import docx

    (tmp_path / "a.txt").write_text("Hearth keeps   models on your own machine.\r\nNothing leaves it.", encoding="utf-8")
    (tmp_path / "b.md").write_text("# Title\n\nMarkdown text about fine-tuning adapters.", encoding="utf-8")
    (tmp_path / "c.html").write_text("<html><script>var x=1;</script><body><p>Paris is the capital of France.</p></body></html>")
    document = docx.Document()
    document.add_paragraph("A Word document about the blue sky and its color.")
    document.save(str(tmp_path / "d.docx"))
    (tmp_path / "e.pdf").write_bytes(_minimal_pdf("A PDF page about llamas and their wool."))
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n")
    docs, skipped = load_documents([tmp_path])
    texts = {Path(d.path).name: d.text for d in docs}
    assert set(texts) == {"a.txt", "b.md", "c.html", "d.docx", "e.pdf"}
    assert texts["a.txt"] == "Hearth keeps models on your own machine.\nNothing leaves it."
    assert "var x" not in texts["c.html"] and "Paris is the capital" in texts["c.html"]
    assert "blue sky" in texts["d.docx"]
    assert "llamas" in texts["e.pdf"]
    reasons = {Path(s.path).name: s.reason for s in skipped}
    assert set(reasons) == {"empty.txt", "broken.pdf", "image.png"}
    assert "no text" in reasons["empty.txt"] and "unsupported" in reasons["image.png"]


def test_no_usable_documents_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty.md").write_text("   \n")
    with pytest.raises(DatasetError, match="No usable documents"):
        load_documents([tmp_path])
    with pytest.raises(DatasetError, match="does not exist"):
        load_documents([tmp_path / "missing"])


def test_clean_text_joins_hyphenated_words_and_drops_controls() -> None:
    assert clean_text("fine-\ntuning\x00 is\t\tfun\n\n\n\nend") == "finetuning is fun\n\nend"


def test_chunks_overlap_by_the_asked_number_of_tokens() -> None:
    from core.finetune.data.documents import Document

    words = [f"w{i}" for i in range(100)]
    chunks = chunk_documents([Document("x", " ".join(words))], str.split, " ".join, size=30, overlap=10)
    assert [len(c.ids) for c in chunks] == [*[30, 30, 30, 30, 30][:len(chunks) - 1], len(chunks[-1].ids)]
    assert chunks[0].ids[-10:] == chunks[1].ids[:10]
    assert chunks[-1].ids[-1] == "w99"


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows), encoding="utf-8")
    return path


def test_jsonl_reads_every_common_shape(tmp_path: Path) -> None:
    data = read_jsonl(_write(tmp_path / "d.jsonl", [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello"}]},
        {"conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}]},
        {"instruction": "Translate", "input": "chat", "output": "cat"},
        {"text": "Raw text for pre-training."},
        {"prompt": "Pick", "chosen": "good", "rejected": "bad"},
        "",
    ]))
    kinds = [type(e) for e in data.examples]
    assert kinds == [Conversation, Conversation, Conversation, Text, Preference]
    assert data.kinds == {"chat": 1, "sharegpt": 1, "alpaca": 1, "text": 1, "preference": 1}
    alpaca = data.examples[2]
    assert isinstance(alpaca, Conversation) and alpaca.messages[0]["content"] == "Translate\n\nchat"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("{not json", "line 2: not valid JSON"),
        ('["a", "list"]', "line 2: expected a JSON object"),
        ('{"foo": 1}', "line 2: unknown row shape"),
        ('{"messages": [{"role": "user", "content": "only a question"}]}', "line 2: the conversation has no assistant"),
        ('{"messages": [{"role": "wizard", "content": "x"}]}', "line 2: message 1 has unknown role"),
        ('{"prompt": "p", "chosen": "same", "rejected": "same"}', "line 2: 'chosen' and 'rejected' are the same"),
        ('{"text": ""}', "line 2: 'text' is empty"),
    ],
)
def test_malformed_rows_name_their_line(tmp_path: Path, row: str, message: str) -> None:
    path = _write(tmp_path / "bad.jsonl", [{"text": "fine"}, row])
    with pytest.raises(DatasetError, match=message):
        read_jsonl(path)


def test_empty_dataset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="has no rows"):
        read_jsonl(_write(tmp_path / "empty.jsonl", ["", "  "]))


def test_assistant_spans_cover_answers_and_end_of_turn_only() -> None:
    fmt = choose_format("gemma3", None)
    messages = [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."},
                {"role": "user", "content": "And Italy?"}, {"role": "assistant", "content": "Rome."}]
    text, spans = assistant_spans(fmt, messages, bos="<bos>", eos="<eos>")
    assert [text[a:b] for a, b in spans] == ["Paris.<end_of_turn>\n", "Rome.<end_of_turn>\n"]
    assert text.startswith("<bos><start_of_turn>user\nCapital of France?<end_of_turn>\n<start_of_turn>model\n")


def test_plain_format_ends_answers_with_eos() -> None:
    fmt = choose_format("llama", None)
    text, spans = assistant_spans(fmt, [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
                                  bos="<s>", eos="</s>")
    assert [text[a:b] for a, b in spans] == ["A</s>"]


def test_packing_keeps_examples_apart_and_shifts_targets_per_example() -> None:
    a = Encoded([1, 10, 11, 12], [False, False, True, True])
    b = Encoded([1, 20, 21], [False, True, True])
    c = Encoded([1, 30, 31, 32, 33, 34], [False, True, True, True, True, True])
    rows = pack([[a], [b], [c]], 10, pad_id=0)
    assert len(rows) == 2  # c+a (10 tokens) and b (3 + padding)
    assert rows.n_tokens == 13 and rows.n_trained == 2 + 2 + 5
    for ids, tgt, pos, seg in zip(rows.input_ids, rows.targets, rows.positions, rows.segments, strict=True):
        assert len(ids) == len(tgt) == len(pos) == len(seg) == 10
        for j in range(10):
            if tgt[j] != IGNORE:
                assert seg[j] == seg[j + 1] and tgt[j] == ids[j + 1]  # never across an example boundary
            if j and seg[j] != seg[j - 1]:
                assert pos[j] == 0
    flat = {tuple(t for t in tgt if t != IGNORE) for tgt in rows.targets}
    assert (30, 31, 32, 33, 34, 11, 12) in flat and (20, 21) in flat


def test_held_out_split_is_small_but_never_empty() -> None:
    train, held = split_held_out(100)
    assert len(held) == 5 and len(train) == 95 and not set(train) & set(held)
    assert [len(x) for x in split_held_out(3)] == [2, 1]
    assert [len(x) for x in split_held_out(12)] == [10, 2]


def test_synthetic_pairs_are_parsed_and_filtered() -> None:
    from core.finetune.data.synthetic import filter_pairs, parse_pairs

    reply = ("Q: What is the capital of France?\nA: Paris.\n\nQ: What is the capital of France ?\nA: Paris again.\n"
             "Q: Empty one?\nA: \nQ: Long?\nA: " + "word " * 400 + "\nQ: Color of the sky?\nA: Blue.")
    pairs = parse_pairs(reply)
    assert pairs[0] == ("What is the capital of France?", "Paris.")
    kept, dropped = filter_pairs(pairs)
    assert [c.messages[1]["content"] for c in kept] == ["Paris.", "Blue."]
    assert dropped == {"empty": 1, "duplicate": 1, "long": 1, "ungrounded": 0}


def test_answers_the_chunk_does_not_bear_out_are_dropped() -> None:
    from core.finetune.data.synthetic import filter_pairs, grounded

    chunk = "In 1981 a retired schoolteacher named Marta Vell gathered eleven neighbours. The sale cost £4,800."
    assert grounded("Marta Vell.", chunk) and grounded("It cost £4,800", chunk)
    assert grounded("A retired schoolteacher, in 1981.", chunk)
    # What SmolLM2-135M-Instruct wrote about the handbook: made up, or no answer at all.
    assert not grounded("The recent news involves a donation to support their ongoing efforts in repairing homes.", chunk)
    assert not grounded("A: The answer is: 2", chunk)
    assert not grounded("It is.", chunk)  # nothing but stop-words
    pairs = [("Who gathered the neighbours?", "Marta Vell"), ("What's new?", "A donation for repairing homes."),
             ("How much was the sale?", "£4,800")]
    kept, dropped = filter_pairs(pairs, sources=[chunk] * 3)
    assert [c.messages[1]["content"] for c in kept] == ["Marta Vell", "£4,800"]
    assert dropped["ungrounded"] == 1


def test_synthetic_qa_with_a_model_that_writes_nothing_useful_is_a_clear_error(tiny_model: Path) -> None:
    from core.finetune.data.documents import Chunk
    from core.finetune.data.synthetic import generate_qa

    with pytest.raises(DatasetError, match="no usable question"):
        generate_qa([Chunk("x", "The sky is blue.", (1, 2, 3))], str(tiny_model), per_chunk=1, max_tokens=8, n_ctx=256)


QA_SCRIPT = ["Q: What colour is the sky?\n", "A: Blue.\n", "Q: What is grass?\n", "A: Green.\n"]


def test_synthetic_qa_through_the_engine_keeps_each_pair_once(tmp_path: Path) -> None:
    from core.finetune.data.documents import Chunk
    from core.finetune.data.synthetic import generate_qa
    from tests.fixtures.scripted_model import write_scripted_chat_llama

    # The model answers every chunk with the script, repeated: 2 chunks x 3 rounds of 2 pairs.
    model = write_scripted_chat_llama(tmp_path / "scripted.gguf", QA_SCRIPT)
    # Each chunk states both facts: an answer its chunk does not say would be dropped as made up.
    chunks = [Chunk("a.md", "The sky is blue. Grass is green.", (1, 2)),
              Chunk("b.md", "Grass is green and the sky is blue.", (3, 4))]
    seen: list[tuple[int, int]] = []
    report = generate_qa(chunks, str(model), per_chunk=2, max_tokens=12, n_ctx=512,
                         on_chunk=lambda n, total: seen.append((n, total)))
    assert seen == [(1, 2), (2, 2)]
    assert report.generated == 12 and report.dropped_duplicate == 10 and report.dropped_ungrounded == 0
    assert [c.messages for c in report.pairs] == [
        [{"role": "user", "content": "What colour is the sky?"}, {"role": "assistant", "content": "Blue."}],
        [{"role": "user", "content": "What is grass?"}, {"role": "assistant", "content": "Green."}],
    ]
