"""``hearth serve``: the local API server in the foreground (OpenAI- and Ollama-compatible)."""

from __future__ import annotations

import argparse
import sys
import threading
import time

from core.server.config import RequestRecord, ServerStartError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="serve the library's models to other apps (OpenAI and Ollama APIs)")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; another needs --api-key)")
    p.add_argument("--port", type=int, default=None, help="port (default: Settings > Server, 8765)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on every request")
    p.add_argument("--model", action="append", default=[], metavar="NAME",
                   help="serve only this model (repeatable; the first is loaded at once)")
    p.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                   help="a browser origin allowed to call the server (repeatable)")
    p.add_argument("--idle-minutes", type=float, default=None, help="unload an unused model after this long")
    p.set_defaults(func=serve)


def _print_record(record: RequestRecord) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime(record.time))
    tokens = f" {record.completion_tokens} tok {record.tokens_per_second:.1f} tok/s" if record.completion_tokens else ""
    model = f" {record.model}" if record.model else ""
    print(f"{stamp} {record.client} {record.method} {record.path}{model} {record.status}{tokens} "
          f"{record.seconds * 1000:.0f} ms", file=sys.stderr, flush=True)


def serve(args: argparse.Namespace) -> int:
    from core.library import Library
    from core.server import ApiServer, ModelHost, ServerConfig
    from core.settings import load_settings

    config = ServerConfig.from_settings(load_settings().server)
    if args.host is not None:
        config.host = args.host
    if args.port is not None:
        config.port = args.port
    if args.api_key is not None:
        config.api_key = args.api_key
    if args.cors:
        config.cors_origins = list(args.cors)
    if args.idle_minutes is not None:
        config.idle_unload_s = args.idle_minutes * 60
    Library().ensure_starter()
    host = ModelHost(only=args.model or None, idle_unload_s=config.idle_unload_s)
    server = ApiServer(config, host, on_request=_print_record)
    try:
        if args.model:
            for name in args.model:
                host.resolve(name)  # an unknown name fails now, not at the first request
            print(f"Loading {args.model[0]}…", file=sys.stderr, flush=True)
            host.preload(args.model[0])
        server.start()
        names = ", ".join(m.name for m in host.models()) or "none (add one with 'hearth pull' or 'hearth import')"
        print(f"Serving at {server.base_url}  (OpenAI apps: {server.url}; Ollama apps: {server.base_url})")
        print(f"Models: {names}", file=sys.stderr)
        print("Press Ctrl+C to stop.", file=sys.stderr, flush=True)
        stop = threading.Event()
        while server.running and not stop.wait(0.5):
            pass
        return 1 if server.error else 0
    except ServerStartError as exc:
        raise ServerStartError(str(exc).replace("in Settings > Server", "with --port")) from None
    except KeyboardInterrupt:
        print("\nStopping.", file=sys.stderr)
        return 0
    finally:
        server.stop()
        host.close()
