"""Printing helpers shared by the commands: tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str, ensure_ascii=False)
    sys.stdout.write("\n")


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """A plain aligned table; an empty list prints the headers only."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def print_kv(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        print(f"{key.ljust(width)}  {value}")


def status_line(text: str = "") -> None:
    """Rewrite the terminal's one-line status on stderr; empty text clears it. Callers check for a terminal."""
    print(f"\r\033[K{text}", end="", file=sys.stderr, flush=True)


def gpu_layers(text: str) -> int:
    """``--gpu-layers``: "auto" (as many as fit: GPU_LAYERS_AUTO), -1 (all) or a number of layers."""
    import argparse

    from core.engine.params import GPU_LAYERS_AUTO

    if text.strip().lower() == "auto":
        return GPU_LAYERS_AUTO
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not auto, -1 or a number of layers") from None
    if value < -1:
        raise argparse.ArgumentTypeError("use auto (as many as fit), -1 (all) or a number of layers")
    return value


GPU_LAYERS_HELP = "layers to offload to the GPU: auto (default: as many as fit), -1 (all), 0 (none: the CPU)"
