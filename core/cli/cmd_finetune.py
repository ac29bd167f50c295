"""``hearth finetune`` and ``hearth finetune-methods``.

Training runs in a child process (``core.jobs``); this process only reads its JSON events and draws
a progress bar, so it never imports torch. Ctrl-C asks the job to save a checkpoint and stop.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from core.cli.output import print_json, print_table, status_line
from core.errors import HearthError, TrainingError
from core.units import human_count


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("finetune", help="fine-tune a model on your documents or a dataset (runs locally)")
    p.add_argument("base", metavar="BASE", nargs="?",
                   help="library model name, .gguf path, or Hugging Face folder / cached repo id")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--docs", nargs="+", metavar="PATH", help="documents: folders or .txt/.md/.pdf/.docx/.html files")
    src.add_argument("--data", metavar="FILE.jsonl", help="a JSONL dataset (chat, ShareGPT, Alpaca, text or preference pairs)")
    p.add_argument("--method", default="lora", help="fine-tuning method (see 'hearth finetune-methods'); default lora")
    p.add_argument("--objective", choices=("sft", "pretrain", "dpo"), help="default: from the data")
    p.add_argument("--epochs", type=float, help="passes over the data (default: from the data's size)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    p.add_argument("--lr", type=float, help="learning rate (default: the method's)")
    p.add_argument("--rank", type=int, help="adapter rank (methods that have one)")
    p.add_argument("--alpha", type=float, help="adapter scale alpha (methods that have one)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other method option")
    p.add_argument("--seq-len", type=int, help="tokens per training row (default: from memory)")
    p.add_argument("--batch", type=int, help="rows per micro-batch (default: from memory)")
    p.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--qa-model", metavar="MODEL", help="with --docs: write Q&A pairs with this GGUF model (sft)")
    p.add_argument("--writer", metavar="MODEL",
                   help="with --docs: also train on restatements of the facts written by this instruct model "
                        "(library name or .gguf path); kept only where they keep every name, number and date")
    p.add_argument("--views", metavar="NAMES",
                   help="with --docs: the knowledge views to train on, comma-separated (facts, shuffled, reversed, "
                        "masked, questions, reading, replay), or 'none' for the text as it is (default: all but reading)")
    p.add_argument("--no-index", dest="index", action="store_false",
                   help="with --docs: do not also index the documents into a Knowledge collection named after the "
                        "adapter, nor compare tuning with retrieval at the end")
    p.add_argument("--save-every", type=int, default=50, help="checkpoint every N steps")
    p.add_argument("--save-minutes", type=float, metavar="M",
                   help="also checkpoint after M minutes of training (default 2; 0: only every N steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--out", metavar="NAME", help="adapter name (default: from the base and method)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run named by --out")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train with N processes on this computer (torchrun: one per GPU, or a few on the CPU); "
                        "the same rows per update, so the result does not depend on N")
    p.add_argument("--export-launch", metavar="DIR",
                   help="do not train: write the spec, an accelerate config and the command to run this job on a "
                        "multi-GPU or multi-node machine into DIR")
    p.add_argument("--gpus-per-node", type=int, metavar="N",
                   help="with --export-launch: GPUs on each machine (default: counted there when it starts)")
    p.add_argument("--nodes", type=int, default=1, metavar="N", help="with --export-launch: machines to train on")
    p.add_argument("--copy-base", action="store_true",
                   help="with --export-launch: copy the base model file into DIR as well")
    p.add_argument("--from-spec", metavar="FILE",
                   help="train the job described in FILE (a spec.json written by --export-launch); BASE and the "
                        "data come from it")
    p.add_argument("--json", action="store_true", help="print the job's JSON events instead of a progress bar")
    p.set_defaults(func=run_finetune)

    m = sub.add_parser("finetune-methods", help="list fine-tuning methods and their options")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=run_methods)


def build_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The job description for these arguments (``core.finetune.launch.spec_from_inputs``, as the window builds it)."""
    from core.finetune.launch import spec_from_inputs
    from core.finetune.methods import get_method, options

    if getattr(args, "from_spec", None):
        return _spec_from_file(args)
    if not args.base:
        raise TrainingError("Give the base model to tune (BASE), or a job file with --from-spec FILE.")
    method = get_method(args.method)
    names = {o.name for o in options(method.config_cls)}
    method_options: dict[str, Any] = {}
    for flag, key in (("rank", "rank"), ("alpha", "alpha")):
        value = getattr(args, flag)
        if value is not None:
            if key not in names:
                raise TrainingError(f"Method '{method.name}' has no --{flag}.")
            method_options[key] = value
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise TrainingError(f"--set takes KEY=VALUE, not '{item}'.")
        method_options[key.strip().replace("-", "_")] = value.strip()
    spec = spec_from_inputs(
        args.base, docs=args.docs or (), data=args.data, name=args.out, method=method.name,
        method_options=method_options, resume=args.resume, objective=args.objective, epochs=args.epochs,
        max_steps=args.max_steps, lr=args.lr, seq_len=args.seq_len, batch=args.batch, grad_accum=args.grad_accum,
        gradient_checkpointing=args.gradient_checkpointing, save_every=args.save_every, seed=args.seed,
        qa_model=args.qa_model, writer=getattr(args, "writer", None), views=getattr(args, "views", None),
        device=args.device, index=getattr(args, "index", True),
        **({"nproc": args.nproc} if getattr(args, "nproc", None) is not None else {}),
        **({"save_minutes": args.save_minutes} if getattr(args, "save_minutes", None) is not None else {}),
    )
    return spec.to_dict()


