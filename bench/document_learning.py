"""Does "teach it my documents" teach, in other words? Hearth with no settings, retrieval and a plain peft script.

Two small fictional fixtures (facts the base model cannot know), each with hand-written multiple-choice
questions worded differently from the documents:

- ``handbook``: ``tests/fixtures/handbook`` (a lighthouse cooperative), 24 questions with made-up distractors;
- ``rescue``: ``tests/fixtures/rescue`` (a mountain-rescue team), 30 questions whose distractors are all other
  facts of the same documents and 12 of which ask from the other side of the relation (``"direction"``).

Per fixture, in one run with no settings:

1. base: the starter GGUF in llama.cpp (the engine's ``score``: log-likelihood of each choice after the stem);
2. Hearth: ``hearth finetune STARTER --docs DIR --out NAME`` (cold: a fresh HEARTH_HOME per fixture, so the
   GGUF is converted for training as on a user's first run), timed per stage from its JSON events; then
   ``hearth export`` and the questions scored in llama.cpp with the GGUF LoRA applied;
3. base + retrieval and Hearth + retrieval: the top 3 passages of a Knowledge collection (the one the job
   indexed, event "indexed"; else one made here with ``hearth docs add``) before each question, as
   ``core.docs.compare`` puts them before its probes (numbered by ``build_context`` within its budget);
4. baseline, as a competent user would write it: transformers loads the GGUF (``gguf_file=``), peft LoRA
   r=16 (alpha 32) on all seven projections, AdamW at lr 3e-4 with a constant rate, the files concatenated
   into 256-token rows, batch 2, bf16 autocast where the CPU has native bf16 (as Hearth decides); scored in
   torch with the same rule after 6 and after 12 epochs (one run: with a constant rate the first 6 epochs
   of the 12-epoch run are the 6-epoch run; its time is taken at that point).

Reported per fixture: accuracy of each arm, forward and reverse questions apart, Hearth's wall time over the
6-epoch baseline's, and the job's own knowledge check ("from your sentences a of b; asked in other words c
of d"). Options:

- ``--ablate``: Hearth with ``--views`` = the default set minus one view each, and ``--views none``;
- ``--seeds N``: the no-settings run with seeds 0..N-1 (median and range: one question is 3-4 points);
- ``--writer GGUF``: Hearth with ``--writer GGUF`` (restatements by a local instruct model, guarded);
- ``--methods``, ``--qa-writer GGUF``: each other method; Q&A pairs written by ``--qa-model GGUF``;
- ``--hearth-args "..."``: more flags for every ``hearth finetune`` (e.g. ``--max-steps 2`` for a smoke run);
- ``--json PATH``: every figure as JSON.

    .venv/bin/python bench/document_learning.py [--fixture handbook|rescue|both] [--ablate] [--seeds N]
        [--writer GGUF] [--methods] [--qa-writer GGUF] [--skip-baseline] [--skip-default] [--json PATH]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT / "tests" / "fixtures"
FIXTURE_NAMES = ("handbook", "rescue")
METHODS = ("lora-plus", "dora", "lora-fa", "vera", "delta-lora")  # lora is the default run
FALLBACK_VIEWS = ("facts", "shuffled", "reversed", "masked", "questions")
PASSAGES = 3  # passages before each question in the retrieval arms
N_CTX = 2048  # room for the passages and the stem
PY = sys.executable


@dataclass(frozen=True)
class Fixture:
    """A folder of documents and its questions file (``tests/fixtures/<name>`` and ``<name>_questions.json``)."""

    name: str

    @property
    def docs(self) -> Path:
        return FIXTURES / self.name

    @property
    def questions(self) -> list[dict[str, Any]]:
        path = FIXTURES / f"{self.name}_questions.json"
        return list(json.loads(path.read_text(encoding="utf-8"))["questions"])


def default_views() -> list[str]:
    """The documents objective's default views (the registry's, or the issue's list before it exists)."""
    try:
        from core.finetune.data.views import DEFAULT_VIEWS
    except ImportError:
        return list(FALLBACK_VIEWS)
    return list(DEFAULT_VIEWS)


