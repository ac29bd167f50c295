"""Adapter → GGUF LoRA and adapter → merged GGUF, checked against torch on a tiny random llama.

torch (transformers + peft) computes what the adapter does to the logits; llama.cpp runs the files
Hearth wrote. The two effects (adapted minus base logits) must point the same way (cosine ≥ 0.97)
and pick the same top token at ≥ 80% of positions. A missing Q/K permutation or a wrong name
mapping gives a cosine far below that, which the negative checks show.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.errors import ExportError, HearthError
from tests.fixtures.tiny_hf_export import (
    TinyHF,
    build_tiny_hf_llama,
    cosine,
    llama_logits,
    load_hf,
    make_lora,
    top1_agreement,
    torch_logits,
)

TOKENS = [1, *range(262, 294), 270, 265, 280, 290, 263]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from peft import PeftModel

    root = tmp_path_factory.mktemp("export")
    hf: TinyHF = build_tiny_hf_llama(root)
    adapter = make_lora(hf.folder, root / "lora")
    model = load_hf(hf.folder)
    base_t = torch_logits(model, TOKENS)
    adapted_t = torch_logits(PeftModel.from_pretrained(model, str(adapter)), TOKENS)
    return {"hf": hf, "adapter": adapter, "root": root, "base_t": base_t, "adapted_t": adapted_t,
            "base_c": llama_logits(hf.gguf, TOKENS)}


def parser() -> argparse.ArgumentParser:
    from core.cli import cmd_export

    p = argparse.ArgumentParser()
    cmd_export.register(p.add_subparsers())
    return p


def run_cli(*argv: str) -> int:
    args = parser().parse_args(list(argv))
    return int(args.func(args))


def test_conversion_matches_torch(tiny: dict[str, Any]) -> None:
    # The base alone: Hearth's HF → GGUF conversion (with the Q/K permutation) runs like torch.
    assert np.abs(tiny["base_c"] - tiny["base_t"]).max() < 1e-2


def test_lora_export_effect_matches_torch(tiny: dict[str, Any], tmp_path: Path) -> None:
    from core.gguf_export.gguf_stream import GGUFSource
    from core.gguf_export.lora import export_lora_gguf

    result = export_lora_gguf(tiny["adapter"], tmp_path / "lora.gguf", base=tiny["hf"].gguf)
    with GGUFSource(result.path) as src:
        assert src.metadata["general.type"] == "adapter"
        assert src.metadata["adapter.type"] == "lora"
        assert src.metadata["adapter.lora.alpha"] == pytest.approx(16.0)
        assert src.architecture == "llama"
        assert src.tensors["blk.0.attn_q.weight.lora_a"].shape == (8, 64)  # (rank, in)
        assert src.tensors["blk.0.ffn_down.weight.lora_b"].shape == (64, 8)  # (out, rank)
        assert len(src.tensors) == 2 * 7 * 2
    effect_c = llama_logits(tiny["hf"].gguf, TOKENS, lora=result.path) - tiny["base_c"]
    effect_t = tiny["adapted_t"] - tiny["base_t"]
    # The adapter's effect is large compared to the conversion's own difference (checked above).
    assert np.linalg.norm(effect_t) > 50 * np.abs(tiny["base_c"] - tiny["base_t"]).max()
    assert cosine(effect_c, effect_t) >= 0.97
    assert top1_agreement(tiny["base_c"] + effect_c, tiny["adapted_t"]) >= 0.8


def test_missing_permutation_or_wrong_mapping_fails_the_check(tiny: dict[str, Any], tmp_path: Path) -> None:
    from peft import PeftModel

    from core.gguf_export.adapter import load_lora_adapter
    from core.gguf_export.lora import write_lora_gguf
    from core.gguf_export.names import permute_qk_rows

    qk = make_lora(tiny["hf"].folder, tmp_path / "qk", target_modules=["q_proj", "k_proj"], b_std=0.4)
    effect_t = torch_logits(PeftModel.from_pretrained(load_hf(tiny["hf"].folder), str(qk)), TOKENS) - tiny["base_t"]
    lora, _ = load_lora_adapter(qk, base=tiny["hf"].gguf)
    right = write_lora_gguf(lora, tmp_path / "right.gguf")
    assert cosine(llama_logits(tiny["hf"].gguf, TOKENS, lora=right) - tiny["base_c"], effect_t) >= 0.97

    for pair in lora.pairs:  # undo the permutation: B's rows back in Hugging Face order
        heads = 4 if "attn_q" in pair.gguf_name else 2
        pair.b = pair.b[np.argsort(permute_qk_rows(pair.b.shape[0], heads, heads))]
    wrong = write_lora_gguf(lora, tmp_path / "unpermuted.gguf")
    assert cosine(llama_logits(tiny["hf"].gguf, TOKENS, lora=wrong) - tiny["base_c"], effect_t) < 0.5

    swapped, _ = load_lora_adapter(tiny["adapter"], base=tiny["hf"].gguf)
    names = {p.gguf_name: p for p in swapped.pairs}
    gate, up = names["blk.0.ffn_gate.weight"], names["blk.0.ffn_up.weight"]
    gate.gguf_name, up.gguf_name = up.gguf_name, gate.gguf_name
    attn_q0, attn_q1 = names["blk.0.attn_output.weight"], names["blk.1.attn_output.weight"]
    attn_q0.gguf_name, attn_q1.gguf_name = attn_q1.gguf_name, attn_q0.gguf_name
    bad = write_lora_gguf(swapped, tmp_path / "swapped.gguf")
    effect_all = tiny["adapted_t"] - tiny["base_t"]
    assert cosine(llama_logits(tiny["hf"].gguf, TOKENS, lora=bad) - tiny["base_c"], effect_all) < 0.9


def test_rslora_is_folded_into_alpha(tiny: dict[str, Any], tmp_path: Path) -> None:
    from peft import PeftModel

    from core.gguf_export.lora import export_lora_gguf

    rs = make_lora(tiny["hf"].folder, tmp_path / "rs", r=4, alpha=4.0, use_rslora=True, b_std=0.3)
    effect_t = torch_logits(PeftModel.from_pretrained(load_hf(tiny["hf"].folder), str(rs)), TOKENS) - tiny["base_t"]
    result = export_lora_gguf(rs, tmp_path / "rs.gguf", base=tiny["hf"].gguf, out_type="f16")
    assert result.alpha == pytest.approx(4.0 * 2.0)  # alpha·sqrt(r): llama.cpp's alpha/r = alpha/sqrt(r)
    effect_c = llama_logits(tiny["hf"].gguf, TOKENS, lora=result.path) - tiny["base_c"]
    assert cosine(effect_c, effect_t) >= 0.97


def test_unrepresentable_adapters_are_refused(tiny: dict[str, Any], tmp_path: Path) -> None:
    from core.gguf_export.lora import export_lora_gguf

    dora = make_lora(tiny["hf"].folder, tmp_path / "dora", r=4, use_dora=True)
    with pytest.raises(ExportError, match="DoRA"):
        export_lora_gguf(dora, tmp_path / "x.gguf", base=tiny["hf"].gguf)
    saved = make_lora(tiny["hf"].folder, tmp_path / "mts", r=4, modules_to_save=["lm_head"])
    with pytest.raises(ExportError, match="full tensors"):
        export_lora_gguf(saved, tmp_path / "x.gguf", base=tiny["hf"].gguf)
    assert not (tmp_path / "x.gguf").exists()


def test_wrong_base_is_refused_before_writing(tiny: dict[str, Any], tmp_path: Path, tiny_model: Path) -> None:
    from core.gguf_export.lora import export_lora_gguf

    other = build_tiny_hf_llama(tmp_path, seed=3, n_embd=32)
    with pytest.raises(ExportError, match="another model"):
        export_lora_gguf(tiny["adapter"], tmp_path / "x.gguf", base=other.gguf)
    assert not (tmp_path / "x.gguf").exists()


def test_cli_export_by_library_name(tiny: dict[str, Any], hearth_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from core.paths import get_paths

    target = get_paths().ensure().adapters / "my-adapter"
    shutil.copytree(tiny["adapter"], target)
    config = json.loads((target / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tiny["hf"].folder)  # a local HF folder: arch from its config
    (target / "adapter_config.json").write_text(json.dumps(config))
    assert run_cli("export", "my-adapter", "--type", "q8_0") == 0
    out = target / "my-adapter-lora-q8_0.gguf"
    assert out.exists() and "14 tensor pairs" in capsys.readouterr().out
    effect_c = llama_logits(tiny["hf"].gguf, TOKENS, lora=out) - tiny["base_c"]
    assert cosine(effect_c, tiny["adapted_t"] - tiny["base_t"]) >= 0.97
    with pytest.raises(HearthError, match="No adapter"):
        run_cli("export", "nope")


@pytest.mark.parametrize("quant", ["F16", "Q8_0"])
def test_merged_gguf_matches_torch_merge(tiny: dict[str, Any], tmp_path: Path, quant: str) -> None:
    from core.gguf_export.gguf_stream import GGUFSource
    from core.gguf_export.merge import merge_adapter_gguf

    result = merge_adapter_gguf(tiny["hf"].gguf, tiny["adapter"], tmp_path / f"m-{quant}.gguf", quant=quant,
                                register=True, name=f"merged-{quant.lower()}")
    assert result.changed_tensors == 14 and result.name == f"merged-{quant.lower()}"
    with GGUFSource(result.path) as merged, GGUFSource(tiny["hf"].gguf) as base:
        assert merged.raw_kv("tokenizer.ggml.tokens") == base.raw_kv("tokenizer.ggml.tokens")
        for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.scores"):
            assert merged.raw_kv(key) == base.raw_kv(key)
        assert merged.tensors["blk.0.attn_q.weight"].type_name == quant
    effect_c = llama_logits(result.path, TOKENS) - tiny["base_c"]
    effect_t = tiny["adapted_t"] - tiny["base_t"]
    assert cosine(effect_c, effect_t) >= 0.97
    assert top1_agreement(tiny["base_c"] + effect_c, tiny["adapted_t"]) >= 0.8
    assert not list(tmp_path.glob(".*partial*"))  # the intermediate file is gone


def test_merge_into_safetensors_base_and_cli(tiny: dict[str, Any], tmp_path: Path, hearth_home: Path) -> None:
    from core.library import Library

    code = run_cli("merge", str(tiny["hf"].folder), str(tiny["adapter"]), "--quant", "F16",
                   "--tokenizer-from", str(tiny["hf"].vocab_gguf), "--out", "st-merged")
    assert code == 0
    entry = Library().get("st-merged")
    assert entry.source == "merge" and entry.file_type == "F16"
    effect_c = llama_logits(Path(entry.path), TOKENS) - tiny["base_c"]
    assert cosine(effect_c, tiny["adapted_t"] - tiny["base_t"]) >= 0.97
    with pytest.raises(ExportError, match="tokenizer-from"):
        run_cli("merge", str(tiny["hf"].folder), str(tiny["adapter"]))


def test_full_weights_merge(tiny: dict[str, Any], tmp_path: Path) -> None:
    from peft import PeftModel

    from core.gguf_export.merge import merge_full_weights_gguf

    merged = PeftModel.from_pretrained(load_hf(tiny["hf"].folder), str(tiny["adapter"])).merge_and_unload()
    merged.save_pretrained(tmp_path / "full", safe_serialization=True)
    result = merge_full_weights_gguf(tiny["hf"].gguf, tmp_path / "full", tmp_path / "full.gguf", quant="F16")
    effect_c = llama_logits(result.path, TOKENS) - tiny["base_c"]
    assert cosine(effect_c, tiny["adapted_t"] - tiny["base_t"]) >= 0.97


def test_a_full_fine_tune_merges_by_name_and_is_not_taken_for_an_adapter(tiny: dict[str, Any], tmp_path: Path,
                                                                         hearth_home: Path) -> None:
    """``--method full`` leaves a whole model where an adapter would be: ``hearth merge`` makes it a model of the
    library; ``hearth export`` and ``hearth chat --lora`` say what it is and what to do instead of "no adapter"."""
    import shutil

    from peft import PeftModel

    from core.cli.cmd_chat import resolve_lora
    from core.library import Library

    merged = PeftModel.from_pretrained(load_hf(tiny["hf"].folder), str(tiny["adapter"])).merge_and_unload()
    folder = hearth_home / "data" / "adapters" / "tiny-full"
    merged.save_pretrained(tmp_path / "full", safe_serialization=True)
    shutil.copytree(tmp_path / "full", folder)
    (folder / "manifest.json").write_text(json.dumps({"kind": "model", "base": {"name": "tiny-base"}}))
    assert run_cli("merge", str(tiny["hf"].gguf), "tiny-full", "--quant", "F16", "--out", "tiny-full-model") == 0
    entry = Library().get("tiny-full-model")
    effect_c = llama_logits(Path(entry.path), TOKENS) - tiny["base_c"]
    assert cosine(effect_c, tiny["adapted_t"] - tiny["base_t"]) >= 0.97
    with pytest.raises(ExportError, match=r"'tiny-full' is a full fine-tune.*hearth merge tiny-base tiny-full"):
        run_cli("export", "tiny-full")
    with pytest.raises(ExportError, match="full fine-tune"):
        resolve_lora("tiny-full")


def test_quantize_and_quants(tiny: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from core.gguf_export.gguf_stream import GGUFSource

    assert run_cli("quants", "--json") == 0
    listed = {q["name"]: q for q in json.loads(capsys.readouterr().out)}
    assert listed["Q8_0"]["bits_per_weight"] == pytest.approx(8.5)
    assert listed["Q4_K_M"]["bits_per_weight"] == pytest.approx(4.5)
    assert run_cli("quantize", str(tiny["hf"].gguf), str(tmp_path / "q.gguf"), "--type", "q4_0") == 0
    with GGUFSource(tmp_path / "q.gguf") as q:
        assert q.tensors["blk.0.ffn_up.weight"].type_name == "Q4_0"
    logits = llama_logits(tmp_path / "q.gguf", TOKENS)
    assert np.isfinite(logits).all()
    with pytest.raises(ExportError, match="Unknown quantization type"):
        run_cli("quantize", str(tiny["hf"].gguf), str(tmp_path / "z.gguf"), "--type", "Q9_Z")


def test_quantizing_reports_each_tensor_and_prints_nothing(tiny: dict[str, Any], tmp_path: Path,
                                                           capfd: pytest.CaptureFixture[str]) -> None:
    from core.events import Progress
    from core.gguf_export.gguf_stream import GGUFSource
    from core.gguf_export.quantize import quantize_gguf

    reports: list[Progress] = []
    quantize_gguf(tiny["hf"].gguf, tmp_path / "q8.gguf", "Q8_0", progress=reports.append)
    with GGUFSource(tiny["hf"].gguf) as src:
        names = list(src.tensors)
    assert [r.stage for r in reports] == ["quantize"] * len(names)
    assert [r.done for r in reports] == list(range(1, len(names) + 1)) and {r.total for r in reports} == {len(names)}
    assert sorted(r.message for r in reports) == sorted(names)
    out, err = capfd.readouterr()  # llama.cpp's per-tensor log is caught at the file-descriptor level too
    assert "llama_model_quantize" not in out + err and "converting to" not in out + err


def test_export_ollama_modelfile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from core.engine.templates import FAMILY_TEMPLATES
    from tests.fixtures.tiny_models import write_tiny_llama

    model = write_tiny_llama(tmp_path / "chat.gguf", chat_template=FAMILY_TEMPLATES["chatml"])
    assert run_cli("export-ollama", str(model)) == 0
    text = (tmp_path / "chat.Modelfile").read_text()
    assert text.startswith("FROM ./chat.gguf")
    assert "<|im_start|>{{ .Role }}" in text and 'PARAMETER stop "<|im_end|>"' in text
    plain = write_tiny_llama(tmp_path / "plain.gguf")
    with pytest.raises(ExportError, match="chat template"):
        run_cli("export-ollama", str(plain), "--out", str(tmp_path / "M2"))


def test_merge_adapters_cat_then_export(tiny: dict[str, Any], tmp_path: Path) -> None:
    from peft import PeftModel

    from core.gguf_export.lora import export_lora_gguf

    second = make_lora(tiny["hf"].folder, tmp_path / "second", seed=7, r=4)
    code = run_cli("merge-adapters", str(tiny["adapter"]), str(second), "--weights", "1", "0.5",
                   "--combination", "cat", "--out", str(tmp_path / "combined"))
    assert code == 0
    combined_t = torch_logits(PeftModel.from_pretrained(load_hf(tiny["hf"].folder), str(tmp_path / "combined")), TOKENS)
    config = json.loads((tmp_path / "combined" / "adapter_config.json").read_text())
    assert config["r"] == 12  # cat: the ranks add up
    result = export_lora_gguf(tmp_path / "combined", tmp_path / "combined.gguf", base=tiny["hf"].gguf)
    effect_c = llama_logits(tiny["hf"].gguf, TOKENS, lora=result.path) - tiny["base_c"]
    assert cosine(effect_c, combined_t - tiny["base_t"]) >= 0.97
    with pytest.raises(ExportError, match="same rank"):
        run_cli("merge-adapters", str(tiny["adapter"]), str(second), "--combination", "linear",
                "--out", str(tmp_path / "lin"))


def test_full_weights_of_gemma_keep_its_norm_offset(starter_model: Path, tmp_path: Path) -> None:
    """Gemma 3 stores its norm weights as w + 1 in a GGUF, and transformers trains w: full weights written back
    unchanged must give the base model again (without the offset every norm is off by one and the model
    answers nonsense)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from core.gguf_export.gguf_stream import GGUFSource
    from core.gguf_export.merge import merge_full_weights_gguf

    model = AutoModelForCausalLM.from_pretrained(str(starter_model.parent), gguf_file=starter_model.name,
                                                 dtype=torch.float32)
    norms = {k: v.contiguous() for k, v in model.state_dict().items() if k.endswith("norm.weight")}
    (tmp_path / "full").mkdir()
    save_file(norms, str(tmp_path / "full" / "model.safetensors"))
    result = merge_full_weights_gguf(starter_model, tmp_path / "full", tmp_path / "full.gguf", quant="F16")
    assert result.changed_tensors == len(norms)
    with GGUFSource(starter_model) as base, GGUFSource(result.path) as merged:
        names = [n for n in base.tensors if n.endswith("norm.weight")]
        assert len(names) == len(norms)
        for name in names:
            np.testing.assert_allclose(merged.dequantize(name), base.dequantize(name), rtol=1e-3, atol=1e-3)
    tokens = [2, *range(1000, 1024)]
    base_logits, merged_logits = llama_logits(starter_model, tokens), llama_logits(result.path, tokens)
    assert cosine(merged_logits, base_logits) >= 0.999
    assert top1_agreement(merged_logits, base_logits) >= 0.8  # Q4_K_M against F16 matmuls: not bit-equal
