"""From a job's data settings to packed training and held-out rows (and prompts for sample generations)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.errors import DatasetError
from core.finetune.data.documents import Document, Skipped, chunk_documents, load_documents
from core.finetune.data.formatting import Encoded, ExampleEncoder
from core.finetune.data.jsonl import Conversation, Dataset, Example, Preference, Text, read_jsonl
from core.finetune.data.packing import PackedRows, pack, split_held_out, truncate
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


def build(
    sources: Sources, spec: FinetuneSpec, encoder: ExampleEncoder, *, seq_len: int, pad_id: int, packing: bool,
    progress: Callable[[str], None] = lambda _m: None,
) -> PreparedData:
    """Tokenize, split off the held-out part, and pack."""
    summary: dict[str, Any] = {"objective": sources.objective}
    examples: list[Example]
    if sources.dataset is None:
        chunk_size = seq_len if sources.objective == "pretrain" else min(seq_len, 512)
        chunks = chunk_documents(sources.documents, encoder.encode_text, encoder.decode,
                                 size=chunk_size - 2, overlap=min(spec.chunk_overlap, chunk_size // 4))
        summary.update(documents=[d.path for d in sources.documents], chunks=len(chunks),
                       skipped=[{"path": s.path, "reason": s.reason} for s in sources.skipped])
        if sources.objective == "pretrain":
            examples = [Text(c.text) for c in chunks]
        else:
            from core.finetune.data.synthetic import generate_qa

            progress(f"writing questions and answers from {len(chunks)} chunks with {spec.qa_model}")
            qa_path = _model_path(str(spec.qa_model))
            report = generate_qa(chunks, qa_path, per_chunk=spec.qa_per_chunk)
            summary["synthetic_qa"] = {"model": spec.qa_model, "generated": report.generated, "kept": len(report.pairs),
                                       "dropped_empty": report.dropped_empty,
                                       "dropped_duplicate": report.dropped_duplicate, "dropped_long": report.dropped_long}
            examples = list(report.pairs)
    else:
        examples = list(sources.dataset.examples)
        summary.update(data=spec.data, kinds=sources.dataset.kinds, skipped=sources.dataset.skipped)
    if len(examples) < 2:
        raise DatasetError("The data has fewer than 2 usable examples: add more text or rows.")
    train_idx, held_idx = split_held_out(len(examples), fraction=spec.eval_fraction, seed=spec.seed)
    dropped = 0

    def units_of(indices: list[int]) -> list[list[Encoded]]:
        nonlocal dropped
        units: list[list[Encoded]] = []
        for i in indices:
            unit = _encode(examples[i], sources.objective, encoder, seq_len)
            if unit is None:
                dropped += 1
            else:
                units.extend(unit)
        return units

    train_units, held_units = units_of(train_idx), units_of(held_idx)
    if not train_units:
        raise DatasetError("No example has anything to learn after tokenization (answers empty or cut off): "
                           "raise --seq-len or shorten the prompts.")
    if not held_units:
        held_units = train_units[:1]  # tiny sets: evaluate on a training example rather than on nothing
    train = pack(train_units, seq_len, pad_id=pad_id, packing=packing, seed=spec.seed)
    held = pack(held_units, seq_len, pad_id=pad_id, packing=packing, seed=spec.seed)
    summary.update(train_examples=len(train_idx), held_out_examples=len(held_idx), train_rows=len(train),
                   held_out_rows=len(held), train_tokens=train.n_tokens, trained_tokens=train.n_trained,
                   dropped_too_long=dropped, packing_efficiency=round(train.n_tokens / max(1, len(train) * seq_len), 3))
    samples = [_sample(examples[i], sources.objective, encoder) for i in held_idx[: spec.samples]]
    return PreparedData(train, held, [s for s in samples if s], summary)


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