# -- scoring ---------------------------------------------------------------------------------------
def summarise(questions: list[dict[str, Any]], right: list[bool]) -> dict[str, Any]:
    """Accuracy over all questions and over the forward and reverse ones (None where a fixture has none)."""
    def share(direction: str) -> float | None:
        hits = [r for q, r in zip(questions, right, strict=True) if q.get("direction") == direction]
        return sum(hits) / len(hits) if hits else None

    return {"accuracy": sum(right) / len(right), "forward": share("forward"), "reverse": share("reverse"),
            "right": [int(r) for r in right]}


def as_probe(q: dict[str, Any]) -> Any:
    """A question as a ``Probe`` (stem as the prefix, no suffix): ``core.docs.compare.score_probe`` then scores
    each choice as " " + choice after the stem (and the passages), as the probes of the comparison are scored."""
    from core.finetune.data.probes import Probe

    return Probe(source=q["source"], sentence=q["stem"], prefix=q["stem"] + " ", answer=q["choices"][q["answer"]],
                 suffix="", choices=tuple(q["choices"]), answer_index=q["answer"], kind="question")


def retrieved(engine: Any, collection_name: str, questions: list[dict[str, Any]]) -> list[str]:
    """The top passages for each question's stem, numbered as the comparison numbers them, within its budget."""
    from core.docs import DocsLibrary, build_context, retrieval_budget, search
    from core.docs.compare import BUDGET_TOKENS, probe_query

    def count(text: str) -> int:
        return len(engine.tokenize(text))

    texts = []
    with DocsLibrary().open(collection_name) as collection:
        for q in questions:
            probe = as_probe(q)
            reserve = count(probe.prefix) + max(count(c) for c in probe.choices) + 32
            budget, _note = retrieval_budget(N_CTX, BUDGET_TOKENS, reserve)
            texts.append(build_context(search(collection, probe_query(probe), PASSAGES), budget, count).text)
    return texts


