"""``hearth chat`` (interactive or one shot) and ``hearth chats`` (saved conversations)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.chats import ChatStore
from core.chats.session import ChatSession, ToolCallRequest, ToolCallResult
from core.cli.cmd_tools import add_mcp_arguments, chat_tool_options, print_tool_item
from core.cli.output import GPU_LAYERS_HELP, gpu_layers, print_json, print_table, status_line
from core.engine import Completion, Engine, LoadOptions, SamplingParams, TextChunk
from core.errors import EngineCrashedError, HearthError, ImageError, NotFoundError, WorkerLostError
from core.library import Library, load_options_for
from core.paths import get_paths

if TYPE_CHECKING:
    from core.docs import Collection, DocsTurn, Embedder
    from core.media import PreparedImage



def add_sampling_flags(g: Any, defaults: Any) -> None:
    """The sampling flags of ``hearth chat`` and ``hearth compare``, defaulting to ``defaults``' fields."""
    g.add_argument("--temperature", type=float, default=defaults.temperature)
    g.add_argument("--top-p", type=float, default=defaults.top_p)
    g.add_argument("--top-k", type=int, default=defaults.top_k)
    g.add_argument("--min-p", type=float, default=defaults.min_p)
    g.add_argument("--repeat-penalty", type=float, default=defaults.repeat_penalty)
    g.add_argument("--seed", type=int, default=defaults.seed)
    g.add_argument("--max-tokens", type=int, default=defaults.max_tokens)

def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("chat", help="chat with a model (streams to the terminal)")
    p.add_argument("model", nargs="?", help="library name or .gguf path (default: the conversation's model)")
    p.add_argument("-p", "--prompt", help="one message; print the answer and exit")
    p.add_argument("--system", default="", help="system prompt")
    p.add_argument("--continue", dest="continue_id", type=int, metavar="ID", help="continue a saved conversation")
    p.add_argument("--lora", action="append", default=[], metavar="ADAPTER[:SCALE]",
                   help="apply a GGUF LoRA adapter (a .gguf file or an adapter name); repeatable")
    p.add_argument("--image", action="append", default=[], metavar="FILE",
                   help="attach an image (PNG, JPEG, WebP) to the prompt or the first message; repeatable. "
                        "In a chat, /image FILE attaches one to the next message")
    p.add_argument("--mmproj", metavar="FILE",
                   help="the vision projector (mmproj .gguf) to load with the model (default: the one paired in the "
                        "library)")
    g = p.add_argument_group("documents (retrieval)")
    g.add_argument("--docs", metavar="COLLECTION",
                   help="answer from a document collection: the best passages go into the prompt, cited as [n]")
    g.add_argument("--no-docs", action="store_true",
                   help="do not look up the collection an adapter given with --lora was taught with")
    g.add_argument("--docs-k", type=int, default=5, metavar="N", help="passages to retrieve (default 5)")
    g.add_argument("--docs-budget", type=int, default=1024, metavar="TOKENS",
                   help="most tokens of passages in the prompt (default 1024; less when the context is smaller)")
    add_mcp_arguments(p)
    g = p.add_argument_group("model loading")
    g.add_argument("--ctx", type=int, default=4096, help="context length in tokens (0: the model's own)")
    g.add_argument("--threads", type=int, default=None)
    g.add_argument("--gpu-layers", type=gpu_layers, default="auto", help=GPU_LAYERS_HELP)
    g.add_argument("--no-workers", action="store_true",
                   help="load on this computer alone, without the other machines of 'hearth workers'")
    g = p.add_argument_group("sampling")
    defaults = SamplingParams()
    add_sampling_flags(g, defaults)
    g.add_argument("--draft", default=None, metavar="off|lookup|MODEL",
                   help="speculative decoding, the same answer sooner: 'lookup' guesses tokens from the conversation, "
                        "a model's name or .gguf drafts with that small model of the same family "
                        f"(default: {defaults.draft})")
    p.add_argument("--json", action="store_true", help="with -p: print the answer and its stats as JSON")
    p.set_defaults(func=chat)

    p = sub.add_parser("chats", help="list, show, export or delete saved conversations")
    p.add_argument("--json", action="store_true")
    p.add_argument("--search", default="", help="only conversations whose title or text contains this")
    p.set_defaults(func=list_chats)
    chats_sub = p.add_subparsers(dest="chats_command", metavar="ACTION")
    e = chats_sub.add_parser("export", help="write a conversation as Markdown or JSON")
    e.add_argument("id", type=int)
    e.add_argument("--format", choices=["md", "json"], default="md")
    e.add_argument("-o", "--output", help="file to write (default: standard output)")
    e.set_defaults(func=export_chat)
    s = chats_sub.add_parser("show", help="print a conversation")
    s.add_argument("id", type=int)
    s.set_defaults(func=lambda a: export_chat(argparse.Namespace(id=a.id, format="md", output=None)))
    r = chats_sub.add_parser("rm", help="delete a conversation")
    r.add_argument("id", type=int)
    r.set_defaults(func=remove_chat)


