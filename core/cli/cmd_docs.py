"""``hearth docs``: document collections for retrieval (add, list, show, rm, search, embed, compare)."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import sys
from collections.abc import Iterator

from core.cli.output import print_json, print_kv, print_table, status_line
from core.docs import Collection, DocsLibrary, Embedder, IndexReport, load_embedder, search
from core.docs.store import IndexProgress
from core.events import Progress


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("docs", help="document collections to search and to chat with (retrieval)")
    p.set_defaults(func=lambda a: list_collections(argparse.Namespace(json=False)))
    docs = p.add_subparsers(dest="docs_command", metavar="ACTION")

    a = docs.add_parser("add", help="create a collection or add files and folders to it (re-indexes changed ones)")
    a.add_argument("name")
    a.add_argument("paths", nargs="+", metavar="PATH", help=".txt, .md, .pdf, .docx, .html files or folders")
    a.add_argument("--embed", metavar="MODEL", help="also embed the chunks with this embedding model")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=add)

    lst = docs.add_parser("list", help="the collections")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=list_collections)

    s = docs.add_parser("show", help="a collection's files and their status")
    s.add_argument("name")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=show)

    r = docs.add_parser("rm", help="delete a collection, or only the files named")
    r.add_argument("name")
    r.add_argument("paths", nargs="*", metavar="PATH", help="files or folders to take out (default: all of it)")
    r.set_defaults(func=remove)

    q = docs.add_parser("search", help="the passages that best match a query")
    q.add_argument("name")
    q.add_argument("query")
    q.add_argument("-k", type=int, default=5, help="how many passages (default 5)")
    q.add_argument("--embed", metavar="MODEL", help="an embedding model: hybrid search (BM25 + vectors)")
    q.add_argument("--mode", choices=["auto", "bm25", "vector", "hybrid"], default="auto")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=search_command)

    e = docs.add_parser("embed", help="give a collection's chunks vectors from an embedding model")
    e.add_argument("name")
    e.add_argument("model", help="library name or .gguf path of an embedding model")
    e.add_argument("--replace", action="store_true", help="re-embed every chunk (e.g. with another model)")
    e.set_defaults(func=embed_command)

    c = docs.add_parser("compare", help="which helps on these documents: retrieval, fine-tuning or both (measured)")
    c.add_argument("name")
    c.add_argument("--model", required=True, metavar="BASE", help="library name or .gguf path of the base model")
    c.add_argument("--adapter", metavar="A", help="an adapter trained on BASE (e.g. on the same documents)")
    c.add_argument("-k", type=int, default=3, help="passages per question (default 3)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=compare_command)


def _progress(enabled: bool) -> IndexProgress | None:
    def show(report: Progress) -> None:
        total = f"/{int(report.total)}" if report.total else ""
        status_line(f"{report.stage.capitalize()}ing {int(report.done)}{total} {report.message}"[:100])

    return show if enabled else None


@contextlib.contextmanager
def _maybe_embedder(model: str | None) -> Iterator[Embedder | None]:
    if not model:
        yield None
        return
    with load_embedder(model) as embedder:
        yield embedder


def open_refreshed(name: str, embedder: Embedder | None = None, quiet: bool = False) -> Collection:
    """Open a collection and re-index the files changed on disk since (what opening one in the window does)."""
    collection = DocsLibrary().open(name)
    shown = not quiet and sys.stderr.isatty()
    report = collection.refresh(embedder=embedder, progress=_progress(shown))
    if shown:
        status_line()
    if report.changed and not quiet:
        print(f"[{name}: {_summary(report)}]", file=sys.stderr)
    return collection


def _summary(report: IndexReport) -> str:
    parts = report.counts()
    return ", ".join(parts) + f" ({report.chunks} chunks, {report.seconds:.1f} s)" if parts else "no changes"


def add(args: argparse.Namespace) -> int:
    library = DocsLibrary()
    created = not library.exists(args.name)
    collection = library.create(args.name) if created else library.open(args.name)
    shown = not args.json and sys.stderr.isatty()
    try:
        with _maybe_embedder(args.embed) as embedder:
            report = collection.add(args.paths, embedder=embedder, progress=_progress(shown))
    except BaseException:
        collection.close()
        if created:
            library.delete(args.name)  # a collection this command made and could not fill is not kept
        raise
    finally:
        if shown:
            status_line()
    info = collection.info()
    collection.close()
    if args.json:
        print_json({"collection": info.to_dict(), "report": report.to_dict()})
        return 0
    print(f"Collection '{args.name}': {_summary(report)}.")
    for skipped in report.skipped:
        print(f"  skipped {skipped.path}: {skipped.reason}")
    print(f"{info.indexed} files indexed, {info.chunks} chunks; search with 'hearth docs search {args.name} \"…\"'.")
    return 0


def list_collections(args: argparse.Namespace) -> int:
    infos = DocsLibrary().list()
    if args.json:
        print_json([i.to_dict() for i in infos])
        return 0
    rows = [(i.name, i.files, i.indexed, i.skipped + i.missing, i.chunks,
             f"{i.vectors} ({i.embed_model})" if i.vectors else "-", _when(i.updated_at)) for i in infos]
    print_table(rows, ["NAME", "FILES", "INDEXED", "SKIPPED", "CHUNKS", "VECTORS", "UPDATED"])
    return 0


def show(args: argparse.Namespace) -> int:
    with open_refreshed(args.name, quiet=args.json) as collection:
        info, files = collection.info(), collection.files()
    if args.json:
        print_json({**info.to_dict(), "files_detail": [f.to_dict() for f in files]})
        return 0
    print_kv([("Collection", info.name), ("Folder", info.folder),
              ("Files", f"{info.indexed} indexed, {info.skipped} skipped, {info.missing} missing"),
              ("Chunks", f"{info.chunks} ({info.words} words)"),
              ("Vectors", f"{info.vectors} from {info.embed_model} ({info.embed_dim}-long)" if info.vectors else "none"),
              ("Updated", _when(info.updated_at))])
    print()
    print_table([(f.status, f.path, f.pages or "", f.chunks, f.reason) for f in files],
                ["STATUS", "FILE", "PAGES", "CHUNKS", "REASON"])
    return 0


def remove(args: argparse.Namespace) -> int:
    library = DocsLibrary()
    if not args.paths:
        library.delete(args.name)
        print(f"Deleted collection '{args.name}' (the documents themselves are untouched).")
        return 0
    with library.open(args.name) as collection:
        removed = collection.remove(args.paths)
    print(f"Removed {len(removed)} file{'s' if len(removed) != 1 else ''} from '{args.name}'.")
    return 0


def search_command(args: argparse.Namespace) -> int:
    with _maybe_embedder(args.embed) as embedder, open_refreshed(args.name, embedder, quiet=args.json) as collection:
        info = collection.info()
        if embedder is not None and info.vectors < info.chunks:
            collection.embed(embedder)
        passages = search(collection, args.query, args.k, embedder=embedder, mode=args.mode)
    if args.json:
        print_json([p.to_dict() for p in passages])
        return 0
    if not passages:
        print(f"Nothing in '{args.name}' matches; try other words.", file=sys.stderr)
        return 0
    for n, p in enumerate(passages, start=1):
        ranks = ", ".join(f"{name} #{rank}" for name, rank in p.sources.items())
        print(f"[{n}] {p.file}, {p.location}  (score {p.score:.4g}; {ranks})")
        text = p.text if len(p.text) <= 400 else p.text[:400].rsplit(" ", 1)[0] + " …"
        print(f"    {text}\n")
    return 0


def embed_command(args: argparse.Namespace) -> int:
    with load_embedder(args.model) as embedder, DocsLibrary().open(args.name) as collection:
        shown = sys.stderr.isatty()
        count = collection.embed(embedder, replace=args.replace, progress=_progress(shown))
        if shown:
            status_line()
        info = collection.info()
    print(f"Embedded {count} chunks of '{args.name}' with {info.embed_model} ({info.embed_dim}-long vectors).")
    return 0


def compare_command(args: argparse.Namespace) -> int:
    from core.docs.compare import compare_collection

    shown = not args.json and sys.stderr.isatty()

    def show(message: str, fraction: float) -> None:
        status_line(f"{fraction:4.0%} {message}"[:100])

    try:
        result = compare_collection(args.name, args.model, adapter=args.adapter, k=args.k,
                                    progress=show if shown else None)
    finally:
        if shown:
            status_line()
    if args.json:
        print_json(result.to_dict())
        return 0
    print_table([(s.label, f"{s.right}/{s.total}", f"{s.percent:.0f}%") for s in result.setups],
                ["SET-UP", "RIGHT", "%"])
    for note in result.notes:
        print(f"[{note}]", file=sys.stderr)
    print()
    print(result.recommendation)
    return 0


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M") if timestamp else "-"
