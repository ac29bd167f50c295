"""Which GGUF architectures Hearth can fine-tune, checked for real on a tiny random model of each.

Per architecture: llama.cpp runs the GGUF through Hearth's engine; Hearth fine-tunes it from the
GGUF (transformers' GGUF loading) with LoRA; the adapter is exported to a GGUF LoRA that llama.cpp
loads with the base; and a LoRA's effect on the logits is the same in llama.cpp as in torch (which
catches a wrong name, row order or fused-projection layout). llama and gemma3 are covered by the
other fine-tuning tests (tiny llama, the real Gemma 3 starter model).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.engine import Engine, LoadOptions, SamplingParams
from tests.fixtures.tiny_archs import ARCHS, write_tiny_arch_gguf
from tests.fixtures.tiny_hf_export import cosine, llama_logits, top1_agreement, torch_logits

# (id, fixture architecture, writer options): the four architectures as published GGUFs have them, and
# two files transformers' GGUF reader misread before Hearth corrected its config (base_model._gguf_config):
# a 'llama' GGUF named exactly "mistral", and a qwen3 whose head size is not Qwen3Config's default 128.
CASES: list[tuple[str, str, dict[str, Any]]] = [
    *((arch, arch, {}) for arch in ARCHS),
    ("mistral-named-mistral", "mistral", {"name": "mistral"}),
    ("qwen3-head16", "qwen3", {"head_dim": 16}),
]
TOKENS = [1, *range(262, 294), 270, 265, 280, 290, 263]
HELLO = [{"role": "user", "content": "hello"}]
GREEDY = SamplingParams(max_tokens=4, temperature=0)


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The tiny GGUF of one architecture, fine-tuned for 2 LoRA steps in a HEARTH_HOME of its own."""
    from core.finetune.job import run

    case, arch, options = request.param
    root = tmp_path_factory.mktemp(f"arch-{case}")
    gguf = write_tiny_arch_gguf(root / f"tiny-{case}.gguf", arch, **options)
    rows = [{"messages": [{"role": "user", "content": f"what color is the {'sky' if i % 2 else 'dog'}"},
                          {"role": "assistant", "content": "blue" if i % 2 else "red"}]} for i in range(8)]
    data = root / "chat.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    events: list[dict[str, Any]] = []
    spec = {"base": str(gguf), "name": f"t-{arch}", "data": str(data), "method": "lora", "max_steps": 2,
            "seq_len": 64, "batch": 2, "grad_accum": 1, "samples": 1, "sample_tokens": 4, "save_every": 0}
    with pytest.MonkeyPatch.context() as mp:  # module scope: the per-test home is not set up yet
        mp.setenv("HEARTH_HOME", str(root / "home"))
        mp.setenv("HF_HUB_CACHE", str(root / "hf-cache"))
        code = run(spec, events.append, lambda: False)
    yield {"arch": arch, "gguf": gguf, "code": code, "events": events}


def test_trainable_architectures_are_gguf_names() -> None:
    from core.finetune.base_model import trainable_gguf_architectures

    names = trainable_gguf_architectures()
    assert {"llama", "gemma3", "qwen2", "qwen3", "phi3", "qwen2moe", "qwen3moe"} <= set(names)
    assert "mistral" not in names and "qwen2_moe" not in names  # not GGUF architectures (Mistral is 'llama')


def test_llama_cpp_runs_the_base(trained: dict[str, Any]) -> None:
    with Engine() as eng:
        eng.load(trained["gguf"], LoadOptions(n_ctx=256, n_threads=1))
        result = eng.chat(HELLO, GREEDY)
    assert result.stats.completion_tokens >= 1


def test_fine_tunes_from_the_gguf(trained: dict[str, Any]) -> None:
    assert trained["code"] == 0
    losses = [e["loss"] for e in trained["events"] if e["event"] == "step"]
    assert len(losses) == 2 and all(np.isfinite(x) and x > 0 for x in losses)
    done = next(e for e in trained["events"] if e["event"] == "done")
    manifest = json.loads((Path(done["path"]) / "manifest.json").read_text())
    expected = "llama" if trained["arch"] == "mistral" else trained["arch"]  # Mistral GGUFs are 'llama'
    assert manifest["base"]["kind"] == "gguf" and manifest["base"]["architecture"] == expected


def test_adapter_exports_and_runs_in_llama_cpp(trained: dict[str, Any], tmp_path: Path) -> None:
    from core.gguf_export.lora import export_lora_gguf

    done = next(e for e in trained["events"] if e["event"] == "done")
    result = export_lora_gguf(done["path"], tmp_path / "lora.gguf", base=trained["gguf"])
    assert result.n_pairs > 0
    with Engine() as eng:
        eng.load(trained["gguf"], LoadOptions(n_ctx=256, n_threads=1, loras=[(str(result.path), 1.0)]))
        assert eng.status is not None and eng.status.loras == [(str(result.path), 1.0)]
        assert eng.chat(HELLO, GREEDY).stats.completion_tokens >= 1


def _random_lora(folder: Path, out: Path) -> Path:
    """A peft LoRA on every linear layer of the trained-on model, with random non-zero B."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.15)
    peft_model.save_pretrained(out)
    return out


def test_lora_effect_matches_torch(trained: dict[str, Any], tmp_path: Path) -> None:
    import torch
    from peft import PeftModel

    from core.finetune.base_model import load_for_training, resolve_base
    from core.gguf_export.lora import export_lora_gguf

    # Hearth's own GGUF → transformers loading, in float32 (training uses bfloat16 here: too coarse to compare).
    model, _tok, folder = load_for_training(resolve_base(str(trained["gguf"])), dtype=torch.float32, device="cpu")
    model.eval()
    base_t = torch_logits(model, TOKENS)
    base_c = llama_logits(trained["gguf"], TOKENS)
    # The model Hearth trains is the model llama.cpp runs.
    assert np.abs(base_c - base_t).max() < 2e-2
    adapter = _random_lora(folder, tmp_path / "lora")
    effect_t = torch_logits(PeftModel.from_pretrained(model, str(adapter)).eval(), TOKENS) - base_t
    lora = export_lora_gguf(adapter, tmp_path / "lora.gguf", base=trained["gguf"]).path
    effect_c = llama_logits(trained["gguf"], TOKENS, lora=lora) - base_c
    assert np.linalg.norm(effect_t) > 50 * np.abs(base_c - base_t).max()
    assert cosine(effect_c, effect_t) >= 0.97
    assert top1_agreement(base_c + effect_c, base_t + effect_t) >= 0.8
