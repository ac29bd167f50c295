"""Does "teach it my documents" teach? Hearth with no settings against a plain transformers + peft script.

On a small fictional handbook (``tests/fixtures/handbook``: facts the base model cannot know) and 24
hand-written, paraphrased multiple-choice questions about it (``tests/fixtures/handbook_questions.json``):

1. Hearth: ``hearth finetune STARTER --docs HANDBOOK --out NAME`` with no settings (cold: a fresh
   HEARTH_HOME, so the GGUF is converted for training as on a user's first run), timed per stage from
   its JSON events; then ``hearth export`` and the questions scored in llama.cpp on the GGUF base with
   the GGUF LoRA applied (the engine's ``score``: log-likelihood of each choice after the stem).
2. Baseline, as a competent user would write it: transformers loads the GGUF (``gguf_file=``), peft
   LoRA r=16 (alpha 32) on all seven projections, AdamW at lr 3e-4 with a constant rate, the files
   concatenated into 256-token rows, batch 2, bf16 autocast where the CPU has native bf16 (as Hearth
   decides). Scored in torch with the same rule after 6 and after 12 epochs (one run: with a constant
   rate the first 6 epochs of the 12-epoch run are the 6-epoch run; its time is taken at that point).
3. ``--methods``: Hearth with ``--method`` each of lora-plus, dora, lora-fa, vera, delta-lora (and
   lora): accuracy, the job's own knowledge check, time and peak memory.

4. ``--seeds N``: the no-settings run again with seeds 1..N-1 (24 questions: one is 4 points, and a run's
   shuffling and starting weights move the figure by several).
5. ``--qa-writer GGUF``: ``--qa-model GGUF`` (point 4 of the issue: Q&A pairs written by a local
   instruct model, trained after the text), with how many pairs it wrote and kept.

    .venv/bin/python bench/document_learning.py [--methods] [--seeds N] [--qa-writer GGUF] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HANDBOOK = ROOT / "tests" / "fixtures" / "handbook"
QUESTIONS = ROOT / "tests" / "fixtures" / "handbook_questions.json"
METHODS = ("lora-plus", "dora", "lora-fa", "vera", "delta-lora")  # lora is the default run
PY = sys.executable


def questions() -> list[dict[str, Any]]:
    return list(json.loads(QUESTIONS.read_text(encoding="utf-8"))["questions"])


# -- scoring ---------------------------------------------------------------------------------------
def score_llama(model: Path, lora: Path | None) -> float:
    """Accuracy on the questions in llama.cpp (the engine), base GGUF plus an optional GGUF LoRA."""
    from core.engine import Engine, LoadOptions

    with Engine() as engine:
        engine.load(model, LoadOptions(n_ctx=512, n_threads=os.cpu_count() or 2, loras=[(str(lora), 1.0)] if lora else []))
        right = 0
        for q in questions():
            scores = engine.score(q["stem"], [" " + c for c in q["choices"]])
            best = max(range(len(scores)), key=lambda i: scores[i]["logprob"])
            right += int(best == q["answer"])
    return right / len(questions())


def score_torch(model: Any, tokenizer: Any) -> float:
    import torch

    right = 0
    model.eval()
    with torch.no_grad():
        for q in questions():
            values = []
            ctx = tokenizer(q["stem"], add_special_tokens=True)["input_ids"]
            for choice in q["choices"]:
                full = tokenizer(q["stem"] + " " + choice, add_special_tokens=True)["input_ids"]
                split = 0
                while split < min(len(ctx), len(full)) and ctx[split] == full[split]:
                    split += 1
                ids = torch.tensor([full])
                logits = model(input_ids=ids).logits.float()[0]
                logp = torch.log_softmax(logits[:-1], -1)
                values.append(float(sum(logp[i - 1, full[i]] for i in range(split, len(full)))))
            right += int(max(range(len(values)), key=values.__getitem__) == q["answer"])
    model.train()
    return right / len(questions())


# -- Hearth ------------------------------------------------------------------------------------------
def run_hearth(home: Path, starter: Path, name: str, extra: list[str]) -> dict[str, Any]:
    """One ``hearth finetune --docs`` run as a user would start it; times per stage from its events."""
    env = {**os.environ, "HEARTH_HOME": str(home)}
    cmd = [PY, "bench/document_learning.py", "--child-finetune", str(starter), name, *extra]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    stages: list[tuple[str, float]] = []
    events: list[dict[str, Any]] = []
    peak = 0
    for line in proc.stdout:
        if line.startswith("@peak "):
            peak = int(line.split()[1])
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        events.append(event)
        now = time.perf_counter() - started
        if event.get("event") == "stage":
            stages.append((f"{event['stage']}: {event.get('message', '')}", now))
        if event.get("event") == "done":
            stages.append(("done", now))
    err = proc.stderr.read() if proc.stderr else ""
    if proc.wait() != 0:
        raise SystemExit(f"hearth finetune failed:\n{err[-3000:]}")
    total = time.perf_counter() - started
    done = next(e for e in events if e.get("event") == "done")
    settings = next(e for e in events if e.get("event") == "settings")
    breakdown = []
    for (label, t0), (_next, t1) in itertools.pairwise(stages):
        breakdown.append((label, t1 - t0))
    return {"wall_s": total, "breakdown": breakdown, "metrics": done["metrics"], "settings": settings, "events": events,
            "peak_mb": peak / 1024, "first_stage_s": stages[0][1] if stages else 0.0}


def known(result: dict[str, Any]) -> str:
    """The job's knowledge check as "before->after/total" for the table."""
    k = result["metrics"].get("knowledge", {})
    return f"{k.get('before')}->{k.get('after')}/{k.get('total')}"


