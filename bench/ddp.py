"""The fine-tune on 1 vs N processes (``hearth finetune --nproc N``): step time, tokens/s and the overhead.

Each run is the real job (``core.jobs`` -> torchrun -> ``core.finetune.rank``), with the same spec and the
same global batch (``--batch`` x ``--grad-accum`` rows per update, shared out among the processes), so only
the number of processes changes. Runs alternate (1 2 2 1 ...) so a burst of load on a shared machine hits
both alike. Per run: the median time of one optimizer step after ``--warmup`` steps (timed as the step
events arrive: their own ``elapsed_s`` is rounded to 0.1 s) and the median of the trainer's own tokens/s
(real tokens over its last 10 steps' time, as the step events carry it); then the medians over the
repeats. The overhead ratio is tokens/s(N) / tokens/s(1).

On a CPU, N processes share the same cores (each gets cores/N threads), so no speed-up is expected: the
ratio measures what the processes, the gradient all-reduce (gloo) and the split batches cost. On a GPU box
the same script measures scaling (``--device cuda --nproc 1 2 4 8``); it prints that plan at the end.

    .venv/bin/python bench/ddp.py [--model starter|tiny] [--nproc 1 2] [--steps 12] [--warmup 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORDS = ["the", "model", "keeps", "every", "file", "on", "your", "own", "machine", "and", "answers", "questions",
         "about", "notes", "letters", "recipes", "invoices", "travel", "plans", "music", "history", "science"]


def write_data(path: Path, n: int = 96, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))
        answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 40)))
        rows.append({"messages": [{"role": "user", "content": f"Question {i}: {prompt}?"},
                                  {"role": "assistant", "content": answer}]})
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def model_path(kind: str, folder: Path) -> str:
    if kind == "starter":
        from bench.common import starter_model_path

        return str(starter_model_path())
    from tests.fixtures.tiny_hf import write_tiny_chat_llama, write_tiny_hf

    return str(write_tiny_hf(folder / "tiny-hf", write_tiny_chat_llama(folder / "tiny.gguf")))


def run_job(spec: dict[str, Any], log: Path, warmup: int) -> dict[str, float]:
    from core.jobs import JobProcess

    job = JobProcess("finetune", spec, log_path=log)
    steps: list[dict[str, Any]] = []
    arrived: list[float] = []  # when each step event arrived: the events' own elapsed_s is rounded to 0.1 s
    error = None
    for event in job.events():
        if event["event"] == "step":
            steps.append(event)
            arrived.append(time.monotonic())
        elif event["event"] == "error":
            error = event["message"]
    code = job.wait()
    if code != 0:
        raise SystemExit(f"the run with {spec['nproc']} process(es) failed ({code}): {error}; see {log}")
    times = [b - a for a, b in itertools.pairwise(arrived)][warmup:]
    rates = [float(s["tokens_per_s"]) for s in steps[warmup + 1 :]]
    return {"step_s": statistics.median(times), "tokens_per_s": statistics.median(rates)}


def gpu_plan(model: str) -> str:
    return f"""
On a GPU box (N NVIDIA GPUs), the same measurement with NCCL, one process per GPU:
  .venv/bin/python bench/ddp.py --device cuda --model {model} --nproc 1 2 4 8 --steps 30 --warmup 5 \\
      --batch 8 --grad-accum 8
(one --nproc value per GPU count up to N). With the global batch fixed (batch x grad-accum rows per update)
each GPU does 1/N of every step: report tokens/s(N) / (N x tokens/s(1)) as the scaling efficiency and the
step time (a LoRA's gradients are small, so the all-reduce should cost little next to the compute). Also
run bench/gpu_check.sh there: it holds the GPU-only checks of issue 23 (NCCL DDP, FSDP through the
exported launch)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", choices=("starter", "tiny"), default="starter")
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hearth-bench-ddp-"))
    os.environ["HEARTH_HOME"] = str(work / "home")
    base = model_path(args.model, work)
    data = write_data(work / "chat.jsonl")
    spec = {"base": base, "data": str(data), "max_steps": args.steps + 1, "lr": 1e-4, "seq_len": args.seq_len,
            "batch": args.batch, "grad_accum": args.grad_accum, "save_every": 0, "samples": 0,
            "device": args.device, "method_options": {"rank": 16, "alpha": 32, "dropout": 0.0}}
    print(f"model: {args.model} ({base}); device {args.device}, {os.cpu_count()} CPU cores; "
          f"{args.batch} x {args.grad_accum} rows of up to {args.seq_len} tokens per update (the same for every N); "
          f"{args.steps} steps, {args.warmup} left out; {args.repeats} repeats", flush=True)
    results: dict[int, list[dict[str, float]]] = {n: [] for n in args.nproc}
    order = list(args.nproc)
    for repeat in range(args.repeats):
        for n in order if repeat % 2 == 0 else reversed(order):
            started = time.monotonic()
            result = run_job({**spec, "name": f"ddp-{n}-{repeat}", "nproc": n}, work / f"ddp-{n}-{repeat}.log",
                             args.warmup)
            results[n].append(result)
            print(f"  run {repeat + 1}, {n} process(es): step {result['step_s']:.3f} s, "
                  f"{result['tokens_per_s']:.0f} tokens/s ({time.monotonic() - started:.0f} s with loading "
                  "and measuring)", flush=True)
    first = args.nproc[0]
    base_rate = statistics.median(r["tokens_per_s"] for r in results[first])
    print(f"\n{'processes':>9}  {'step (s)':>9}  {'tokens/s':>9}  {'vs ' + str(first):>7}")
    for n in args.nproc:
        step = statistics.median(r["step_s"] for r in results[n])
        rate = statistics.median(r["tokens_per_s"] for r in results[n])
        print(f"{n:>9}  {step:>9.3f}  {rate:>9.0f}  {rate / base_rate:>6.2f}x")
    print(gpu_plan(args.model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
