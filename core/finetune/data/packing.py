"""Packing examples into fixed-length rows without padding waste.

Several examples share one row; each keeps its own positions (restarting at 0), and transformers
turns restarting positions into a block-diagonal causal mask (``masking_utils.find_packed_sequence_indices``),
so no example attends to another. Targets are shifted here, per example, so a row's last token
never learns to predict the next example's first.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.finetune.data.formatting import Encoded

IGNORE = -100


@dataclass
class PackedRows:
    """Rows of ``seq_len`` tokens as plain lists (turned into tensors by the trainer)."""

    input_ids: list[list[int]]
    targets: list[list[int]]  # next-token targets, IGNORE where nothing is learned
    positions: list[list[int]]
    segments: list[list[int]]  # example id per token (-1: padding); DPO pairs use 2*i and 2*i+1
    n_tokens: int  # real (non-padding) tokens
    n_trained: int
    # Rows per phase, in training order (documents' text, then question-answer pairs); empty: one phase.
    phases: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    def subset(self, indices: Sequence[int]) -> PackedRows:
        """The rows at ``indices`` (one phase)."""
        rows = PackedRows([self.input_ids[i] for i in indices], [self.targets[i] for i in indices],
                          [self.positions[i] for i in indices], [self.segments[i] for i in indices], 0, 0)
        rows.n_tokens = sum(sum(1 for s in seg if s >= 0) for seg in rows.segments)
        rows.n_trained = sum(sum(1 for t in tgt if t != IGNORE) for tgt in rows.targets)
        return rows


def concat(parts: Sequence[PackedRows], *, pad_id: int) -> PackedRows:
    """Rows of several packs one after another, each pack a phase of its own (all the same width)."""
    width = max((len(r) for p in parts for r in p.input_ids), default=0)
    out = PackedRows([], [], [], [], 0, 0, [])
    offset = 0
    for part in parts:
        if not len(part):
            continue
        for ids, tgt, pos, seg in zip(part.input_ids, part.targets, part.positions, part.segments, strict=True):
            pad = width - len(ids)
            out.input_ids.append(ids + [pad_id] * pad)
            out.targets.append(tgt + [IGNORE] * pad)
            out.positions.append(pos + list(range(pad)))
            # Segment ids stay distinct across parts (the knowledge check and DPO read them per row).
            out.segments.append([s + offset if s >= 0 else -1 for s in seg] + [-1] * pad)
        offset += max((max(seg) for seg in part.segments), default=-1) + 1
        out.n_tokens += part.n_tokens
        out.n_trained += part.n_trained
        out.phases.append(len(part))
    return out


def targets_of(example: Encoded) -> list[int]:
    ids, trained = example.ids, example.trained
    return [ids[j + 1] if trained[j + 1] else IGNORE for j in range(len(ids) - 1)] + [IGNORE]


def truncate(example: Encoded, seq_len: int) -> Encoded | None:
    """The example cut to ``seq_len`` tokens, or None when nothing trained would remain."""
    if len(example) > seq_len:
        example = Encoded(example.ids[:seq_len], example.trained[:seq_len])
    return example if any(example.trained[1:]) else None


def pack(
    units: Sequence[Sequence[Encoded]],
    seq_len: int,
    *,
    pad_id: int,
    packing: bool = True,
    seed: int = 0,
    keys: Sequence[frozenset[int]] | None = None,
) -> PackedRows:
    """Pack units (one example, or a DPO pair that must share a row) into rows of ``seq_len``.

    Best-fit decreasing: the longest units first, each into the fullest row it still fits.
    With ``packing=False`` each unit gets a row of its own (methods that add tokens per sequence).
    ``keys``: per unit, the facts it states; two units sharing a key never share a row (views of one
    fact in one window are copied from context rather than stored: Allen-Zhu & Li, arXiv 2309.14316).
    """
    sizes = [sum(len(e) for e in unit) for unit in units]
    order = sorted(range(len(units)), key=lambda i: -sizes[i])
    rows: list[list[int]] = []  # unit indices per row
    row_keys: list[set[int]] = []
    if packing:
        free: list[tuple[int, int]] = []  # (space left, row index), sorted
        for i in order:
            mine = keys[i] if keys is not None else frozenset()
            k = bisect.bisect_left(free, (sizes[i], -1))
            while k < len(free) and mine and not row_keys[free[k][1]].isdisjoint(mine):
                k += 1  # the fullest row without this unit's facts
            if k < len(free):
                space, row = free.pop(k)
                rows[row].append(i)
                row_keys[row].update(mine)
                bisect.insort(free, (space - sizes[i], row))
            else:
                rows.append([i])
                row_keys.append(set(mine))
                bisect.insort(free, (seq_len - sizes[i], len(rows) - 1))
    else:
        rows = [[i] for i in order]
        seq_len = max(sizes, default=1)
    random.Random(seed).shuffle(rows)
    out = PackedRows([], [], [], [], 0, 0)
    for members in rows:
        ids: list[int] = []
        tgt: list[int] = []
        pos: list[int] = []
        seg: list[int] = []
        for unit_index in members:
            for part, example in enumerate(units[unit_index]):
                ids += example.ids
                tgt += targets_of(example)
                pos += range(len(example))
                seg += [unit_index * len(units[unit_index]) + part] * len(example)
        real = len(ids)
        pad = seq_len - real
        out.n_tokens += real
        out.n_trained += sum(t != IGNORE for t in tgt)
        ids += [pad_id] * pad
        tgt += [IGNORE] * pad
        pos += range(pad)
        seg += [-1] * pad
        out.input_ids.append(ids)
        out.targets.append(tgt)
        out.positions.append(pos)
        out.segments.append(seg)
    return out


def split_held_out(n: int, *, fraction: float = 0.05, minimum: int = 2, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices of the training and held-out examples: ``fraction`` held out, at least ``minimum``,
    never more than a fifth (and at least one example stays for training)."""
    if n < 2:
        return list(range(n)), []
    held = max(minimum, round(n * fraction))
    held = max(1, min(held, n // 5 if n >= 10 else n // 2))
    indices = list(range(n))
    random.Random(seed).shuffle(indices)
    return sorted(indices[held:]), sorted(indices[:held])