def _spec_from_file(args: argparse.Namespace) -> dict[str, Any]:
    """The job in ``--from-spec FILE``; ``--nproc``, ``--out`` and ``--resume`` given here take precedence."""
    from pathlib import Path

    from core.finetune.launchers import spec_from_file
    from core.finetune.spec import FinetuneSpec

    data = dict(spec_from_file(Path(args.from_spec).expanduser()))
    if args.nproc is not None:
        data["nproc"] = args.nproc
    if args.out:
        data["name"] = args.out
    if args.resume:
        data["resume"] = True
    spec = FinetuneSpec.from_dict(data)
    spec.check()
    return spec.to_dict()


def run_finetune(args: argparse.Namespace) -> int:
    from core.cli.cmd_trainpack import offer_install
    from core.finetune.launch import start_finetune
    from core.finetune.spec import FinetuneSpec

    spec = build_spec(args)
    if args.export_launch:
        return _export_launch(args, spec)
    offer_install()  # the training pack, when this Python has no torch of its own
    if launched_rank():
        return _run_as_rank(spec, json_mode=args.json)
    # Attached: the job shares this terminal's process group, so Ctrl-C reaches it as well.
    job = start_finetune(FinetuneSpec.from_dict(spec), detached=False)
    log_path = job.log_path
    bar = ProgressPrinter(json_mode=args.json)
    outcome: dict[str, Any] = {}

    def follow() -> None:
        nonlocal outcome
        for event in job.events():
            bar.show(event)
            if event.get("event") in ("done", "error", "cancelled"):
                outcome = event

    try:
        follow()
    except KeyboardInterrupt:
        job.cancel()
        print("\nStopping: saving a checkpoint first (Ctrl-C again to stop at once)...", file=sys.stderr)
        try:
            follow()
        except KeyboardInterrupt:
            job.kill()
    code = job.wait()
    bar.finish()
    kind = outcome.get("event")
    if kind == "done":
        if not args.json:
            _print_result(outcome)
        _compare_after(outcome, spec["base"], json_mode=args.json)
        return 0
    if kind == "cancelled":  # the progress printer has said where it stopped and how to continue
        return 130
    if kind == "error":
        raise TrainingError(str(outcome.get("message")) + ("" if outcome.get("kind") != "InternalError" else f" (log: {log_path})"))
    raise TrainingError(f"The training process ended unexpectedly (exit code {code}); see {log_path}. "
                        f"Continue with 'hearth finetune ... --resume --out {spec['name']}'.")