def resolve_lora(spec: str) -> tuple[str, float]:
    """``ADAPTER[:SCALE]`` → (GGUF path, scale). ADAPTER is a .gguf path or an adapter's name."""
    name, scale = spec, 1.0
    head, sep, tail = spec.rpartition(":")
    if sep and head:
        try:
            scale = float(tail)
            name = head
        except ValueError:
            pass
    path = Path(name).expanduser()
    if path.is_file():
        return str(path), scale
    folder = get_paths().adapters / name
    candidates = sorted(folder.glob("*.gguf")) if folder.is_dir() else []
    if not candidates:
        if folder.is_dir():
            from core.gguf_export.adapter import find_adapter_folder

            find_adapter_folder(folder)  # a full fine-tune (a whole model) says so, and how to chat with it
        raise NotFoundError(
            f"No adapter '{name}': give a GGUF LoRA file, or export the adapter first with 'hearth export {name}'."
        )
    return str(candidates[0]), scale


def _lora_name(spec: str) -> str:
    """``ADAPTER[:SCALE]`` without its scale (as ``resolve_lora`` reads it)."""
    head, sep, tail = spec.rpartition(":")
    if sep and head:
        try:
            float(tail)
            return head
        except ValueError:
            pass
    return spec


def adapter_docs(lora_specs: list[str], *, quiet: bool = False) -> str | None:
    """The collection a ``--lora`` adapter was taught with (tune + index), said in one line; None if none."""
    from core.finetune.adapters import get_adapter
    from core.finetune.indexing import adapter_collection

    for spec in lora_specs:
        name = _lora_name(spec)
        if Path(name).expanduser().is_file():
            continue
        try:
            collection = adapter_collection(get_adapter(name))
        except HearthError:
            continue
        if collection is not None:
            if not quiet:
                print(f"[documents: looking up the collection '{collection}' that {name} was taught with; "
                      "--no-docs turns it off]", file=sys.stderr)
            return collection
    return None


def _sampling(args: argparse.Namespace) -> SamplingParams:
    return SamplingParams(
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, min_p=args.min_p,
        repeat_penalty=args.repeat_penalty, seed=args.seed, max_tokens=args.max_tokens,
    )


