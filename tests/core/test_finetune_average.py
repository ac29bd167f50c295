"""The trainer's running average of the trained weights: what the run ends with, what checks read, what a
checkpoint keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")


def _trainer(checkpoint_dir: Path, steps: int = 6) -> tuple[Any, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    from core.finetune.data.formatting import Encoded
    from core.finetune.data.packing import pack
    from core.finetune.methods import build_config, get_method
    from core.finetune.methods.base import PrepareContext
    from core.finetune.trainer import Trainer, TrainSettings

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128))
    g = torch.Generator().manual_seed(3)
    rows = pack([[Encoded(torch.randint(5, 300, (n,), generator=g).tolist(), [True] * n)] for n in (20, 11, 17)],
                24, pad_id=0)
    method = get_method("lora")
    ctx = PrepareContext(lr=5e-3, weight_decay=0.0, device=torch.device("cpu"), model_type="llama", parameters=0)
    prepared = method.prepare(model, build_config(method, {"rank": 4, "dropout": 0.0}), ctx)
    settings = TrainSettings(objective="pretrain", epochs=100, max_steps=steps, lr=5e-3, batch=1, grad_accum=1,
                             seq_len=24, gradient_checkpointing=False, bf16=False, save_every=0, save_minutes=0,
                             schedule="constant")
    trainer = Trainer(prepared, settings, rows, rows, device=torch.device("cpu"), packing=True, emit=lambda e: None,
                      should_stop=lambda: False, checkpoint_dir=checkpoint_dir)
    return trainer, prepared.make_optimizer()


def _weights(trainer: Any) -> list[Any]:
    return [p.detach().clone() for p in trainer.p.trainable_parameters()]


def test_the_run_ends_with_the_average_and_checks_read_it(tmp_path: Path) -> None:
    from core.finetune.trainer import TrainState

    trainer, optimizer = _trainer(tmp_path)
    trainer.average_over(3)
    assert trainer.average_decay == pytest.approx(2 / 3)
    raw: list[list[Any]] = []
    seen_in_check: list[list[Any]] = []

    def after_step(state: Any) -> bool:
        raw.append(_weights(trainer))
        with trainer.averaged():
            seen_in_check.append(_weights(trainer))
        assert all(torch.equal(a, b) for a, b in zip(_weights(trainer), raw[-1], strict=True))  # put back
        return False

    trainer.enough = after_step
    trainer.train(optimizer, TrainState())
    assert len(raw) == 6
    expected = raw[0]
    for step, weights in enumerate(raw):
        if step:
            expected = [e + (w - e) / 3 for e, w in zip(expected, weights, strict=True)]
        assert all(torch.allclose(s, e, atol=1e-6) for s, e in zip(seen_in_check[step], expected, strict=True))
    final = _weights(trainer)
    assert all(torch.allclose(f, e, atol=1e-6) for f, e in zip(final, expected, strict=True))
    assert not all(torch.allclose(f, w, atol=1e-6) for f, w in zip(final, raw[-1], strict=True))  # not the last step


def test_without_an_average_the_run_ends_with_its_last_weights(tmp_path: Path) -> None:
    from core.finetune.trainer import TrainState

    trainer, optimizer = _trainer(tmp_path)
    raw: list[list[Any]] = []
    trainer.enough = lambda state: bool(raw.append(_weights(trainer)))
    trainer.train(optimizer, TrainState())
    with trainer.averaged():  # nothing to swap in
        assert all(torch.equal(f, w) for f, w in zip(_weights(trainer), raw[-1], strict=True))


def test_a_checkpoint_keeps_the_average(tmp_path: Path) -> None:
    from core.finetune.trainer import TrainState

    trainer, optimizer = _trainer(tmp_path, steps=4)
    trainer.average_over(4)
    state = trainer.train(optimizer, TrainState())
    trainer.save_checkpoint(optimizer, state)
    kept = [a.clone() for a in trainer._average]
    again, optimizer2 = _trainer(tmp_path, steps=4)
    again.average_over(4)
    resumed, _ = again.load_checkpoint(optimizer2)
    assert resumed.step == 4
    assert all(torch.equal(a, k) for a, k in zip(again._average, kept, strict=True))
