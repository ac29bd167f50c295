"""From a job's data settings to packed training and held-out rows (and prompts for sample generations)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.errors import DatasetError
from core.finetune.data.documents import Document, Skipped, chunk_documents, load_documents
from core.finetune.data.formatting import Encoded, ExampleEncoder
from core.finetune.data.jsonl import Conversation, Dataset, Example, Preference, Text, read_jsonl
from core.finetune.data.packing import PackedRows, concat, pack, split_held_out, truncate
from core.finetune.data.views import Item, ViewSet, build_views, parse_views, phase_of
from core.finetune.spec import FinetuneSpec


@dataclass
class Sources:
    """The data read from disk, before tokenization (cheap: done before the model loads)."""

    objective: str
    documents: list[Document] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    dataset: Dataset | None = None


@dataclass
class PreparedData:
    train: PackedRows
    held_out: PackedRows
    samples: list[dict[str, Any]]
    summary: dict[str, Any]
    probes: list[Any] = field(default_factory=list)  # core.finetune.data.probes.Probe: the knowledge check
    restated: list[Any] = field(default_factory=list)  # Probe: asked in other words, kept out of training


def read_sources(spec: FinetuneSpec) -> Sources:
    """Read documents or the JSONL file and settle the objective; ``DatasetError`` on unusable data."""
    if spec.docs:
        docs, skipped = load_documents(spec.docs)
        objective = spec.objective or ("sft" if spec.qa_model else "pretrain")
        if objective == "sft" and not spec.qa_model:
            raise DatasetError(
                "Documents train with --objective pretrain, or with sft when --qa-model MODEL writes "
                "question-answer pairs from them."
            )
        return Sources(objective, docs, skipped)
    assert spec.data is not None
    dataset = read_jsonl(spec.data)
    kinds = {type(e) for e in dataset.examples}
    if spec.objective is None:
        objective = "dpo" if Preference in kinds else "pretrain" if kinds == {Text} else "sft"
    else:
        objective = spec.objective
    wanted: dict[str, tuple[type, ...]] = {"dpo": (Preference,), "sft": (Conversation,), "pretrain": (Text, Conversation)}
    usable = [e for e in dataset.examples if isinstance(e, wanted[objective])]
    if not usable:
        have = ", ".join(sorted(dataset.kinds)) or "none"
        need = {"dpo": "prompt/chosen/rejected rows", "sft": "conversations (messages, conversations, or "
                "instruction/output)", "pretrain": "text rows"}[objective]
        raise DatasetError(f"{spec.data} has no rows usable for {objective} (it has: {have}); {objective} needs {need}.")
    dataset.skipped = [f"{len(dataset.examples) - len(usable)} rows of another kind"] if len(usable) < len(dataset.examples) else []
    dataset.examples = usable
    return Sources(objective, dataset=dataset)


EVAL_ROWS = 4  # rows of the documents' own text measured for the loss figure (a sample of the training rows)
KNOWLEDGE_PROBES = 24  # fill-in-the-blank items of the knowledge check


def build(
    sources: Sources, spec: FinetuneSpec, encoder: ExampleEncoder, *, seq_len: int, pad_id: int, packing: bool,
    progress: Callable[[str], None] = lambda _m: None, replay: Callable[[], list[str]] | None = None,
) -> PreparedData:
    """Tokenize, split off the held-out part (datasets only: documents are all trained), and pack.

    ``replay``: writes the base model's own texts for the documents' ``replay`` view (called only if used)."""
    if sources.dataset is None:
        return _build_documents(sources, spec, encoder, seq_len=seq_len, pad_id=pad_id, packing=packing,
                                progress=progress, replay=replay)
    summary: dict[str, Any] = {"objective": sources.objective}
    examples: list[Example] = list(sources.dataset.examples)
    summary.update(data=spec.data, kinds=sources.dataset.kinds, skipped=sources.dataset.skipped)
    if len(examples) < 2:
        raise DatasetError("The data has fewer than 2 usable examples: add more text or rows.")
    train_idx, held_idx = split_held_out(len(examples), fraction=spec.eval_fraction, seed=spec.seed)
    dropped = [0]
    train_units = _units([examples[i] for i in train_idx], sources.objective, encoder, seq_len, dropped)
    held_units = _units([examples[i] for i in held_idx], sources.objective, encoder, seq_len, dropped)
    if not train_units:
        raise DatasetError("No example has anything to learn after tokenization (answers empty or cut off): "
                           "raise --seq-len or shorten the prompts.")
    if not held_units:
        held_units = train_units[:1]  # tiny sets: evaluate on a training example rather than on nothing
    train = pack(train_units, seq_len, pad_id=pad_id, packing=packing, seed=spec.seed)
    held = pack(held_units, seq_len, pad_id=pad_id, packing=packing, seed=spec.seed)
    summary.update(train_examples=len(train_idx), held_out_examples=len(held_idx), train_rows=len(train),
                   held_out_rows=len(held), train_tokens=train.n_tokens, trained_tokens=train.n_trained,
                   dropped_too_long=dropped[0], packing_efficiency=round(train.n_tokens / max(1, len(train) * seq_len), 3))
    samples = [_sample(examples[i], sources.objective, encoder) for i in held_idx[: spec.samples]]
    return PreparedData(train, held, [s for s in samples if s], summary)


def _build_documents(
    sources: Sources, spec: FinetuneSpec, encoder: ExampleEncoder, *, seq_len: int, pad_id: int, packing: bool,
    progress: Callable[[str], None], replay: Callable[[], list[str]] | None = None,
) -> PreparedData:
    """Documents: every chunk is trained (a withheld document's facts could never be learned).

    The loss figure is measured on a sample of the training rows themselves ("how well the model
    predicts your documents' text"), and what was learned is measured by the knowledge check: fill-in-
    the-blank probes built from the documents' own sentences (``core.finetune.data.probes``). With a
    question-answer model the generated pairs are trained after the text in every epoch.
    """
    from core.finetune.data.probes import build_probes

    summary: dict[str, Any] = {"objective": sources.objective}
    chunk_size = seq_len - 2
    chunks = chunk_documents(sources.documents, encoder.encode_text, encoder.decode,
                             size=chunk_size, overlap=min(spec.chunk_overlap, chunk_size // 8))
    summary.update(documents=[d.path for d in sources.documents], chunks=len(chunks),
                   skipped=[{"path": s.path, "reason": s.reason} for s in sources.skipped])
    dropped = [0]
    text_units = _units([Text(c.text) for c in chunks], "pretrain", encoder, seq_len, dropped)
    if not text_units:
        raise DatasetError("The documents give no text to learn after tokenization: add documents with more text.")
    parts = [pack(text_units, seq_len, pad_id=pad_id, packing=packing, seed=spec.seed)]
    held_out: list[Any] = []
    names = parse_views(spec.views)
    if names or spec.writer:
        progress("rewriting the documents into knowledge views")
        own: list[str] = []
        if "replay" in names and replay is not None:
            progress("writing a little of the base model's own text to train beside the documents")
            own = replay()
        views = build_views([(d.path, d.text) for d in sources.documents], names, seed=spec.seed,
                            row_chars=max(120, (seq_len - 8) * 3), tokens=sum(len(u[0]) for u in text_units),
                            replay=own)
        if spec.writer:
            views.items.extend(_written_items(views, str(spec.writer), spec.seed, summary, progress))
        parts, view_summary = _view_parts(views, encoder, seq_len, pad_id, packing, spec.seed,
                                          keep_text="facts" not in names, text_part=parts[0])
        held_out = views.held_out
        summary.update(view_summary)
    if spec.qa_model:
        from core.finetune.data.synthetic import generate_qa

        qa_chunks = chunks if chunk_size <= 512 else chunk_documents(
            sources.documents, encoder.encode_text, encoder.decode, size=510, overlap=64)
        progress(f"writing questions and answers from {len(qa_chunks)} chunks with {spec.qa_model}")
        report = generate_qa(qa_chunks, _model_path(str(spec.qa_model)), per_chunk=spec.qa_per_chunk,
                             on_chunk=lambda n, total: progress(f"writing questions and answers with {spec.qa_model}: "
                                                                f"{n} of {total} chunks done"))
        summary["synthetic_qa"] = {"model": spec.qa_model, "generated": report.generated, "kept": len(report.pairs),
                                   "dropped_empty": report.dropped_empty,
                                   "dropped_duplicate": report.dropped_duplicate, "dropped_long": report.dropped_long,
                                   "dropped_ungrounded": report.dropped_ungrounded,
                                   "examples": [p.messages for p in report.pairs[:5]]}
        qa_units = _units(list(report.pairs), "sft", encoder, seq_len, dropped)
        if qa_units:
            parts.append(pack(qa_units, seq_len, pad_id=pad_id, packing=packing, seed=spec.seed))
    train = concat(parts, pad_id=pad_id)
    eval_part = parts[-1] if names else parts[0]  # the documents' own text (views: after the question warm-up)
    held = eval_part.subset(_spread(len(eval_part), EVAL_ROWS))
    probes = build_probes([(d.path, d.text) for d in sources.documents], max_probes=KNOWLEDGE_PROBES, seed=spec.seed)
    summary.update(train_examples=len(chunks) + (summary.get("synthetic_qa") or {}).get("kept", 0),
                   held_out_examples=0, held_out_documents=0, train_rows=len(train), held_out_rows=len(held),
                   train_tokens=train.n_tokens, trained_tokens=train.n_trained, dropped_too_long=dropped[0],
                   packing_efficiency=round(train.n_tokens / max(1, len(train) * seq_len), 3),
                   evaluation="the documents' own text (every document is trained) and a knowledge check of "
                              f"{len(probes)} fill-in-the-blank questions built from them",
                   knowledge_probes=len(probes))
    if spec.qa_model and len(parts) > 1:
        summary["phases"] = [*summary.get("phases", ["documents' text"]), "question-answer pairs"]
    step = max(1, len(chunks) // max(1, spec.samples))
    samples = [_sample(Text(c.text), "pretrain", encoder) for c in chunks[::step][: spec.samples]]
    return PreparedData(train, held, [s for s in samples if s], summary, probes, held_out)


def _view_parts(views: ViewSet, encoder: ExampleEncoder, seq_len: int, pad_id: int, packing: bool, seed: int, *,
                keep_text: bool, text_part: PackedRows) -> tuple[list[PackedRows], dict[str, Any]]:
    """The views' items packed in two phases, question warm-up first (arXiv 2402.12847), then the rest;
    no row holds two items of one fact (``pack``'s keys). ``keep_text``: the documents' own chunks are
    trained too (when the fact lines do not stand in for them)."""
    phases: list[tuple[list[list[Encoded]], list[frozenset[int]]]] = [([], []), ([], [])]
    tokens: dict[str, int] = {}
    for item in views.items:
        encoded = _encode_item(item, encoder, seq_len)
        if encoded is None:
            continue
        units, keys = phases[phase_of(item)]
        units.append([encoded])
        keys.append(item.facts)
        tokens[item.view] = tokens.get(item.view, 0) + len(encoded)
    parts = [pack(units, seq_len, pad_id=pad_id, packing=packing, seed=seed, keys=keys)
             for units, keys in phases if units]
    if keep_text:
        parts.insert(len(parts) - 1 if len(phases[1][0]) else len(parts), text_part)
    counts = views.counts()
    summary: dict[str, Any] = {
        "views": {name: {"items": counts.get(name, 0), "tokens": tokens.get(name, 0)} for name in counts},
        "views_note": views.note, "fact_lines": len(views.facts.lines), "restated_probes": len(views.held_out)}
    if len(parts) > 1:
        summary["phases"] = ["question warm-up", "documents' facts"] if phases[0][0] else ["documents' facts"]
    return parts, summary


def _written_items(views: ViewSet, writer: str, seed: int, summary: dict[str, Any],
                   progress: Callable[[str], None]) -> list[Item]:
    """Restatements of each fact line by a local instruct model, kept only when the guard keeps them
    (``core.finetune.data.views.written``); none takes a held-out question's wording."""
    from core.finetune.data.views.written import resolve_writer, write_restatements

    path, name = resolve_writer(writer)
    lines = views.facts.lines
    progress(f"writing restatements of {len(lines)} fact lines with {name}")
    report = write_restatements([line.text for line in lines], path, seed=seed,
                                on_progress=lambda n, total: progress(f"writing restatements with {name}: {n} of "
                                                                      f"{total} lines done"))
    stems = [p.prefix.strip().casefold() for p in views.held_out]
    by_text = {line.text: line for line in lines}
    items = [Item("written", f"{by_text[line].title}\n{text}", frozenset((by_text[line].fact,)))
             for line, text in report.kept if not any(stem in text.casefold() for stem in stems)]
    summary["written"] = report.to_summary(name)
    return items


MIN_CONTEXT_TOKENS = 24  # an item's context cut to fit its row keeps at least this much, or is left out


def _encode_item(item: Item, encoder: ExampleEncoder, seq_len: int) -> Encoded | None:
    """An item's tokens: its prompt as context (not trained), then its text, trained."""
    prompt = encoder.encode_text(item.prompt) if item.prompt else []
    # No end-of-text token: after every item (a few sentences, or a short answer) it taught the tuned model to
    # stop writing after a sentence; its sample continuations came back empty.
    text = encoder.encode_text(item.text)
    ids, trained = encoder.with_bos(prompt + text, [False] * len(prompt) + [True] * len(text))
    if len(ids) > seq_len:
        room = seq_len - len(text) - 1  # the row less the trained text and the BOS
        if prompt and room >= MIN_CONTEXT_TOKENS:  # the context's end: the question, and the passage's tail
            ids, trained = encoder.with_bos(prompt[-room:] + text, [False] * room + [True] * len(text))
        else:  # a long line: keep what is trained
            ids, trained = encoder.with_bos(text, [True] * len(text))
            ids, trained = ids[:seq_len], trained[:seq_len]
    return Encoded(ids, trained) if any(trained[1:]) else None


def _spread(n: int, k: int) -> list[int]:
    """Up to ``k`` indices spread evenly over ``range(n)``."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _units(examples: list[Example], objective: str, encoder: ExampleEncoder, seq_len: int,
           dropped: list[int]) -> list[list[Encoded]]:
    units: list[list[Encoded]] = []
    for example in examples:
        unit = _encode(example, objective, encoder, seq_len)
        if unit is None:
            dropped[0] += 1
        else:
            units.extend(unit)
    return units


def _encode(example: Example, objective: str, enc: ExampleEncoder, seq_len: int) -> list[list[Encoded]] | None:
    if isinstance(example, Preference):
        half = seq_len // 2
        chosen = truncate(enc.conversation([*example.prompt, {"role": "assistant", "content": example.chosen}]), half)
        rejected = truncate(enc.conversation([*example.prompt, {"role": "assistant", "content": example.rejected}]), half)
        return [[chosen, rejected]] if chosen and rejected else None
    if isinstance(example, Text):
        return [[w] for w in enc.text(example.text, seq_len)] or None
    if objective == "pretrain":  # a conversation as plain text: every token trained
        encoded = enc.conversation(example.messages)
        return [[w] for w in enc.windows(encoded.ids, seq_len)] or None
    one = truncate(enc.conversation(example.messages), seq_len)
    return [[one]] if one else None


def _sample(example: Example, objective: str, enc: ExampleEncoder) -> dict[str, Any] | None:
    if isinstance(example, Preference):
        return {"prompt": example.prompt[-1]["content"], "ids": enc.prompt(example.prompt), "expected": example.chosen}
    if isinstance(example, Conversation):
        last = max(i for i, m in enumerate(example.messages) if m["role"] == "assistant")
        prompt = example.messages[:last]
        return {"prompt": prompt[-1]["content"] if prompt else "", "ids": enc.prompt(prompt),
                "expected": example.messages[last]["content"]}
    ids = enc.encode_text(example.text)[:32]
    if len(ids) < 4:
        return None
    ids = enc.with_bos(ids, [])[0]
    return {"prompt": enc.decode(ids[-32:]), "ids": ids, "expected": ""}


def _model_path(name_or_path: str) -> str:
    from core.library import Library

    return str(Library().get(name_or_path).path)
