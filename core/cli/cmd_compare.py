"""``hearth compare A B "prompt"``: two set-ups answer one prompt, one after the other, saved as a comparison."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core.chats import ChatStore
from core.chats.compare import (
    SIDE_NAMES,
    CompareEngines,
    CompareItem,
    CompareSession,
    CompareSide,
    SideFailed,
    SideLoading,
    SideReady,
)
from core.cli.cmd_chat import add_sampling_flags
from core.cli.output import GPU_LAYERS_HELP, gpu_layers, print_json, status_line
from core.engine import Completion, TextChunk
from core.errors import HearthError, NotFoundError
from core.settings import ChatParameters


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "compare", help="two set-ups answer one prompt side by side (base vs tuned, or two models)",
        description="Each side is MODEL, or MODEL+ADAPTER[@SCALE] (an adapter's name or a GGUF LoRA file; scale 1 "
                    "by default, 0 = off). The sides answer one after the other, each at full speed; the comparison "
                    "is saved like a chat (the window's Chat > Compare reopens it).")
    p.add_argument("a", metavar="A", help="the left set-up: MODEL or MODEL+ADAPTER[@SCALE]")
    p.add_argument("b", metavar="B", help="the right set-up")
    p.add_argument("prompt", nargs="?", help="the message both answer")
    p.add_argument("--docs-a", metavar="COLLECTION", default="", help="side A answers from a document collection")
    p.add_argument("--docs-b", metavar="COLLECTION", default="", help="side B answers from a document collection")
    p.add_argument("--system", default="", help="system prompt (both sides)")
    p.add_argument("--continue", dest="continue_id", type=int, metavar="ID",
                   help="ask a saved comparison again (A and B then change its set-ups)")
    g = p.add_argument_group("model loading and sampling (both sides)")
    defaults = ChatParameters()
    g.add_argument("--ctx", type=int, default=defaults.n_ctx, help="context length in tokens (0: the model's own)")
    g.add_argument("--threads", type=int, default=0, help="threads (0: the physical cores)")
    g.add_argument("--gpu-layers", type=gpu_layers, default="auto", help=GPU_LAYERS_HELP)
    add_sampling_flags(g, defaults)
    p.add_argument("--json", action="store_true", help="print both answers and their stats as JSON")
    p.set_defaults(func=compare)


def parse_side(spec: str, params: dict[str, Any], docs: str = "") -> CompareSide:
    """``MODEL`` or ``MODEL+ADAPTER[@SCALE]`` as a side. A model whose own name has a '+' is taken whole first."""
    from core.library import Library

    library = Library()
    try:
        library.get(spec)
        return CompareSide(spec, docs=docs, params=params)
    except NotFoundError:
        model, plus, adapter = spec.rpartition("+")
        if not plus or not model or not adapter:
            raise
    scale = 1.0
    name, at, tail = adapter.rpartition("@")
    if at and name:
        try:
            scale = float(tail)
        except ValueError:
            raise HearthError(f"'{tail}' in '{spec}' is not a scale: write MODEL+ADAPTER@0.5.") from None
        adapter = name
    library.get(model)  # a clear error for the model before anything loads
    return CompareSide(model, adapter=adapter, adapter_scale=scale, docs=docs, params=params)


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return ChatParameters(
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, min_p=args.min_p,
        repeat_penalty=args.repeat_penalty, seed=args.seed, max_tokens=args.max_tokens, n_ctx=args.ctx,
        n_gpu_layers=args.gpu_layers, n_threads=args.threads,
    ).to_dict()


def compare(args: argparse.Namespace) -> int:
    if not args.prompt or not args.prompt.strip():
        raise HearthError('Give the prompt both sides answer: hearth compare A B "your question".')
    params = _params(args)
    left, right = parse_side(args.a, params, args.docs_a), parse_side(args.b, params, args.docs_b)
    store = ChatStore()
    with CompareEngines() as engines:
        if args.continue_id is not None:
            session = CompareSession(store, engines, args.continue_id)
            session.set_side(0, left)
            session.set_side(1, right)
        else:
            session = CompareSession.start(store, engines, left, right, system_prompt=args.system)
        try:
            return _run(session, args, (left, right))
        finally:
            session.close()


def _run(session: CompareSession, args: argparse.Namespace, sides: tuple[CompareSide, CompareSide]) -> int:
    shown = not args.json and sys.stderr.isatty()
    results: list[dict[str, Any]] = [{"label": s.label(), "text": "", "stats": None, "error": ""} for s in sides]
    current = -1
    plan_said = False

    def loading(side: int, fraction: float) -> None:
        if shown:
            status_line(f"Loading {sides[side].model}… {fraction:4.0%}")

    item: CompareItem
    for item in session.send(args.prompt, progress=loading):
        side, what = item.side, item.item
        if side != current and not args.json:
            if current >= 0:
                print()
            print(f"── {SIDE_NAMES[side]}: {results[side]['label']} ──")
            current = side
        if isinstance(what, SideLoading) and shown:
            status_line(f"Loading {what.name}…")
        elif isinstance(what, SideReady):
            if shown:
                status_line()
            if not plan_said and not args.json:
                print(f"[{session.engines.describe()}]", file=sys.stderr)
                plan_said = True
        elif isinstance(what, SideFailed):
            results[side]["error"] = what.message
            if not args.json:
                print(f"hearth: error: {what.message}", file=sys.stderr)
        elif isinstance(what, TextChunk) and not args.json:
            sys.stdout.write(what.text)
            sys.stdout.flush()
        elif isinstance(what, Completion):
            results[side].update(text=what.text, finish_reason=what.finish_reason,
                                 stats={**what.stats.__dict__, "tokens_per_second": what.stats.tokens_per_second})
            if not args.json:
                s = what.stats
                print()
                print(f"[{SIDE_NAMES[side]}: {s.completion_tokens} tokens, {s.tokens_per_second:.1f} tok/s, "
                      f"context {s.context_used}/{s.n_ctx}]", file=sys.stderr)
    if args.json:
        print_json({"group": session.group, "plan": session.engines.plan, "sides": results})
    elif not args.json:
        print(f"[saved as comparison {session.group}: hearth compare A B \"…\" --continue {session.group} asks "
              "it again]", file=sys.stderr)
    return 1 if any(r["error"] for r in results) else 0
