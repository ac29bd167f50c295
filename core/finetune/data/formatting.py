"""Examples to token ids with a loss mask, using the model's own chat format.

Conversations are rendered with ``core.engine.templates`` (the GGUF's template in a sandboxed Jinja
environment, else the family's turn format, else plain text), exactly as the chat engine renders
them, so the tuned model sees at inference what it saw in training. Only the assistant's tokens are
trained, including the end-of-turn marker that follows them: that is what makes the model stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.engine.templates import ChatFormat, render
from core.errors import DatasetError
from core.finetune.data.jsonl import Message


@dataclass(frozen=True)
class Encoded:
    """One example's token ids and which of them are trained."""

    ids: list[int]
    trained: list[bool]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_trained(self) -> int:
        return sum(self.trained)


def assistant_spans(
    fmt: ChatFormat, messages: Sequence[Message], *, bos: str, eos: str
) -> tuple[str, list[tuple[int, int]]]:
    """The full rendered text and the character spans of the assistant turns in it."""
    if fmt.template is None:
        text, spans = "", []
        for m in messages:
            if m["role"] == "assistant":
                start = len(text)
                text += m["content"] + eos
                spans.append((start, len(text)))
                text += "\n\n"
            elif m["content"]:
                text += m["content"] + "\n\n"
        return text, spans
    full = render(fmt, messages, bos_token=bos, eos_token=eos, add_generation_prompt=False)
    spans = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render(fmt, messages[:i], bos_token=bos, eos_token=eos, add_generation_prompt=True)
        after = render(fmt, messages[: i + 1], bos_token=bos, eos_token=eos, add_generation_prompt=False)
        if full.startswith(after) and after.startswith(before) and len(before) >= cursor:
            spans.append((len(before), len(after)))
            cursor = len(after)
            continue
        # The template rewrites earlier turns (some drop old reasoning): find the answer text itself.
        content = m["content"].strip()
        start = full.find(content, cursor)
        if start < 0:
            raise DatasetError("the model's chat template drops assistant answers; use a text dataset instead")
        end = start + len(content)
        for stop in [*fmt.stop, eos]:
            if stop and full.startswith(stop, end):
                end += len(stop)
                break
        spans.append((start, end))
        cursor = end
    if spans and eos and fmt.stop == [] and not full[: spans[-1][1]].rstrip().endswith(eos):
        # No end-of-turn marker in this format: end the last answer with EOS so the model learns to stop.
        last_start, last_end = spans[-1]
        full = full[:last_end] + eos + full[last_end:]
        spans[-1] = (last_start, last_end + len(eos))
    return full, spans


class ExampleEncoder:
    """Turns conversations, texts and preference pairs into ``Encoded`` examples for one tokenizer."""

    def __init__(self, tokenizer: Any, fmt: ChatFormat) -> None:
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.bos = tokenizer.bos_token or ""
        self.eos = tokenizer.eos_token or ""
        self.bos_id: int | None = tokenizer.bos_token_id
        self.eos_id: int | None = tokenizer.eos_token_id
        self.add_bos = bool(getattr(tokenizer, "add_bos_token", self.bos_id is not None)) and self.bos_id is not None

    def with_bos(self, ids: list[int], trained: list[bool]) -> tuple[list[int], list[bool]]:
        if self.add_bos and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            return [self.bos_id, *ids], [False, *trained]
        return ids, trained

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=False))

    def conversation(self, messages: Sequence[Message]) -> Encoded:
        text, spans = assistant_spans(self.fmt, messages, bos=self.bos, eos=self.eos)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        trained = []
        k = 0
        for start, end in enc["offset_mapping"]:
            while k < len(spans) and spans[k][1] <= start:
                k += 1
            inside = k < len(spans) and spans[k][0] <= start < spans[k][1]
            # A token fused across the boundary ("\n<answer") still counts once its end is inside.
            inside = inside or (k < len(spans) and start < spans[k][0] < end)
            trained.append(inside)
        ids, trained = self.with_bos(ids, trained)
        return Encoded(ids, trained)

    def prompt(self, messages: Sequence[Message]) -> list[int]:
        """The ids of a prompt ready for generation (used for the before/after samples)."""
        if self.fmt.template is None:
            text = "\n\n".join(m["content"] for m in messages if m["content"]) + "\n\n"
        else:
            text = render(self.fmt, messages, bos_token=self.bos, eos_token=self.eos, add_generation_prompt=True)
        ids, _ = self.with_bos(self.encode_text(text), [])
        return ids

    def text(self, text: str, seq_len: int) -> list[Encoded]:
        """A raw text for continued pre-training, in windows of ``seq_len`` tokens (all trained)."""
        ids = self.encode_text(text)
        if self.eos_id is not None:
            ids.append(self.eos_id)
        return self.windows(ids, seq_len)

    def windows(self, ids: Sequence[int], seq_len: int) -> list[Encoded]:
        out = []
        step = seq_len - (1 if self.add_bos else 0)
        for start in range(0, len(ids), step):
            piece, trained = self.with_bos(list(ids[start : start + step]), [True] * len(ids[start : start + step]))
            if len(piece) >= 2:
                out.append(Encoded(piece, trained))
        return out