def launched_rank() -> bool:
    """Whether a launcher (torchrun, ``accelerate launch``) started this process as one rank of several."""
    import os

    try:
        return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def _export_launch(args: argparse.Namespace, spec: dict[str, Any]) -> int:
    """``--export-launch DIR``: write what another machine needs to run this job (``core.finetune.launchers``)."""
    from pathlib import Path

    from core.finetune.launchers import export_launch
    from core.finetune.spec import FinetuneSpec

    exported = export_launch(FinetuneSpec.from_dict(spec), Path(args.export_launch).expanduser(),
                             gpus_per_node=args.gpus_per_node, nodes=args.nodes, copy_base=args.copy_base)
    if args.json:
        print_json(exported.to_dict())
        return 0
    print(f"Wrote the launch of '{spec['name']}' ({exported.strategy}) to {exported.folder}:")
    for item in exported.files:
        print(f"  {item}")
    print(f"On each machine, from that folder, run:\n  {exported.command}")
    for note in exported.notes:
        print(f"note: {note}")
    return 0


def _run_as_rank(spec: dict[str, Any], *, json_mode: bool) -> int:
    """Under a launcher: run this rank in a child (``core.finetune.rank``) and draw rank 0's events.

    No job record: the launcher owns these processes, and every rank of this machine would claim the
    same one. The child ends itself if this process is killed (``HEARTH_JOB_PID``).
    """
    import os
    import subprocess
    import tempfile

    import psutil

    from core.finetune.rank import JOB_PID_ENV
    from core.jobs import _parse_event
    from core.runtime import module_command

    handle, path = tempfile.mkstemp(prefix="hearth-rank-", suffix=".json")
    with os.fdopen(handle, "w", encoding="utf-8") as f:
        json.dump(spec, f)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", JOB_PID_ENV: f"{os.getpid()}:{psutil.Process().create_time()}"}
    proc = subprocess.Popen(module_command("core.finetune.rank", path), stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    bar = ProgressPrinter(json_mode=json_mode)
    outcome: dict[str, Any] = {}
    try:
        while True:
            try:
                for raw in proc.stdout:
                    event = _parse_event(raw)
                    if event is not None:
                        bar.show(event)
                        if event.get("event") in ("done", "error", "cancelled"):
                            outcome = event
                break
            except KeyboardInterrupt:
                proc.send_signal(__import__("signal").SIGINT)  # rank 0 saves a checkpoint, then all stop
        code = proc.wait()
    finally:
        bar.finish()
        os.unlink(path)
    if outcome.get("event") == "done" and not json_mode:
        _print_result(outcome)
    if outcome.get("event") == "done":
        _compare_after(outcome, spec["base"], json_mode=json_mode)
    if outcome.get("event") == "error":
        raise TrainingError(str(outcome.get("message")))
    return code


def _print_result(event: dict[str, Any]) -> None:
    metrics = event.get("metrics", {})
    before, after = metrics.get("before", {}), metrics.get("after", {})
    print(f"Adapter '{event['name']}' saved in {event['path']}")
    known = metrics.get("knowledge")
    if known:
        from core.finetune.knowledge import summary_line

        print(summary_line(known["before"], known["after"], known["total"], known.get("restated")))
    if before and after:
        what = "Loss on your documents' text" if known else "Held-out loss"
        ratio = before["perplexity"] / max(1e-9, after["perplexity"])
        print(f"{what} {before['eval_loss']:.3f} -> {after['eval_loss']:.3f}, "
              f"perplexity {before['perplexity']:.2f} -> {after['perplexity']:.2f}"
              + (f" (the model now predicts it {ratio:.1f}x better)" if ratio >= 1.1 else ""))
    for sample in metrics.get("samples", [])[:2]:
        print(f"\n> {sample['prompt'][:200]}\n  before: {sample['before'][:200]}\n  after:  {sample['after'][:200]}")


def _compare_after(event: dict[str, Any], base: str, *, json_mode: bool) -> None:
    """Tune + index: the four-way comparison on the job's held-out questions, when the job made a collection.

    Printed as a table and one sentence (``--json``: one ``comparison`` event); a comparison that cannot
    run is a note, never a failed command: the adapter is saved.
    """
    from core.finetune.adapters import get_adapter
    from core.finetune.indexing import adapter_collection, adapter_comparison

    try:
        entry = get_adapter(str(event.get("name")))
    except HearthError:
        return
    collection = adapter_collection(entry)
    if collection is None:
        return
    shown = not json_mode and sys.stderr.isatty()
    if not json_mode:
        print(f"\nIndexed your documents into the collection '{collection}'. Comparing tuning with retrieval on "
              "the job's held-out questions…", file=sys.stderr)

    def progress(message: str, fraction: float) -> None:
        if shown:
            status_line(f"Comparing: {message} ({fraction:.0%})"[:100])

    try:
        comparison = adapter_comparison(entry.name, progress=progress)
    except HearthError as exc:
        if shown:
            status_line()
        if json_mode:
            print(json.dumps({"event": "warning", "message": f"No comparison: {exc}"}), flush=True)
        else:
            print(f"note: no comparison: {exc}", file=sys.stderr)
        return
    if shown:
        status_line()
    if json_mode:
        print(json.dumps({"event": "comparison", "collection": collection, "setups": [s.to_dict() for s in comparison.setups],
                          "recommendation": comparison.recommendation, "notes": comparison.notes}), flush=True)
        return
    print_comparison(comparison)
    print(f"Chat with both: hearth chat {base} --lora {entry.name}  (the collection '{collection}' comes with it)")


def print_comparison(comparison: Any) -> None:
    """The four-way comparison as a table, its notes and the one-sentence recommendation."""
    from core.finetune.indexing import comparison_rows

    print()
    print_table(comparison_rows(comparison), ["SET-UP", "RIGHT", "SHARE"])
    for note in comparison.notes:
        print(f"({note})")
    print(comparison.recommendation)


class ProgressPrinter:
    """Draws the job's events: a one-line bar on a terminal, a line per tenth of the run otherwise."""

    def __init__(self, *, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        self.tty = sys.stderr.isatty()
        self.last_fraction = -1.0
        self.eval_loss: float | None = None
        self.started = time.monotonic()

    def show(self, event: dict[str, Any]) -> None:
        if self.json_mode:
            print(json.dumps(event, ensure_ascii=False), flush=True)
            return
        kind = event.get("event")
        if kind == "step":
            self._step(event)
        elif kind == "eval":
            self.eval_loss = event.get("eval_loss")
        elif kind == "indexed":
            self._line(f"indexed {event.get('documents')} documents ({event.get('chunks')} passages) into the "
                       f"collection '{event.get('collection')}' for retrieval")
        elif kind in ("stage", "warning", "resumed", "cancelled", "stopping"):
            self._line({"warning": "warning: "}.get(str(kind), "") + str(event.get("message") or
                       f"resumed at step {event.get('step')} of {event.get('total_steps')}"))
        elif kind == "held_out_check":
            self._line(f"step {event['step']}: asked in other words, {event['correct']} of {event['total']} right")
        elif kind == "early_stop":
            self._line(str(event["message"]))
        elif kind == "knowledge" and event.get("phase") == "before":
            other = event.get("restated")
            self._line(f"knowledge check: the base model answers {event['correct']} of {event['total']} "
                       "fill-in-the-blank questions from your documents"
                       + (f", and {other['correct']} of {other['total']} asked in other words" if other else ""))
        elif kind == "settings":
            for reason in event.get("reasons") or []:
                self._line(f"plan: {reason}")
            if event.get("estimated_train_s"):
                eta = int(event["estimated_train_s"])
                self._line(f"plan: training should take {'at most ' if event.get('stops_early') else ''}about "
                           f"{max(1, round(eta / 60))} min on this machine "
                           f"({human_count(event.get('tokens_to_train', 0))} tokens)")
            self._line(f"{event['method']} / {event['objective']}: {event['total_steps']} steps, "
                       f"{human_count(event['trainable_parameters'])} trained parameters, seq {event['seq_len']} x "
                       f"batch {event['batch']} x accum {event['grad_accum']}, lr {event['lr']:g}, {event['device']}"
                       + (", bf16" if event.get("bf16") else "")
                       + (f", {event['processes']} processes" if int(event.get("processes") or 1) > 1 else ""))
            if event.get("device") == "cpu":
                from core.finetune.cost import vulkan_remark

                remark = vulkan_remark()  # a GPU that runs chats through Vulkan does not train
                if remark:
                    self._line(f"note: {remark}")
        elif kind == "data":
            skipped = event.get("skipped") or []
            held = (f"{event.get('held_out_examples')} held-out examples" if not event.get("knowledge_probes")
                    else "every document trained")
            self._line(f"data: {event.get('train_examples')} training examples / {held}, "
                       f"{event.get('train_tokens')} tokens in {event.get('train_rows')} packed rows"
                       + (f"; skipped {len(skipped)} file(s)" if skipped else ""))
            for item in skipped[:10]:
                if isinstance(item, dict):
                    self._line(f"  skipped {item.get('path')}: {item.get('reason')}")
            views = event.get("views") or {}
            if views:
                self._line(f"views: {event.get('fact_lines')} fact lines rewritten as "
                           + ", ".join(f"{name} {v['items']}" for name, v in views.items())
                           + f"; {event.get('restated_probes', 0)} questions in other words kept out for the check")
            if event.get("views_note"):
                self._line(f"note: {event['views_note']}")
            written = event.get("written")
            if isinstance(written, dict):
                self._line(f"writer {written.get('model')}: kept {written.get('kept')} of {written.get('generated')} "
                           f"restatements of {written.get('lines')} lines (dropped {written.get('dropped')} that lost "
                           "or added a name, number or date, or copied the line)")

    def _step(self, e: dict[str, Any]) -> None:
        done, total = int(e["step"]), int(e["total_steps"])
        fraction = done / max(1, total)
        width = 24
        filled = int(width * fraction)
        eta = int(e.get("eta_s") or 0)
        text = (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} loss {e['loss']:.4f}"
                + (f" eval {self.eval_loss:.4f}" if self.eval_loss is not None else "")
                + f" lr {e['lr']:.2e} {e['tokens_per_s']:.0f} tok/s ETA {eta // 60}m{eta % 60:02d}s")
        if self.tty:
            sys.stderr.write("\r" + text.ljust(100))
            sys.stderr.flush()
        elif fraction - self.last_fraction >= 0.1 or done == total:
            self.last_fraction = fraction
            print(text, file=sys.stderr, flush=True)

    def _line(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r" + " " * 100 + "\r")
        print(text, file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.tty and not self.json_mode:
            sys.stderr.write("\n")


def run_methods(args: argparse.Namespace) -> int:
    from core.finetune.methods import all_methods, options

    methods = all_methods()
    if args.json:
        print_json([{"name": m.name, "title": m.title, "summary": m.summary, "reference": m.reference,
                     "default_lr": m.default_lr, "options": [o.__dict__ for o in options(m.config_cls)]}
                    for m in methods])
        return 0
    for m in methods:
        print(f"{m.name:14} {m.summary}")
        for o in options(m.config_cls):
            limits = f" [{', '.join(map(str, o.choices))}]" if o.choices else (
                f" [{o.min}..{o.max}]" if o.min is not None else "")
            print(f"    {o.name} = {o.default!r}{limits}: {o.help}")
    return 0


__all__ = ["HearthError", "ProgressPrinter", "build_spec", "register"]
