"""The real starter model (Gemma 3 270M, Q4_K_M): a LoRA trained on it exports and merges faithfully.

The LoRA is built with peft on the model transformers loads from the GGUF itself, so torch and
llama.cpp start from the same (dequantized) weights. llama.cpp and torch still differ by a few
percent on the quantized base alone (llama.cpp quantizes activations for its dot products), so the
adapter's B is drawn large enough that its effect on the logits is many times that noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.tiny_hf_export import LORA_TARGETS, cosine, llama_logits, top1_agreement, torch_logits

pytestmark = pytest.mark.slow

PROMPT = "<start_of_turn>user\nWrite one sentence about the sea.<end_of_turn>\n<start_of_turn>model\nThe sea"


@pytest.fixture(scope="session")
def gemma_lora(starter_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import llama_cpp
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from core.engine.backends import load_backends

    load_backends()  # Hearth's build loads its CPU backend at run time
    root = tmp_path_factory.mktemp("gemma-lora")
    vocab = llama_cpp.Llama(model_path=str(starter_model), vocab_only=True, verbose=False)
    tokens = vocab.tokenize(PROMPT.encode(), add_bos=True, special=True)
    vocab.close()
    model = AutoModelForCausalLM.from_pretrained(
        str(starter_model.parent), gguf_file=starter_model.name, dtype="float32"
    ).eval()
    base_t = torch_logits(model, tokens)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS, lora_dropout=0.0))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.04)
    adapted_t = torch_logits(peft_model, tokens)
    peft_model.save_pretrained(root / "adapter")
    del peft_model, model
    return {"tokens": tokens, "base_t": base_t, "adapted_t": adapted_t, "adapter": root / "adapter",
            "base_c": llama_logits(starter_model, tokens, n_ctx=256)}


def test_starter_lora_export_matches_torch(gemma_lora: dict[str, Any], starter_model: Path, tmp_path: Path) -> None:
    from core.gguf_export.lora import export_lora_gguf

    noise = np.linalg.norm(gemma_lora["base_c"] - gemma_lora["base_t"])
    effect_t = gemma_lora["adapted_t"] - gemma_lora["base_t"]
    assert np.linalg.norm(effect_t) > 3 * noise  # the adapter's effect clearly exceeds the base's noise

    result = export_lora_gguf(gemma_lora["adapter"], tmp_path / "gemma-lora.gguf", base=starter_model)
    assert result.architecture == "gemma3" and result.n_pairs == 18 * 7
    adapted_c = llama_logits(starter_model, gemma_lora["tokens"], lora=result.path, n_ctx=256)
    assert cosine(adapted_c - gemma_lora["base_c"], effect_t) >= 0.97
    assert top1_agreement(adapted_c, gemma_lora["adapted_t"]) >= 0.8


def test_starter_merge_keeps_chat_and_matches_torch(
    gemma_lora: dict[str, Any], starter_model: Path, tmp_path: Path
) -> None:
    from core.gguf_export.gguf_stream import GGUFSource
    from core.gguf_export.merge import merge_adapter_gguf
    from core.gguf_export.ollama import write_modelfile

    result = merge_adapter_gguf(starter_model, gemma_lora["adapter"], tmp_path / "gemma-merged.gguf", quant="Q8_0",
                                register=True, name="gemma-merged")
    with GGUFSource(result.path) as merged, GGUFSource(starter_model) as base:
        for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.scores"):
            assert merged.raw_kv(key) == base.raw_kv(key)
        # The starter has neither: the merged model gets Gemma's turn format and <end_of_turn> as end of turn.
        assert "<start_of_turn>" in merged.metadata["tokenizer.chat_template"]
        assert merged.metadata["tokenizer.ggml.eot_token_id"] == base.token_ids(["<end_of_turn>"])["<end_of_turn>"]
    merged_c = llama_logits(result.path, gemma_lora["tokens"], n_ctx=256)
    effect_t = gemma_lora["adapted_t"] - gemma_lora["base_t"]
    assert cosine(merged_c - gemma_lora["base_c"], effect_t) >= 0.97
    assert top1_agreement(merged_c, gemma_lora["adapted_t"]) >= 0.8

    modelfile = write_modelfile("gemma-merged")
    text = modelfile.modelfile.read_text()
    assert modelfile.family == "gemma" and text.startswith("FROM ./gemma-merged.gguf")
    assert 'PARAMETER stop "<end_of_turn>"' in text
