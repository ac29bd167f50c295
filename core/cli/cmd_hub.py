"""``hearth search``, ``hearth files`` and ``hearth pull``: find GGUF models on the Hub and download one."""

from __future__ import annotations

import argparse
import sys
import time

from core.cli.output import print_json, print_table, status_line
from core.hub.download import DownloadProgress
from core.units import human_count, human_size, human_speed


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("search", help="search the Hugging Face Hub for GGUF models")
    p.add_argument("query", nargs="?", default="", help="words in the model's name")
    p.add_argument("--sort", choices=["downloads", "likes", "modified"], default="downloads")
    p.add_argument("--limit", type=int, default=20, help="how many models to list (default 20)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=run_search)

    p = sub.add_parser("files", help="list a Hub repo's GGUF quants and which fits this machine")
    p.add_argument("repo", help="Hub model id, e.g. bartowski/Llama-3.2-1B-Instruct-GGUF")
    p.add_argument("--revision", help="branch, tag or commit (default main)")
    p.add_argument("--ctx", type=int, default=4096, help="context length to plan memory for (default 4096)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=run_files)

    p = sub.add_parser("pull", help="download a GGUF model (and its vision projector) from the Hub into the library")
    p.add_argument("repo", help="Hub model id, optionally with the quant: REPO:Q4_K_M")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--quant", help="quant to fetch, e.g. Q4_K_M (default: the one recommended here)")
    which.add_argument("--file", dest="filename", help="exact file to fetch (any part of a split model)")
    p.add_argument("--name", help="name in the library (default from the file name)")
    p.add_argument("--revision", help="branch, tag or commit (default main)")
    vision = p.add_mutually_exclusive_group()
    vision.add_argument(
        "--mmproj", metavar="NAME", help="the vision projector to fetch with it (file name or precision, e.g. F32)"
    )
    vision.add_argument("--no-mmproj", action="store_true", help="do not fetch the repo's vision projector")
    p.set_defaults(func=run_pull)


def run_search(args: argparse.Namespace) -> int:
    from core.hub.search import search_models

    models = search_models(args.query, sort=args.sort, limit=args.limit)
    if args.json:
        print_json([m.to_dict() for m in models])
        return 0
    rows = [
        (
            m.id,
            human_count(m.parameters),
            m.architecture or "-",
            human_count(m.downloads),
            m.likes or 0,
            (m.last_modified or "-")[:10],
        )
        for m in models
    ]
    print_table(rows, ["MODEL", "PARAMS", "ARCH", "DOWNLOADS", "LIKES", "MODIFIED"])
    if not models:
        print(f"No GGUF models match '{args.query}'.")
    return 0


def _fit_words(verdict: object) -> str:
    if verdict is None:
        return "-"
    kind = str(getattr(verdict, "kind", ""))
    layers = getattr(verdict, "gpu_layers", None)
    words = {
        "full_gpu": "fits on GPU",
        "partial_gpu": f"GPU {layers} layers + CPU",
        "cpu": "CPU only",
        "across_machines": "across machines",
        "too_large": "too large",
    }
    return words.get(kind, kind or "-")


def run_files(args: argparse.Namespace) -> int:
    from core.hub.files import repo_quants

    rq = repo_quants(args.repo, args.revision, n_ctx=args.ctx)
    if args.json:
        print_json(rq.to_dict())
        return 0
    rows = []
    for g in rq.groups:
        mark = "*" if g.name == rq.recommended else ""
        parts = f"{len(g.files)} parts" if g.parts_expected > 1 else g.first_file.path
        if not g.complete:
            parts += f" (incomplete: {len(g.files)} of {g.parts_expected})"
        rows.append((mark, g.name, human_size(g.size), _fit_words(g.fit), parts))
    print_table(rows, ["", "QUANT", "SIZE", "FIT", "FILES"])
    if rq.projectors:
        chosen = rq.mmproj
        listed = ", ".join(f"{f.path} {human_size(f.size)}" for f in rq.projectors)
        print(f"Vision projectors: {listed}")
        if chosen is not None:
            print(f"Reads images: 'hearth pull' also fetches {rq.mmproj_reason}.")
    if rq.fit_error:
        print(f"No fit verdicts: {rq.fit_error}.")
    if rq.recommended:
        print(f"Recommended: {rq.recommended} ({rq.reason})")
    return 0


class _ProgressLine:
    """One progress line on stderr: bytes, speed and time left, redrawn in place on a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, p: DownloadProgress) -> None:
        now = time.monotonic()
        if p.state == "downloading" and now - self.last < (0.25 if self.tty else 5.0):
            return
        self.last = now
        pct = f"{100 * (p.fraction or 0):5.1f}%"
        eta = time.strftime("%H:%M:%S", time.gmtime(p.eta)) if p.eta is not None else "--:--:--"
        line = f"{p.state:<11} {pct}  {human_size(p.done)} / {human_size(p.total)}  {human_speed(p.speed)}  ETA {eta}"
        if self.tty:
            status_line(line)
            if p.state in ("done", "failed", "cancelled"):
                sys.stderr.write("\n")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def run_pull(args: argparse.Namespace) -> int:
    from core.hub.pull import plan_pull, start_pull

    plan = plan_pull(
        args.repo,
        quant=args.quant,
        filename=args.filename,
        revision=args.revision,
        mmproj=args.mmproj,
        no_mmproj=args.no_mmproj,
    )
    group = plan.group
    print(
        f"Downloading {plan.repo_id} {group.name} ({human_size(group.size)}, {len(group.files)} file(s)): {plan.reason}"
    )
    if plan.mmproj is not None:
        print(f"With its vision projector {plan.mmproj.path} ({human_size(plan.mmproj.size)}): {plan.mmproj_reason}")
    task = start_pull(plan, name=args.name, on_progress=_ProgressLine())
    again = f"hearth pull {plan.repo_id}" + (
        f" --quant {group.name}" if not args.filename else f" --file {args.filename}"
    ) + (f" --mmproj {args.mmproj}" if args.mmproj else "")
    try:
        entry = task.wait()
    except KeyboardInterrupt:
        task.pause()
        if task.entry is not None and plan.mmproj is not None:
            print(
                f"\nStopped. '{task.entry.name}' is in the library and usable for text; its vision projector "
                f"{plan.mmproj.name} is not paired yet: run '{again}' to resume it.",
                file=sys.stderr,
            )
        else:
            print(f"\nStopped. What was fetched is kept: run '{again}' again to resume.", file=sys.stderr)
        return 130
    if task.pair_with is not None:
        if task.mmproj_error is None and plan.mmproj is not None:
            print(f"'{entry.name}' was already in the library: paired it with {plan.mmproj.name}.")
    else:
        print(f"Added '{entry.name}' to the library ({entry.path}).")
    if task.mmproj_error is not None:
        print(
            f"Its vision projector did not arrive ({task.mmproj_error}): run '{again}' to resume it.",
            file=sys.stderr,
        )
        return 1
    if entry.mmproj:
        print(f"Reads images with {entry.mmproj}.")
    return 0
