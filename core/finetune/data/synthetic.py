"""Synthetic question–answer pairs from document chunks ("distillation" into a chat dataset).

A local GGUF model, run by the chat engine, writes questions a reader might ask about each chunk and
answers them from the chunk. Pairs with an empty, duplicated or overlong answer are dropped, and so
are answers the chunk does not bear out (most of their words are not in it): a small writer model
makes facts up, and training on them would teach the user's model things their documents never said.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from core.errors import DatasetError
from core.events import CancelToken
from core.finetune.data.documents import Chunk
from core.finetune.data.jsonl import Conversation
from core.finetune.data.probes import STOP_WORDS

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
    dropped_ungrounded: int = 0  # answers whose words are mostly not in their chunk


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """The (question, answer) pairs in a model's ``Q: … A: …`` reply."""
    return [(m["q"].strip(), m["a"].strip()) for m in _PAIR.finditer(text)]


_WORDS = re.compile(r"[^\W_]+")
GROUNDED_SHARE = 0.6  # of an answer's content words that must occur in its chunk


def grounded(answer: str, source: str) -> bool:
    """Whether ``source`` bears ``answer`` out: most of its content words (not stop-words) occur in it."""
    words = [w for w in _WORDS.findall(answer.casefold()) if (len(w) >= 3 or w.isdigit()) and w not in STOP_WORDS]
    if not words:
        return False
    have = set(_WORDS.findall(source.casefold()))
    return sum(w in have for w in words) >= GROUNDED_SHARE * len(words)


def filter_pairs(
    raw: Sequence[tuple[str, str]], *, max_answer_chars: int = 1500, sources: Sequence[str] | None = None
) -> tuple[list[Conversation], dict[str, int]]:
    """Conversations from the pairs worth training on, and how many were dropped for each reason.

    ``sources``: the chunk each pair was written from (parallel to ``raw``), to drop answers it does
    not bear out.
    """
    seen: set[str] = set()
    kept: list[Conversation] = []
    dropped = {"empty": 0, "duplicate": 0, "long": 0, "ungrounded": 0}
    for i, (question, answer) in enumerate(raw):
        if len(question) < 3 or len(answer) < 2:
            dropped["empty"] += 1
            continue
        if len(answer) > max_answer_chars:
            dropped["long"] += 1
            continue
        if sources is not None and not grounded(answer, sources[i]):
            dropped["ungrounded"] += 1
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
    sources: list[str] = []
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
            pairs = parse_pairs(result.text)
            raw.extend(pairs)
            sources.extend([chunk.text] * len(pairs))
            if on_chunk:
                on_chunk(n + 1, len(chunks))
    kept, dropped = filter_pairs(raw, sources=sources)
    if not kept:
        made_up = f" ({dropped['ungrounded']} had answers your documents do not say)" if dropped["ungrounded"] else ""
        raise DatasetError(
            f"The model wrote no usable question–answer pairs from {len(chunks)} chunks{made_up}: use a larger "
            "instruction-tuned model with --qa-model, or train on the raw text with --objective pretrain."
        )
    return QAReport(kept, len(raw), dropped["empty"], dropped["duplicate"], dropped["long"], dropped["ungrounded"])
