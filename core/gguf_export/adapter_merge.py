"""Combining LoRA adapters of one base into a new adapter (peft's ``add_weighted_adapter``).

``cat`` concatenates the low-rank factors (exact: the new delta is the weighted sum of the deltas,
rank = sum of ranks); ``svd`` re-factorises the weighted sum of deltas to a given rank;
``ties``/``dare_*``/``magnitude_prune`` apply those methods to the deltas (peft's implementations).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.errors import AlreadyExistsError, ExportError
from core.gguf_export.adapter import ADAPTER_CONFIG, find_adapter_folder, resolve_arch

COMBINATIONS = ("cat", "linear", "svd", "ties", "ties_svd", "dare_ties", "dare_linear", "dare_ties_svd",
                "dare_linear_svd", "magnitude_prune", "magnitude_prune_svd")


def _load_base(folder: Path, config: dict[str, object], base: str | Path | None) -> Any:
    from transformers import AutoModelForCausalLM

    hint = Path(str(base or config.get("base_model_name_or_path") or "")).expanduser()
    if hint.is_dir() and (hint / "config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(str(hint), dtype="float32")
    ggufs = [hint] if hint.is_file() else sorted(hint.glob("*.gguf")) if hint.is_dir() else []
    if len(ggufs) == 1:
        return AutoModelForCausalLM.from_pretrained(str(ggufs[0].parent), gguf_file=ggufs[0].name, dtype="float32")
    resolve_arch(folder, dict(config), base)  # raises the "give --base" error
    raise ExportError("The adapters' base model must be a Hugging Face folder or a .gguf to combine them.")


def merge_adapters(
    adapters: Sequence[str | Path],
    out: str | Path,
    *,
    weights: Sequence[float] | None = None,
    combination: str = "cat",
    density: float | None = None,
    svd_rank: int | None = None,
    base: str | Path | None = None,
) -> Path:
    """Write a new PEFT adapter folder combining ``adapters`` (same base) with ``combination``."""
    from peft import PeftModel

    if combination not in COMBINATIONS:
        raise ExportError(f"Unknown combination '{combination}': use one of {', '.join(COMBINATIONS)}.")
    if len(adapters) < 2:
        raise ExportError("Give at least two adapters to combine.")
    folders = [find_adapter_folder(a) for a in adapters]
    configs = [json.loads((f / ADAPTER_CONFIG).read_text(encoding="utf-8")) for f in folders]
    if len({str(c.get("base_model_name_or_path")) for c in configs}) > 1 and base is None:
        raise ExportError("The adapters name different base models: they cannot be combined.")
    if any(c.get("use_dora") for c in configs):
        raise ExportError("DoRA adapters cannot be combined.")
    if combination == "linear" and len({c.get("r") for c in configs}) > 1:
        raise ExportError("'linear' needs adapters of the same rank: use 'cat' or 'svd'.")
    w = [1.0] * len(folders) if not weights else [float(x) for x in weights]
    if len(w) != len(folders):
        raise ExportError(f"Give one weight per adapter ({len(folders)} adapters, {len(w)} weights).")
    out = Path(out).expanduser()
    if out.exists():
        raise AlreadyExistsError(f"{out} already exists: pick another output folder.")

    model = _load_base(folders[0], configs[0], base)
    peft_model = PeftModel.from_pretrained(model, str(folders[0]), adapter_name="a0")
    for i, folder in enumerate(folders[1:], 1):
        peft_model.load_adapter(str(folder), adapter_name=f"a{i}")
    kwargs: dict[str, object] = {}
    if density is not None:
        kwargs["density"] = density
    if svd_rank is not None:
        kwargs["svd_rank"] = svd_rank
    try:
        peft_model.add_weighted_adapter([f"a{i}" for i in range(len(folders))], w, "combined",
                                        combination_type=combination, **kwargs)
    except (ValueError, TypeError) as exc:
        raise ExportError(f"The adapters cannot be combined with '{combination}': {exc}") from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".combine-") as tmp:
        peft_model.save_pretrained(tmp, selected_adapters=["combined"])
        saved = Path(tmp) / "combined"
        shutil.move(str(saved if saved.is_dir() else Path(tmp)), str(out))
    return out