def score_llama(model: Path, lora: Path | None, questions: list[dict[str, Any]],
                collection: str | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Scores in llama.cpp (the engine), base GGUF plus an optional GGUF LoRA: alone, and with the passages of
    ``collection`` (if given) before each question."""
    from core.docs.compare import score_probe
    from core.engine import Engine, LoadOptions

    probes = [as_probe(q) for q in questions]
    with Engine() as engine:
        engine.load(model, LoadOptions(n_ctx=N_CTX, n_threads=os.cpu_count() or 2,
                                       loras=[(str(lora), 1.0)] if lora else []))
        alone = summarise(questions, [score_probe(engine, p) == p.answer_index for p in probes])
        if collection is None:
            return alone, None
        contexts = retrieved(engine, collection, questions)
        both = summarise(questions, [score_probe(engine, p, c) == p.answer_index
                                     for p, c in zip(probes, contexts, strict=True)])
    return alone, both


def score_torch(model: Any, tokenizer: Any, questions: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    right = []
    model.eval()
    with torch.no_grad():
        for q in questions:
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
            right.append(max(range(len(values)), key=values.__getitem__) == q["answer"])
    model.train()
    return summarise(questions, right)


# -- Hearth ------------------------------------------------------------------------------------------
class ArmFailed(RuntimeError):
    """One arm could not run (e.g. a flag this checkout does not have yet); the others go on."""


def run_hearth(home: Path, starter: Path, fixture: Fixture, name: str, extra: list[str]) -> dict[str, Any]:
    """One ``hearth finetune --docs`` run as a user would start it; times per stage from its events."""
    env = {**os.environ, "HEARTH_HOME": str(home)}
    cmd = [PY, "bench/document_learning.py", "--child-finetune", str(starter), name, str(fixture.docs), *extra]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    stages: list[tuple[str, float]] = []
    events: list[dict[str, Any]] = []
    peak = 0
    done_at = None
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
            done_at = now
    err = proc.stderr.read() if proc.stderr else ""
    if proc.wait() != 0:
        last = next((e["message"] for e in reversed(events) if e.get("event") == "error"), None)
        raise ArmFailed(last or (err.strip().splitlines() or ["?"])[-1])
    total = time.perf_counter() - started
    done = next(e for e in events if e.get("event") == "done")
    settings = next(e for e in events if e.get("event") == "settings")
    breakdown = [(label, t1 - t0) for (label, t0), (_next, t1) in itertools.pairwise(stages)]
    # After the job the CLI runs the four-way comparison (tune + index): the user waits for it too.
    breakdown.append(("after the job: the CLI's comparison, exit", total - (done_at or total)))
    comparison = next((e for e in events if e.get("event") == "comparison"), None)
    evals = [e for e in events if e.get("event") == "eval" and "step" in e]
    indexed = next((e for e in events if e.get("event") == "indexed"), None)
    return {"wall_s": total, "job_s": done_at or total, "comparison": comparison, "breakdown": breakdown,
            "metrics": done["metrics"], "settings": settings, "events": events,
            "peak_mb": peak / 1024, "first_stage_s": stages[0][1] if stages else 0.0,
            "train_s": sum(t for label, t in breakdown if label.startswith("train:")),
            "steps": evals[-1]["step"] if evals else settings.get("total_steps"),
            "planned_steps": settings.get("total_steps"),
            "collection": indexed.get("collection") if indexed else None}


def knowledge(result: dict[str, Any]) -> dict[str, Any]:
    """The job's own check from its knowledge events (the manifest's figures where the events lack them)."""
    events = result["events"]
    after = next((e for e in reversed(events) if e.get("event") == "knowledge" and e.get("phase") == "after"), None)
    saved = result["metrics"].get("knowledge") or {}
    source = after if after is not None else saved
    if not source:
        return {}
    out: dict[str, Any] = {"sentences": {key: source.get(key) for key in ("before", "after", "total")}}
    restated = source.get("restated") if isinstance(source.get("restated"), dict) else saved.get("restated")
    if isinstance(restated, dict):
        out["restated"] = {key: restated.get(key) for key in ("before", "after", "total")}
    if after is not None and after.get("message"):
        out["message"] = after["message"]
    return out


def data_event(result: dict[str, Any]) -> dict[str, Any]:
    """The job's "data" event (its views, and what a writer kept), empty if it sent none."""
    return next((dict(e) for e in result["events"] if e.get("event") == "data"), {})


def known(check: dict[str, Any]) -> str:
    """The knowledge check for the table: "from your sentences a of b (x before); in other words c of d (y)"."""
    if not check:
        return "-"
    s = check["sentences"]
    text = f"sentences {s.get('after')}/{s.get('total')} ({s.get('before')} before)"
    r = check.get("restated")
    if r:
        text += f"; other words {r.get('after')}/{r.get('total')} ({r.get('before')} before)"
    return text


def child_finetune(starter: str, name: str, docs: str, extra: list[str]) -> None:
    """Run the CLI in a child and report the largest descendant's peak memory (ru_maxrss, KiB on Linux)."""
    code = subprocess.call([PY, "-m", "core", "finetune", starter, "--docs", docs, "--out", name, "--json", *extra],
                           cwd=ROOT)
    print(f"@peak {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}", flush=True)
    sys.exit(code)