def child_finetune(starter: str, name: str, extra: list[str]) -> None:
    """Run the CLI in a child and report the largest descendant's peak memory (ru_maxrss, KiB on Linux)."""
    code = subprocess.call([PY, "-m", "core", "finetune", starter, "--docs", str(HANDBOOK), "--out", name,
                            "--json", *extra], cwd=ROOT)
    print(f"@peak {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}", flush=True)
    sys.exit(code)


def hearth_run(home: Path, starter: Path, name: str, extra: list[str]) -> tuple[dict[str, Any], float]:
    """A Hearth run and its accuracy on the questions (llama.cpp, exported LoRA; NaN if not exportable)."""
    result = run_hearth(home, starter, name, extra)
    lora = export(home, name)
    return result, score_llama(starter, lora) if lora else float("nan")


def export(home: Path, name: str) -> Path | None:
    env = {**os.environ, "HEARTH_HOME": str(home)}
    out = home / f"{name}.gguf"
    proc = subprocess.run([PY, "-m", "core", "export", name, "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  (export of {name} refused: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else '?'})")
        return None
    return out


# -- baseline ----------------------------------------------------------------------------------------
def baseline(starter: Path, epochs: int, checkpoints: tuple[int, ...]) -> list[dict[str, Any]]:
    """The plain script; returns accuracy and wall time (from process start) at each checkpoint epoch."""
    t_start = time.perf_counter()
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    tokenizer = AutoTokenizer.from_pretrained(str(starter.parent), gguf_file=starter.name)
    model = AutoModelForCausalLM.from_pretrained(str(starter.parent), gguf_file=starter.name, torch_dtype=torch.float32)
    loaded = time.perf_counter() - t_start
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"]))
    text = "\n\n".join(p.read_text(encoding="utf-8") for p in sorted(HANDBOOK.iterdir()) if p.is_file())
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    rows = [[tokenizer.bos_token_id, *ids[i : i + 255]] for i in range(0, len(ids), 255)]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)
    results = []
    scoring = 0.0
    base_acc = None
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(rows)).tolist()
        for i in range(0, len(order), 2):
            batch = [rows[j] for j in order[i : i + 2]]
            width = max(len(r) for r in batch)
            input_ids = torch.tensor([r + [tokenizer.pad_token_id or 0] * (width - len(r)) for r in batch])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in batch])
            labels = input_ids.masked_fill(mask == 0, -100)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        if epoch in checkpoints:
            t0 = time.perf_counter()
            acc = score_torch(model, tokenizer)
            if base_acc is None:
                with model.disable_adapter():
                    base_acc = score_torch(model, tokenizer)
            scoring += time.perf_counter() - t0
            results.append({"epochs": epoch, "accuracy": acc, "base_accuracy_torch": base_acc,
                             "wall_s": time.perf_counter() - t_start - scoring, "load_s": loaded,
                             "steps": epoch * ((len(rows) + 1) // 2), "rows": len(rows)})
    return results


def run_baseline(starter: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([PY, "bench/document_learning.py", "--child-baseline", str(starter)], cwd=ROOT,
                          capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("@result ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"baseline failed:\n{proc.stderr[-3000:]}")
    return list(json.loads(line[len("@result "):]))


# -- main ----------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False)  # "--method X" is for the child, not "--methods"
    parser.add_argument("--methods", action="store_true", help="also run each other method")
    parser.add_argument("--qa-writer", metavar="GGUF", help="also run with --qa-model GGUF (point 4: Q&A pairs mixed in)")
    parser.add_argument("--seeds", type=int, default=1, help="repeat the no-settings run with seeds 0..N-1")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-default", action="store_true")
    parser.add_argument("--child-finetune", nargs="+")
    parser.add_argument("--child-baseline")
    args, extra = parser.parse_known_args()
    if args.child_finetune:
        child_finetune(args.child_finetune[0], args.child_finetune[1], extra)
    if args.child_baseline:
        print("@result " + json.dumps(baseline(Path(args.child_baseline), 12, (6, 12))), flush=True)
        return

    from bench.common import starter_model_path

    starter = starter_model_path()
    print(f"handbook: {len(list(HANDBOOK.iterdir()))} files, {len(questions())} questions; model {starter.name}; "
          f"{os.cpu_count()} cores")
    base_acc = score_llama(starter, None)
    print(f"base model (llama.cpp): {base_acc:.0%}")
    rows: list[tuple[str, float, float, float, str]] = []
    # One home for every Hearth run: the first is cold (the GGUF converted for training, as on a user's
    # first job), the later ones find the conversion in the cache, as a user's later jobs do.
    tmp_home = tempfile.TemporaryDirectory(prefix="hearth-bench-docs-")
    home = Path(tmp_home.name)
    if not args.skip_default:
        result, acc = hearth_run(home, starter, "docs-default", [])
        k = result["metrics"].get("knowledge", {})
        s = result["settings"]
        print(f"\nHearth, no settings: accuracy {base_acc:.0%} -> {acc:.0%} in {result['wall_s']:.0f} s "
              f"(peak {result['peak_mb']:.0f} MB)")
        print(f"  knowledge check: answered {k.get('before')} of {k.get('total')} before, {k.get('after')} of "
              f"{k.get('total')} after")
        print(f"  plan: {s['total_steps']} steps, {s['epochs']:g} epochs, lr {s['lr']:g}, seq {s['seq_len']} x "
              f"batch {s['batch']} x accum {s['grad_accum']}; estimated training {s['estimated_train_s']:.0f} s")
        print(f"  loss on the documents {result['metrics']['before']['eval_loss']:.3f} -> "
              f"{result['metrics']['after']['eval_loss']:.3f}")
        print(f"  start-up before the first stage: {result['first_stage_s']:.1f} s")
        for label, seconds in result["breakdown"]:
            print(f"  {seconds:7.1f} s  {label}")
        for sample in result["metrics"].get("samples", [])[:2]:
            print(f"  sample > {sample['prompt'][-80:]!r}\n     before: {sample['before'][:120]!r}\n"
                  f"     after:  {sample['after'][:120]!r}")
        rows.append(("hearth (no settings)", acc, result["wall_s"], result["peak_mb"], known(result)))
        for seed in range(1, args.seeds):
            result, acc = hearth_run(home, starter, f"docs-seed{seed}", ["--seed", str(seed)])
            rows.append((f"hearth (no settings) seed {seed}", acc, result["wall_s"], result["peak_mb"], known(result)))
            print(f"seed {seed}: {acc:.0%} in {result['wall_s']:.0f} s, knowledge {rows[-1][4]}", flush=True)
    if args.qa_writer:
        result, acc = hearth_run(home, starter, "docs-qa", ["--qa-model", args.qa_writer, "--objective", "sft"])
        data = next((e for e in result["events"] if e.get("event") == "data"), {})
        qa = data.get("synthetic_qa") or {}
        rows.append(("hearth --qa-model", acc, result["wall_s"], result["peak_mb"], known(result)))
        print(f"\nwith --qa-model {Path(args.qa_writer).name}: {acc:.0%} in {result['wall_s']:.0f} s; pairs generated "
              f"{qa.get('generated')}, kept {qa.get('kept')}; first: {(qa.get('examples') or [None])[:2]}", flush=True)
    if not args.skip_baseline:
        for r in run_baseline(starter):
            print(f"\nbaseline {r['epochs']} epochs: accuracy {r['base_accuracy_torch']:.0%} -> {r['accuracy']:.0%} "
                  f"in {r['wall_s']:.0f} s ({r['load_s']:.0f} s loading; {r['steps']} steps over {r['rows']} rows)")
            rows.append((f"baseline {r['epochs']} epochs", r["accuracy"], r["wall_s"], float("nan"), "-"))
    if args.methods:
        for method in METHODS:
            result, acc = hearth_run(home, starter, f"docs-{method}", ["--method", method])
            load = next((t for label, t in result["breakdown"] if label.startswith("model:")), 0.0)
            rows.append((f"hearth --method {method}", acc, result["wall_s"], result["peak_mb"], known(result)))
            print(f"{method}: {acc:.0%} in {result['wall_s']:.0f} s (loading {load:.0f} s), peak "
                  f"{result['peak_mb']:.0f} MB, {result['settings']['total_steps']} steps, knowledge {rows[-1][4]}",
                  flush=True)
    print(f"\n{'run':28} {'accuracy':>9} {'time s':>8} {'peak MB':>8}  knowledge check")
    for label, acc, wall, peak, check in rows:
        print(f"{label:28} {acc:9.0%} {wall:8.0f} {peak:8.0f}  {check}")
    tmp_home.cleanup()
    hearth = next((r for r in rows if r[0] == "hearth (no settings)"), None)
    b6 = next((r for r in rows if r[0] == "baseline 6 epochs"), None)
    b12 = next((r for r in rows if r[0] == "baseline 12 epochs"), None)
    if hearth and b6 and b12:
        print(f"\nHearth / baseline-6 time: {hearth[2] / b6[2]:.2f} (target <= 1); accuracy Hearth {hearth[1]:.0%} vs "
              f"baseline-12 {b12[1]:.0%} (target >= it and >= 75%)")


if __name__ == "__main__":
    main()
