"""The trainer's speed paths give the same numbers as the plain ones: lean LoRA forward, trimmed padding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")


def _tiny_llama() -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(config)


def _tiny_lora(alpha: float = 24.0, rank: int = 8) -> Any:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_tiny_llama(), LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():  # B starts at zero; make the adapter matter
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    return model


def _loss_and_grads(model: Any, ids: Any, bf16: bool) -> tuple[Any, list[Any]]:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=ids, use_cache=False).logits
    loss = logits.float().logsumexp(-1).mean()
    params = [p for p in model.parameters() if p.requires_grad]
    return loss.detach(), list(torch.autograd.grad(loss, params))


@pytest.mark.parametrize("bf16", [False, True])
def test_lean_lora_forward_matches_peft_output_and_gradients(bf16: bool) -> None:
    from core.finetune.trainer import lean_lora_forward

    model = _tiny_lora()
    ids = torch.randint(0, 300, (2, 17), generator=torch.Generator().manual_seed(1))
    plain_loss, plain_grads = _loss_and_grads(model, ids, bf16)
    assert lean_lora_forward(model) == 2 * 7  # q k v o gate up down in each of the 2 blocks
    lean_loss, lean_grads = _loss_and_grads(model, ids, bf16)
    tol = 2e-2 if bf16 else 1e-5  # bf16: the scale is applied before B's rounding instead of after
    assert torch.allclose(lean_loss, plain_loss, rtol=tol, atol=tol)
    for lean, plain in zip(lean_grads, plain_grads, strict=True):
        assert torch.allclose(lean, plain, rtol=tol * 5, atol=tol * float(plain.abs().max()))


def test_lean_lora_forward_leaves_disabled_and_merged_adapters_to_peft() -> None:
    from core.finetune.trainer import lean_lora_forward

    model = _tiny_lora()
    ids = torch.randint(0, 300, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        adapted = model(input_ids=ids).logits
        lean_lora_forward(model)
        with model.disable_adapter():
            assert torch.allclose(model(input_ids=ids).logits, base, atol=1e-6)
        assert torch.allclose(model(input_ids=ids).logits, adapted, atol=1e-5)
        assert not torch.allclose(adapted, base, atol=1e-3)
        model.merge_adapter()
        assert torch.allclose(model(input_ids=ids).logits, adapted, atol=1e-4)


def test_trimmed_batches_give_the_same_loss_as_full_padded_rows() -> None:
    from core.finetune.data.formatting import Encoded
    from core.finetune.data.packing import pack
    from core.finetune.methods import build_config, get_method
    from core.finetune.methods.base import PrepareContext
    from core.finetune.trainer import Trainer, TrainSettings, take

    model = _tiny_llama()
    g = torch.Generator().manual_seed(3)
    examples = [Encoded(torch.randint(5, 300, (n,), generator=g).tolist(), [False] * (n // 2) + [True] * (n - n // 2))
                for n in (20, 11, 7, 5)]
    rows = pack([[e] for e in examples], 64, pad_id=0)
    assert len(rows) == 1 and rows.n_tokens == 43
    method = get_method("lora")
    ctx = PrepareContext(lr=1e-3, weight_decay=0.0, device=torch.device("cpu"), model_type="llama", parameters=0)
    prepared = method.prepare(model, build_config(method, {"rank": 4, "dropout": 0.0}), ctx)
    settings = TrainSettings(objective="sft", epochs=1, max_steps=1, lr=1e-3, batch=1, grad_accum=1, seq_len=64,
                             gradient_checkpointing=False, bf16=False, save_every=0)
    trainer = Trainer(prepared, settings, rows, rows, device=torch.device("cpu"), packing=True, emit=lambda e: None,
                      should_stop=lambda: False, checkpoint_dir=Path("/nonexistent"))
    full = {k: v[:1] for k, v in trainer.train_rows.items()}
    trimmed = take(trainer.train_rows, torch.tensor([0]))
    assert trimmed["input_ids"].shape == (1, 43) and full["input_ids"].shape == (1, 64)
    with torch.no_grad():
        nll_full, seg_full = trainer.token_nll(full)
        nll_trim, seg_trim = trainer.token_nll(trimmed)
    assert torch.equal(seg_full, seg_trim)
    assert torch.allclose(nll_full, nll_trim, atol=1e-5)
