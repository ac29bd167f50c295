"""Synthetic question–answer pairs from document chunks ("distillation" into a chat dataset).

A local GGUF model, run by the chat engine, writes questions a reader might ask about each chunk and
answers them from the chunk. Pairs with an empty, duplicated or overlong answer are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from core.errors import DatasetError
from core.events import CancelToken
from core.finetune.data.documents import Chunk
from core.finetune.data.jsonl import Conversation

PROMPT = (
    "Read the text below and write {n} questions a reader could ask about it, each followed by its "
    "answer taken from the text. Use exactly this format, one pair after another:\n"
    "Q: <question>\nA: <answer>\n\nText:\n{chunk}"
)
_PAIR = re.compile(
    r"^[ \t]*Q[ \t]*[:.)][ \t]*(?P<q>[^\n]+?)[ \t]*\n+[ \t]*A[ \t]*[:.)][ \t]*(?P<a>.*?)\s*(?=\n[ \t]*Q[ \t]*[:.)]|\Z)",
    re.S | re.M,
)


@dataclass
class QAReport:
    pairs: list[Conversation]
    generated: int
    dropped_empty: int = 0
    dropped_duplicate: int = 0
    dropped_long: int = 0


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """The (question, answer) pairs in a model's ``Q: … A: …`` reply."""
    return [(m["q"].strip(), m["a"].strip()) for m in _PAIR.finditer(text)]


def filter_pairs(
    raw: Sequence[tuple[str, str]], *, max_answer_chars: int = 1500
) -> tuple[list[Conversation], dict[str, int]]:
    """Conversations from the pairs worth training on, and how many were dropped for each reason."""
    seen: set[str] = set()
    kept: list[Conversation] = []
    dropped = {"empty": 0, "duplicate": 0, "long": 0}
    for question, answer in raw:
        if len(question) < 3 or len(answer) < 2:
            dropped["empty"] += 1
            continue
        if len(answer) > max_answer_chars:
            dropped["long"] += 1
            continue
        key = re.sub(r"\W+", " ", question.lower()).strip()
        if key in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(key)
        kept.append(Conversation([{"role": "user", "content": question}, {"role": "assistant", "content": answer}]))
    return kept, dropped


def generate_qa(
    chunks: Sequence[Chunk],
    model_path: str,
    *,
    per_chunk: int = 3,
    max_tokens: int = 384,
    n_ctx: int = 4096,
    seed: int = 1,
    on_chunk: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
) -> QAReport:
    """Q&A conversations generated from each chunk by the GGUF model at ``model_path``."""
    from core.engine import Engine, LoadOptions, SamplingParams

    raw: list[tuple[str, str]] = []
    with Engine() as engine:
        engine.load(model_path, LoadOptions(n_ctx=n_ctx))
        for n, chunk in enumerate(chunks):
            if cancel is not None:
                cancel.raise_if_cancelled("Generating questions")
            prompt = PROMPT.format(n=per_chunk, chunk=chunk.text)
            result = engine.chat(
                [{"role": "user", "content": prompt}],
                SamplingParams(max_tokens=max_tokens, temperature=0.7, seed=seed + n),
            )
            raw.extend(parse_pairs(result.text))
            if on_chunk:
                on_chunk(n + 1, len(chunks))
    kept, dropped = filter_pairs(raw)
    if not kept:
        raise DatasetError(
            f"The model wrote no usable question–answer pairs from {len(chunks)} chunks: use a larger "
            "instruction-tuned model with --qa-model, or train on the raw text with --objective pretrain."
        )
    return QAReport(kept, len(raw), dropped["empty"], dropped["duplicate"], dropped["long"])