def chat(args: argparse.Namespace) -> int:
    store = ChatStore()
    library = Library()
    library.ensure_starter()
    if args.continue_id is not None:
        conv = store.get(args.continue_id)
        model_ref = args.model or conv.model
    else:
        if not args.model:
            raise HearthError("Name a model to chat with (see 'hearth models'), or --continue ID.")
        model_ref = args.model
    entry = library.get(model_ref)
    loras = [resolve_lora(spec) for spec in args.lora]
    images = _load_images(args.image)  # before the model loads: a bad file is said at once
    params = _sampling(args)
    draft_model = None
    if args.draft not in (None, "off", "lookup"):
        draft_model = library.get(args.draft).path  # a name or path not in the library: NotFoundError says so
    params.draft = "model" if draft_model else (args.draft or params.draft)
    options = LoadOptions(n_ctx=args.ctx, n_threads=args.threads, n_gpu_layers=args.gpu_layers, loras=loras,
                          draft_model=str(draft_model) if draft_model else None)
    options = load_options_for(entry, _with_mmproj(options, args.mmproj))  # the library's paired projector
    if getattr(args, "no_workers", False):
        options.rpc_workers = []  # load_options_for added the enabled workers (core.workers)
    if images and not options.mmproj:
        print(f"hearth: error: {entry.name} cannot read images: it has no vision projector (mmproj) paired; give "
              f"one with --mmproj FILE or pair one with 'hearth import MODEL --mmproj FILE'.", file=sys.stderr)
        return 2  # a usage error, like argparse's: nothing was loaded or saved
    collection = None
    if not args.docs and not getattr(args, "no_docs", False):
        args.docs = adapter_docs(args.lora, quiet=args.json)
    if args.docs:
        from core.cli.cmd_docs import open_refreshed

        collection = open_refreshed(args.docs, quiet=args.json)
    with Engine() as engine, contextlib.ExitStack() as stack:
        if collection is not None:
            stack.callback(collection.close)
        shown = not args.json and sys.stderr.isatty()

        def loading(fraction: float) -> None:
            status_line(f"Loading {entry.name}… {fraction:4.0%}")

        status = engine.load(entry.path, options, progress=loading if shown else None)
        if shown:
            status_line()
        if args.continue_id is not None:
            session = ChatSession(store, engine, args.continue_id)
        else:
            session = ChatSession.start(store, engine, model=entry.name, system_prompt=args.system, params=params)
        if not args.json:
            from core.workers import describe_split

            seeing = "; reads images" if getattr(status, "vision", False) else ""
            split = describe_split(status.split)
            where = status.where  # "Vulkan0: Radeon 780M, 25/25 layers"
            print(f"[{entry.name}: {status.chat_format_description}; context {status.n_ctx}{seeing}"
                  f"{'; ' + split if split else ''}{'; ' + where if where else ''}]", file=sys.stderr)
            if status.gpu_note:
                print(f"note: {status.gpu_note}", file=sys.stderr)
        embedder = _collection_embedder(collection, stack, quiet=args.json) if collection is not None else None
        tool_options = chat_tool_options(args, status, stack)
        ask = _docs_asker(collection, engine, status.n_ctx, args, session, embedder) if collection is not None else None
        if args.prompt is not None:
            message, turn = ask(args.prompt) if ask else (args.prompt, None)
            calls: list[dict[str, str]] = []
            completion = _stream_answer(session.send(message, params, images=images, **tool_options), quiet=args.json,
                                        calls=calls, session=session)
            if turn is not None and not args.json:
                _print_sources(turn)
            if args.json and completion:
                extra = {"sources": [{"n": n, **p.to_dict()} for n, p in enumerate(turn.context.passages, 1)],
                         "notes": turn.notes} if turn is not None else {}
                if tool_options:
                    extra["tool_calls"] = calls
                if images:
                    extra["images"] = [image.sha256 for image in images]
                print_json({"conversation_id": session.conversation_id, "text": completion.text,
                            "finish_reason": completion.finish_reason, "stats": completion.stats.__dict__,
                            "chat_format": status.chat_format_source, **extra})
            return 0
        return _interactive(session, params, ask, tool_options, images=images,
                            vision=bool(getattr(status, "vision", False)), model=entry.name)


def _load_images(paths: list[str]) -> list[PreparedImage]:
    """The files given with --image, checked and scaled (``ImageError`` names a file that cannot be used)."""
    if not paths:
        return []
    from core.media import load_image_file

    return [load_image_file(path) for path in paths]


