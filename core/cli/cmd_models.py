"""``hearth models | import | rm | show``: the model library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.cli.output import print_json, print_kv, print_table
from core.events import Progress
from core.library import Library, read_gguf_info
from core.library.registry import ImportMode
from core.units import human_count, human_size


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("models", help="list the models in the library")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=list_models)

    p = sub.add_parser("import", help="add a .gguf file to the library")
    p.add_argument("path", help="the .gguf file (for a split model, any of its parts); with --mmproj also a library model's name")
    p.add_argument("--link", action="store_true", help="use the file where it is instead of copying it")
    p.add_argument("--name", help="library name (default: from the file name)")
    p.add_argument("--mmproj", metavar="FILE", help="the model's vision projector (mmproj-*.gguf): the model reads images")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=import_model)

    p = sub.add_parser("rm", help="remove a model from the library")
    p.add_argument("name")
    p.add_argument("--keep-file", action="store_true", help="unregister only; leave the file on disk")
    p.set_defaults(func=remove_model)

    p = sub.add_parser("show", help="a model's details from its GGUF metadata")
    p.add_argument("model", help="library name or path to a .gguf file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--tensors", action="store_true", help="include the tensor table")
    p.set_defaults(func=show_model)


def list_models(args: argparse.Namespace) -> int:
    library = Library()
    library.ensure_starter()
    entries = library.models()
    if args.json:
        print_json([e.to_dict() for e in entries])
        return 0
    rows = [
        (
            e.name,
            e.architecture,
            human_count(e.parameters),
            e.file_type or "-",
            human_size(e.size_bytes),
            e.context_length or "-",
            e.source + ("" if e.exists else " (file missing)"),
            "vision" if e.vision else "-",
        )
        for e in entries
    ]
    print_table(rows, ["NAME", "ARCH", "PARAMS", "QUANT", "SIZE", "CONTEXT", "SOURCE", "IMAGES"])
    return 0


def import_model(args: argparse.Namespace) -> int:
    def progress(p: Progress) -> None:
        if p.fraction is not None and sys.stderr.isatty():
            print(f"\r{p.message}: {p.fraction * 100:5.1f}%", end="", file=sys.stderr, flush=True)

    library = Library()
    mode: ImportMode = "link" if args.link else "copy"
    known = (
        next((e for e in library.models(include_discovered=False) if e.name == args.path), None)
        if args.mmproj and not Path(args.path).expanduser().exists()
        else None
    )
    if known is not None:  # 'hearth import MODEL --mmproj FILE' on a model already in the library
        entry = library.set_mmproj(known.name, args.mmproj)
        verb = "Paired"
    else:
        entry = library.import_file(args.path, mode=mode, name=args.name, progress=progress, mmproj=args.mmproj)
        verb = "Added"
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if args.json:
        print_json(entry.to_dict())
    else:
        vision = f"; reads images with {Path(entry.mmproj).name}" if entry.mmproj else ""
        print(f"{verb} '{entry.name}' ({entry.architecture}, {entry.file_type}, {human_size(entry.size_bytes)}{vision}).")
    return 0


def remove_model(args: argparse.Namespace) -> int:
    entry = Library().remove(args.name, delete_files=not args.keep_file)
    kept = "" if entry.managed and not args.keep_file else f" (the file stays at {entry.path})"
    projector = ""
    if entry.mmproj:
        gone = not Path(entry.mmproj).exists()
        projector = f" Its vision projector {'was removed' if gone else 'stays at ' + entry.mmproj}."
    print(f"Removed '{entry.name}'{kept}.{projector}")
    return 0


def show_model(args: argparse.Namespace) -> int:
    entry = Library().get(args.model)
    info = read_gguf_info(entry.path)
    if args.json:
        data = info.to_dict(with_tensors=args.tensors)
        data.update({"name": entry.name, "path": entry.path, "source": entry.source, "mmproj": entry.mmproj})
        print_json(data)
        return 0
    kv = info.head_count_kv
    print_kv(
        [
            ("Name", entry.name),
            ("Model", info.name),
            ("Path", entry.path),
            ("Architecture", info.architecture),
            ("Parameters", f"{human_count(info.parameters)} ({info.parameters:,})"),
            ("Quantization", info.file_type or "-"),
            ("Size", human_size(info.size_bytes) + (f" in {len(info.files)} files" if len(info.files) > 1 else "")),
            ("Context length", info.context_length or "-"),
            ("Layers", info.block_count or "-"),
            ("Embedding", info.embedding_length or "-"),
            ("Attention heads", info.head_count or "-"),
            ("KV heads", (max(kv) if isinstance(kv, list) and kv else kv) or "-"),
            ("Sliding window", info.sliding_window or "-"),
            ("Vocabulary", info.vocab_size or "-"),
            ("Chat template", "yes" if info.has_chat_template else "no (a family format or plain completion is used)"),
            ("Vision projector", entry.mmproj if entry.mmproj else "none (reads text only)"),
        ]
    )
    if args.tensors:
        print()
        print_table([(t.name, t.type, "x".join(map(str, t.shape)), human_size(t.n_bytes)) for t in info.tensors],
                    ["TENSOR", "TYPE", "SHAPE", "SIZE"])
    return 0