def export(home: Path, name: str) -> Path | None:
    env = {**os.environ, "HEARTH_HOME": str(home)}
    out = home / f"{name}.gguf"
    proc = subprocess.run([PY, "-m", "core", "export", name, "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  (export of {name} refused: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else '?'})")
        return None
    return out


def index_documents(home: Path, fixture: Fixture) -> str:
    """A Knowledge collection of the fixture's documents made with ``hearth docs add`` (as a user would)."""
    name = f"bench-{fixture.name}"
    env = {**os.environ, "HEARTH_HOME": str(home)}
    proc = subprocess.run([PY, "-m", "core", "docs", "add", name, str(fixture.docs), "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"hearth docs add failed:\n{proc.stderr[-2000:]}")
    return name


@dataclass
class Bench:
    """One fixture's runs: its HEARTH_HOME, the starter model, extra flags for every finetune, and the rows."""

    fixture: Fixture
    home: Path
    starter: Path
    hearth_args: list[str]
    collection: str
    rows: list[dict[str, Any]]

    def hearth(self, label: str, name: str, extra: list[str], retrieval: bool = False) -> dict[str, Any] | None:
        """A Hearth run, scored alone (and with passages, with ``retrieval``); a row per score; None if it failed."""
        print(f"[{self.fixture.name}] {label} ...", flush=True)
        try:
            result = run_hearth(self.home, self.starter, self.fixture, name, [*extra, *self.hearth_args])
        except ArmFailed as exc:
            print(f"  {label} failed: {exc}", flush=True)
            self.rows.append({"arm": label, "error": str(exc)})
            return None
        lora = export(self.home, name)
        collection = (result["collection"] or self.collection) if retrieval else None
        alone, both = score_llama(self.starter, lora, self.fixture.questions, collection) if lora else (None, None)
        check = knowledge(result)
        common = {"wall_s": result["wall_s"], "job_s": result["job_s"], "train_s": result["train_s"],
                  "steps": result["steps"],
                  "planned_steps": result["planned_steps"], "peak_mb": result["peak_mb"], "knowledge": check,
                  # the planner's guess against the measured training time (core.finetune.planner)
                  **{k: result["settings"].get(k) for k in ("tokens_to_train", "trained_tokens", "estimated_train_s")}}
        self.rows.append({"arm": label, **(alone or {"accuracy": float("nan")}), **common})
        if both is not None:
            self.rows.append({"arm": f"{label} + retrieval", **both, **common,
                              "collection": collection, "job_indexed": result["collection"] is not None})
        result["accuracy"] = alone["accuracy"] if alone else float("nan")
        print(f"  {result['accuracy']:.0%} in {result['wall_s']:.0f} s ({result['steps']} steps, train "
              f"{result['train_s']:.0f} s); knowledge {known(check)}", flush=True)
        return result


# -- baseline ----------------------------------------------------------------------------------------
def baseline(starter: Path, fixture: Fixture, epochs: int, checkpoints: tuple[int, ...]) -> list[dict[str, Any]]:
    """The plain script; returns accuracy and wall time (from process start) at each checkpoint epoch."""
    t_start = time.perf_counter()
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    questions = fixture.questions
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    tokenizer = AutoTokenizer.from_pretrained(str(starter.parent), gguf_file=starter.name)
    model: Any = AutoModelForCausalLM.from_pretrained(str(starter.parent), gguf_file=starter.name,
                                                      torch_dtype=torch.float32)
    loaded = time.perf_counter() - t_start
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"]))
    text = "\n\n".join(p.read_text(encoding="utf-8") for p in sorted(fixture.docs.iterdir()) if p.is_file())
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
            score = score_torch(model, tokenizer, questions)
            if base_acc is None:
                with model.disable_adapter():
                    base_acc = score_torch(model, tokenizer, questions)["accuracy"]
            scoring += time.perf_counter() - t0
            results.append({**score, "epochs": epoch, "base_accuracy_torch": base_acc,
                            "wall_s": time.perf_counter() - t_start - scoring, "load_s": loaded,
                            "steps": epoch * ((len(rows) + 1) // 2), "rows": len(rows)})
    return results


def run_baseline(starter: Path, fixture: Fixture) -> list[dict[str, Any]]:
    proc = subprocess.run([PY, "bench/document_learning.py", "--child-baseline", str(starter), fixture.name],
                          cwd=ROOT, capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("@result ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"baseline failed:\n{proc.stderr[-3000:]}")
    return list(json.loads(line[len("@result "):]))


# -- one fixture ---------------------------------------------------------------------------------------
def run_fixture(fixture: Fixture, starter: Path, args: argparse.Namespace, hearth_args: list[str]) -> dict[str, Any]:
    """Every arm on one fixture; the figures for its tables and the JSON."""
    tmp_home = tempfile.TemporaryDirectory(prefix=f"hearth-bench-{fixture.name}-")
    home = Path(tmp_home.name)
    # The in-process search opens collections under this home; the engine writes nothing there.
    os.environ["HEARTH_HOME"] = str(home)
    questions = fixture.questions
    print(f"\n## {fixture.name}: {sum(1 for p in fixture.docs.iterdir() if p.is_file())} files, {len(questions)} "
          f"questions ({sum(q.get('direction') == 'reverse' for q in questions)} reverse)", flush=True)
    bench = Bench(fixture, home, starter, hearth_args, index_documents(home, fixture), [])
    base, base_retrieval = score_llama(starter, None, questions, bench.collection)
    bench.rows.append({"arm": "base (llama.cpp)", **base})
    if base_retrieval is not None:
        bench.rows.append({"arm": "base + retrieval", **base_retrieval, "collection": bench.collection})
    print(f"  base {base['accuracy']:.0%}, base + retrieval {base_retrieval['accuracy'] if base_retrieval else 0:.0%}",
          flush=True)
    out: dict[str, Any] = {"fixture": fixture.name, "questions": len(questions)}
    default = None
    if not args.skip_default:
        # The first run in this home is cold (the GGUF converted for training, as on a user's first job).
        default = bench.hearth("hearth (no settings)", "docs-default", [], retrieval=True)
        if default is not None:
            s = default["settings"]
            metrics = default["metrics"]
            loss = (metrics.get("before", {}).get("eval_loss"), metrics.get("after", {}).get("eval_loss"))
            print(f"  plan: {s.get('total_steps')} steps, {s.get('epochs')} epochs, lr {s.get('lr')}, seq "
                  f"{s.get('seq_len')} x batch {s.get('batch')} x accum {s.get('grad_accum')}; estimated training "
                  f"{s.get('estimated_train_s')} s; loss on the documents {loss[0]} -> {loss[1]}")
            for label, seconds in default["breakdown"]:
                print(f"  {seconds:7.1f} s  {label[:100]}")
            out["default"] = {"plan": {k: s.get(k) for k in ("total_steps", "epochs", "lr", "seq_len", "batch",
                                                              "grad_accum", "estimated_train_s")},
                              "breakdown": default["breakdown"], "first_stage_s": default["first_stage_s"],
                              "views": data_event(default).get("views"),
                              "samples": default["metrics"].get("samples", [])[:2],
                              "comparison": default["comparison"]}
        seeds = [default["accuracy"]] if default is not None else []
        for seed in range(1, args.seeds):
            result = bench.hearth(f"hearth (no settings) seed {seed}", f"docs-seed{seed}", ["--seed", str(seed)])
            if result is not None:
                seeds.append(result["accuracy"])
        if args.seeds > 1 and seeds:
            out["seeds"] = {"accuracies": seeds, "median": statistics.median(seeds), "min": min(seeds),
                            "max": max(seeds)}
    if args.ablate:
        views = default_views()
        out["ablation"] = []
        runs: list[str | None] = [*views, None]
        if args.ablate != "all":
            wanted = [v.strip() for v in args.ablate.split(",") if v.strip()]
            runs = [None if v == "none" else v for v in wanted]
        for left_out in runs:
            chosen = [v for v in views if v != left_out] if left_out else []
            label = f"views without {left_out}" if left_out else "views none"
            result = bench.hearth(label, f"docs-no-{left_out or 'views'}",
                                  ["--views", ",".join(chosen) if chosen else "none"])
            out["ablation"].append({"left_out": left_out or "all", "views": chosen, **({
                "accuracy": result["accuracy"], "steps": result["steps"], "train_s": result["train_s"],
                "job_s": result["job_s"], "wall_s": result["wall_s"], "planned_steps": result["planned_steps"],
                **{k: result["settings"].get(k) for k in ("tokens_to_train", "trained_tokens", "estimated_train_s")}}
                if result else {"error": bench.rows[-1].get("error")})})
    if args.writer:
        result = bench.hearth(f"hearth --writer {Path(args.writer).name}", "docs-writer", ["--writer", args.writer],
                              retrieval=True)
        if result is not None:
            out["written"] = data_event(result).get("written") or {}
    if args.qa_writer:
        result = bench.hearth("hearth --qa-model", "docs-qa", ["--qa-model", args.qa_writer, "--objective", "sft"])
        if result is not None:
            out["synthetic_qa"] = data_event(result).get("synthetic_qa")
    if not args.skip_baseline:
        print(f"[{fixture.name}] baseline (transformers + peft, 12 epochs) ...", flush=True)
        for r in run_baseline(starter, fixture):
            bench.rows.append({"arm": f"baseline {r['epochs']} epochs", **r})
    if args.methods:
        for method in METHODS:
            bench.hearth(f"hearth --method {method}", f"docs-{method}", ["--method", method])
    tmp_home.cleanup()
    out["rows"] = bench.rows
    hearth = next((r for r in bench.rows if r["arm"] == "hearth (no settings)" and "wall_s" in r), None)
    b6 = next((r for r in bench.rows if r["arm"] == "baseline 6 epochs"), None)
    if hearth and b6:
        out["time_ratio_vs_baseline6"] = hearth["job_s"] / b6["wall_s"]  # both: training and their own checks
        out["command_time_ratio_vs_baseline6"] = hearth["wall_s"] / b6["wall_s"]  # with the CLI's comparison
    return out


# -- tables ----------------------------------------------------------------------------------------------
def pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.0%}"


def num(value: Any, fmt: str = ".0f") -> str:
    return "-" if value is None or (isinstance(value, float) and value != value) else format(value, fmt)


def print_tables(report: dict[str, Any]) -> None:
    """Markdown: per fixture, the arms; the targets; the seeds, ablation and writer where run."""
    for fx in report["fixtures"]:
        print(f"\n### {fx['fixture']} ({fx['questions']} questions)\n")
        print("| arm | accuracy | forward | reverse | job s | command s | train s | steps | peak MB "
              "| knowledge check |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for r in fx["rows"]:
            if "error" in r:
                print(f"| {r['arm']} | failed: {r['error'][:80]} | | | | | | | | |")
                continue
            print(f"| {r['arm']} | {pct(r.get('accuracy'))} | {pct(r.get('forward'))} | {pct(r.get('reverse'))} | "
                  f"{num(r.get('job_s', r.get('wall_s')))} | {num(r.get('wall_s'))} | {num(r.get('train_s'))} | "
                  f"{num(r.get('steps'), '')} | "
                  f"{num(r.get('peak_mb'))} | {known(r['knowledge']) if 'knowledge' in r else '-'} |")
        by = {r["arm"]: r for r in fx["rows"] if "error" not in r}
        tuned, both = by.get("hearth (no settings)"), by.get("hearth (no settings) + retrieval")
        targets = []
        if tuned:
            targets.append(f"tuned alone {pct(tuned['accuracy'])} (target >= 70%)")
        if both:
            targets.append(f"tuned + retrieval {pct(both['accuracy'])} (target >= 90%)")
        if "time_ratio_vs_baseline6" in fx:
            targets.append(f"time Hearth / baseline-6 {fx['time_ratio_vs_baseline6']:.2f} (target <= 2; with the "
                           f"CLI's comparison {fx['command_time_ratio_vs_baseline6']:.2f})")
        if targets:
            print("\n" + "; ".join(targets) + ".")
        comparison = (fx.get("default") or {}).get("comparison")
        if comparison:
            setups = ", ".join(f"{s.get('key')} {s.get('right')}/{s.get('total')}"
                               for s in comparison.get("setups", []))
            print(f"\nthe job's own comparison (its held-out questions): {setups}. {comparison.get('recommendation')}")
        if "seeds" in fx:
            s = fx["seeds"]
            print(f"\nseeds 0..{len(s['accuracies']) - 1}: median {pct(s['median'])}, range {pct(s['min'])}-"
                  f"{pct(s['max'])} ({', '.join(pct(a) for a in s['accuracies'])})")
        if "ablation" in fx:
            print("\n| views | accuracy | steps | train s | job s |\n| --- | ---: | ---: | ---: | ---: |")
            if tuned:
                print(f"| default ({', '.join(default_views())}) | {pct(tuned['accuracy'])} | "
                      f"{num(tuned['steps'], '')} | "
                      f"{num(tuned['train_s'])} | {num(tuned['job_s'])} |")
            for a in fx["ablation"]:
                label = "none" if a["left_out"] == "all" else f"without {a['left_out']}"
                if "error" in a:
                    print(f"| {label} | failed: {str(a['error'])[:60]} | | | |")
                else:
                    print(f"| {label} | {pct(a['accuracy'])} | {num(a['steps'], '')} | {num(a['train_s'])} | "
                          f"{num(a['job_s'])} |")
        if "written" in fx:
            w = fx["written"]
            print(f"\nwriter {w.get('model')}: {w.get('lines')} lines, kept {w.get('kept')}, "
                  f"dropped {w.get('dropped')}")
            for d in (w.get("dropped_examples") or [])[:3]:
                print(f"  dropped ({d.get('why')}): {d.get('text')!r} for {d.get('line')!r}")


# -- main ----------------------------------------------------------------------------------------------
def main() -> None:
    # The children take their flags as they are: "--writer"/"--json" there are hearth finetune's, not ours.
    if len(sys.argv) > 4 and sys.argv[1] == "--child-finetune":
        child_finetune(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
    if len(sys.argv) == 4 and sys.argv[1] == "--child-baseline":
        print("@result " + json.dumps(baseline(Path(sys.argv[2]), Fixture(sys.argv[3]), 12, (6, 12))), flush=True)
        return
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--fixture", choices=[*FIXTURE_NAMES, "both"], default="both")
    parser.add_argument("--ablate", nargs="?", const="all", metavar="VIEWS",
                        help="Hearth with each default view left out, and none (or only the comma-separated VIEWS "
                             "left out, one at a time; 'none' for the run with none)")
    parser.add_argument("--seeds", type=int, default=1, help="repeat the no-settings run with seeds 0..N-1")
    parser.add_argument("--writer", metavar="GGUF", help="also run Hearth with --writer GGUF")
    parser.add_argument("--methods", action="store_true", help="also run each other method")
    parser.add_argument("--qa-writer", metavar="GGUF", help="also run with --qa-model GGUF (Q&A pairs mixed in)")
    parser.add_argument("--hearth-args", default="", metavar="FLAGS",
                        help='more flags for every hearth finetune, e.g. "--max-steps 2" for a smoke run')
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-default", action="store_true")
    parser.add_argument("--json", metavar="PATH", help="write every figure to this JSON file")
    args = parser.parse_args()

    from bench.common import starter_model_path

    starter = starter_model_path()
    names = FIXTURE_NAMES if args.fixture == "both" else (args.fixture,)
    report: dict[str, Any] = {"model": starter.name, "cores": os.cpu_count(), "hearth_args": args.hearth_args,
                              "fixtures": []}
    print(f"model {starter.name}; {os.cpu_count()} cores; fixtures {', '.join(names)}", flush=True)
    for name in names:
        report["fixtures"].append(run_fixture(Fixture(name), starter, args, shlex.split(args.hearth_args)))
    print_tables(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
        print(f"\nfigures written to {args.json}")


if __name__ == "__main__":
    main()