def _with_mmproj(options: LoadOptions, mmproj: str | None) -> LoadOptions:
    """``options`` with the projector given by --mmproj (it wins over the library's pairing)."""
    if not mmproj:
        return options
    path = Path(mmproj).expanduser()
    if not path.is_file():
        raise NotFoundError(f"There is no projector file {path}: give the path of an mmproj .gguf file.")
    options.mmproj = str(path)
    return options


def _collection_embedder(collection: Collection, stack: contextlib.ExitStack, *, quiet: bool) -> Embedder | None:
    """The collection's embedding model, loaded for the chat (hybrid ranking), or None: keywords only.

    A collection embedded with a model that is no longer in the library is still searched, by keywords,
    with a note that says so.
    """
    from core.docs import load_embedder

    if not collection.embed_model:
        return None
    try:
        return stack.enter_context(load_embedder(collection.embed_model))
    except HearthError as exc:
        if not quiet:
            print(f"[searching by keywords only: the embedding model {collection.embed_model} is not usable ({exc})]",
                  file=sys.stderr)
        return None


def _docs_asker(
    collection: Collection, engine: Engine, n_ctx: int, args: argparse.Namespace, session: ChatSession,
    embedder: Embedder | None = None,
) -> Callable[[str], tuple[str, DocsTurn]]:
    """The question → (message with the collection's passages, the turn) step of a chat with --docs."""
    from core.docs import prepare_question

    def ask(question: str) -> tuple[str, DocsTurn]:
        turn = prepare_question(collection, question, count_tokens=lambda t: len(engine.tokenize(t)), n_ctx=n_ctx,
                                k=args.docs_k, budget_tokens=args.docs_budget, answer_tokens=args.max_tokens,
                                embedder=embedder)
        if not session.conversation.title:
            session.store.rename(session.conversation_id, question.strip().splitlines()[0][:60])
        for note in turn.notes:
            if not args.json:
                print(f"[{note}]", file=sys.stderr)
        return turn.message, turn

    return ask


def _print_sources(turn: DocsTurn) -> None:
    from core.docs import source_lines

    if turn.context.passages:
        print("Sources:")
        for line in source_lines(turn.context):
            print(f"  {line}")


def _stream_answer(stream: object, quiet: bool = False, calls: list[dict[str, str]] | None = None,
                   session: ChatSession | None = None) -> Completion | None:
    completion = None
    try:
        for item in stream:  # type: ignore[attr-defined]
            if isinstance(item, (ToolCallRequest, ToolCallResult)):
                if not quiet:
                    print_tool_item(item)
                if isinstance(item, ToolCallResult) and calls is not None:
                    calls.append(asdict(item))
            elif isinstance(item, TextChunk):
                if not quiet:
                    sys.stdout.write(item.text)
                    sys.stdout.flush()
            elif isinstance(item, Completion):
                completion = item
    except KeyboardInterrupt:
        stream.close()  # type: ignore[attr-defined]  # cancels generation; the partial answer is saved
        print("\n[stopped]", file=sys.stderr)
        return None
    if not quiet:
        sys.stdout.write("\n")
    if completion and not quiet:
        s = completion.stats
        notes = [f"{s.completion_tokens} tokens", f"{s.tokens_per_second:.1f} tok/s", f"context {s.context_used}/{s.n_ctx}"]
        if s.drafted_tokens:
            notes.append(f"drafted {s.drafted_tokens}, accepted {s.accepted_tokens}")
        if getattr(s, "image_tokens", 0):
            notes.append(f"{s.image_tokens} image tokens")
        if s.dropped_messages:
            notes.append(f"{s.dropped_messages} oldest messages left out to fit the context")
        if completion.finish_reason == "length":
            notes.append("stopped at max tokens")
        elif completion.finish_reason == "context":
            notes.append("stopped: the context window is full")
        print(f"[{', '.join(notes)}]", file=sys.stderr)
        stored = session.store.messages(session.conversation_id)[-1:] if session is not None else []
        if stored and stored[0].meta.get("tools_stopped"):  # the cap on tool calls per answer was reached
            print(f"[{stored[0].meta['tools_stopped']}]", file=sys.stderr)
    return completion


