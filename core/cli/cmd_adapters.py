"""``hearth adapters [list | show NAME | rm NAME | import FOLDER]``: the trained adapters."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from core.cli.output import print_json, print_kv, print_table
from core.errors import HearthError
from core.units import human_count, human_size


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    a = sub.add_parser("adapters", help="list, show or remove trained adapters",
                       description="Trained adapters. With no ACTION, lists them.")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=run_list)
    actions = a.add_subparsers(dest="action", metavar="ACTION")

    show = actions.add_parser("show", help="what an adapter was trained on and how it scored")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=run_show)

    rm = actions.add_parser("rm", help="delete an adapter (or an interrupted run of that name)")
    rm.add_argument("name", metavar="NAME")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation (for scripts)")
    rm.set_defaults(func=run_rm)

    imp = actions.add_parser("import", help="add an adapter folder trained elsewhere (e.g. on a GPU box)")
    imp.add_argument("path", metavar="FOLDER", help="the adapter's folder (holding manifest.json and the weights)")
    imp.add_argument("--name", help="the name to give it here (default: the folder's name)")
    imp.add_argument("--json", action="store_true")
    imp.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    from core.finetune.adapters import folder_size, import_adapter

    entry = import_adapter(args.path, args.name)
    if args.json:
        print_json(entry.to_dict())
        return 0
    print(f"Imported adapter '{entry.name}' ({human_size(folder_size(entry.path))}) into {entry.path}")
    return 0


def _created(manifest: dict[str, Any]) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(manifest.get("created_at", 0))))


def run_list(args: argparse.Namespace) -> int:
    from core.finetune.adapters import list_adapters

    entries = list_adapters()
    if args.json:
        print_json([e.to_dict() for e in entries])
        return 0
    rows = []
    for e in entries:
        after = e.manifest.get("metrics", {}).get("after", {})
        rows.append([e.name, e.base, e.method, e.manifest.get("objective", ""),
                     f"{after.get('eval_loss', float('nan')):.3f}" if after else "-", _created(e.manifest)])
    print_table(rows, ["NAME", "BASE", "METHOD", "OBJECTIVE", "EVAL LOSS", "CREATED"])
    return 0


def describe(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """The manifest as (label, words) pairs: base, method, objective, data, steps, scores, date."""
    base = manifest.get("base") or {}
    method = manifest.get("method") or {}
    data = manifest.get("data") or {}
    hyper = manifest.get("hyperparameters") or {}
    metrics = manifest.get("metrics") or {}
    pairs: list[tuple[str, str]] = []
    facts = [str(x) for x in (base.get("architecture"),
                              f"{human_count(base['parameters'])} parameters" if base.get("parameters") else None) if x]
    pairs.append(("Base", str(base.get("name") or "?") + (f" ({', '.join(facts)})" if facts else "")))
    options = method.get("options") or {}
    shown = [f"{k} {options[k]}" for k in ("rank", "alpha") if k in options]
    pairs.append(("Method", str(method.get("name") or "?") + (f" ({', '.join(shown)})" if shown else "")))
    pairs.append(("Objective", str(manifest.get("objective") or "?")))
    documents = data.get("documents")
    if documents:
        names = ", ".join(str(d).replace("\\", "/").rsplit("/", 1)[-1] for d in documents[:3])
        more = f" and {len(documents) - 3} more" if len(documents) > 3 else ""
        pairs.append(("Data", f"{len(documents)} document(s): {names}{more}"))
    elif data.get("data"):
        pairs.append(("Data", f"file {data['data']}"))
    qa = data.get("synthetic_qa")
    if isinstance(qa, dict) and qa.get("model"):
        pairs.append(("Questions", f"{int(qa.get('kept') or 0):,} question-answer pairs written by {qa['model']}"))
    counts = []
    if data.get("train_examples") is not None:
        counts.append(f"{data['train_examples']:,} training examples")
    if data.get("held_out_examples"):
        counts.append(f"{data['held_out_examples']:,} held out")
    if data.get("train_tokens") is not None:
        counts.append(f"{data['train_tokens']:,} tokens")
    if counts:
        pairs.append(("Examples", ", ".join(counts)))
    if hyper.get("total_steps") is not None:
        epochs = hyper.get("epochs")
        pairs.append(("Steps", f"{hyper['total_steps']:,}" + (f" ({epochs:g} epochs planned)" if epochs else "")))
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    if "eval_loss" in before and "eval_loss" in after:
        pairs.append(("Eval loss", f"{before['eval_loss']:.3f} before, {after['eval_loss']:.3f} after"))
    if "perplexity" in before and "perplexity" in after:
        pairs.append(("Perplexity", f"{before['perplexity']:.2f} before, {after['perplexity']:.2f} after"))
    from core.finetune.indexing import knowledge_halves

    halves = knowledge_halves(metrics.get("knowledge"))
    if halves:
        pairs.append(("Knowledge check", halves))
    if manifest.get("collection"):
        pairs.append(("Documents", f"collection '{manifest['collection']}' (chats with this adapter look it up)"))
    if manifest.get("created_at"):
        pairs.append(("Created", _created(manifest)))
    return pairs


def run_show(args: argparse.Namespace) -> int:
    from core.finetune.adapters import folder_size, get_adapter

    entry = get_adapter(args.name)
    size = folder_size(entry.path)
    if args.json:
        print_json({**entry.to_dict(), "size_bytes": size})
        return 0
    from core.finetune.indexing import comparison_rows, saved_comparison

    print_kv([("Name", entry.name), *describe(entry.manifest), ("Size on disk", human_size(size)),
              ("Folder", str(entry.path))])
    comparison = saved_comparison(entry)
    if comparison is not None:
        print(f"\nTuning and retrieval compared on {comparison.collection}:")
        print_table(comparison_rows(comparison), ["SET-UP", "RIGHT", "SHARE"])
        print(comparison.recommendation)
    return 0


def run_rm(args: argparse.Namespace) -> int:
    from core.finetune.adapters import adapter_folder, partial_folder, remove_adapter

    name = args.name
    if not args.yes:
        if not adapter_folder(name).exists() and not partial_folder(name).exists():
            remove_adapter(name)  # says there is no such adapter, and lists the ones there are
        if not sys.stdin.isatty():
            raise HearthError(f"Removing '{name}' needs a yes: run it on a terminal, or add --yes.")
        what = "the adapter" if adapter_folder(name).exists() else "the interrupted run"
        answer = input(f"Delete {what} '{name}' for good? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("Nothing removed.")
            return 1
    removed = remove_adapter(name)
    parts = (["adapter"] if removed.had_adapter else []) + (["interrupted run"] if removed.had_interrupted_run else [])
    print(f"Removed {' and '.join(parts)} '{name}' ({human_size(removed.bytes_freed)} freed).")
    return 0