def _interactive(
    session: ChatSession, params: SamplingParams, ask: Callable[[str], tuple[str, DocsTurn]] | None = None,
    tool_options: dict[str, Any] | None = None, *, images: list[PreparedImage] | None = None, vision: bool = False,
    model: str = "",
) -> int:
    """Read lines and answer them until /exit or end of input; ``/image FILE`` attaches to the next message."""
    tip = " /image FILE attaches an image to your next message." if vision else ""
    print(f"Conversation {session.conversation_id}. Type /exit or press Ctrl+D to leave; Ctrl+C stops an answer.{tip}",
          file=sys.stderr)
    pending = list(images or [])  # --image files go with the first message
    for image in pending:
        print(f"[image attached: {image.width}x{image.height}; it goes with your next message]", file=sys.stderr)
    while True:
        try:
            text = input(">>> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        except KeyboardInterrupt:
            print(file=sys.stderr)
            continue
        if text.strip() in ("/exit", "/quit", "/bye"):
            return 0
        if text.strip() == "/image" or text.strip().startswith("/image "):
            _attach(text.strip()[len("/image"):].strip(), pending, vision, model)
            continue
        if not text.strip():
            continue
        try:
            message, turn = ask(text) if ask else (text, None)
            attached, pending = pending, []
            _stream_answer(session.send(message, params, images=attached, **(tool_options or {})), session=session)
            if turn is not None:
                _print_sources(turn)
        except WorkerLostError as exc:  # the engine loads the model on what is left at the next message
            print(f"hearth: error: {exc}", file=sys.stderr)
        except EngineCrashedError as exc:
            print(f"hearth: error: {exc}", file=sys.stderr)
            return 1


def _attach(argument: str, pending: list[PreparedImage], vision: bool, model: str) -> None:
    """The /image command: check the file and keep it for the next message, or say in one line why not."""
    from core.media import load_image_file

    if not vision:
        print(f"hearth: error: {model or 'This model'} cannot read images: it has no vision projector (mmproj) "
              "loaded; start the chat again with --mmproj FILE.", file=sys.stderr)
        return
    path = argument.strip("\"'")  # a path pasted in quotes
    if not path:
        print("Give the image's file: /image FILE (PNG, JPEG or WebP).", file=sys.stderr)
        return
    try:
        image = load_image_file(path)
    except ImageError as exc:
        print(f"hearth: error: {exc}", file=sys.stderr)
        return
    pending.append(image)
    count = f"{len(pending)} images" if len(pending) > 1 else "it"
    print(f"[image attached: {image.width}x{image.height}; {count} will go with your next message]", file=sys.stderr)


def list_chats(args: argparse.Namespace) -> int:
    conversations = ChatStore().list(search=args.search)
    if args.json:
        print_json([c.to_dict() for c in conversations])
        return 0
    import datetime

    rows = [
        (c.id, c.title or "(untitled)", c.model, c.message_count,
         datetime.datetime.fromtimestamp(c.updated_at).strftime("%Y-%m-%d %H:%M"))
        for c in conversations
    ]
    print_table(rows, ["ID", "TITLE", "MODEL", "MESSAGES", "UPDATED"])
    return 0


def export_chat(args: argparse.Namespace) -> int:
    text = ChatStore().export(args.id, args.format)
    if args.output:
        from core.paths import write_text_atomic

        write_text_atomic(Path(args.output), text)
        print(f"Wrote {args.output}.", file=sys.stderr)
    else:
        print(text)
    return 0


def remove_chat(args: argparse.Namespace) -> int:
    ChatStore().delete(args.id)
    print(f"Deleted conversation {args.id}.")
    return 0
