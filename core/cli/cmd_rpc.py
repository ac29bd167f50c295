"""``hearth rpc-worker``: lend this machine's memory and compute to a Hearth on another machine.

It runs llama.cpp's own RPC server (core.engine.rpc.serve) until Ctrl-C; the main computer adds it
with ``hearth workers add HOST:PORT`` and loads models split across both.
"""

from __future__ import annotations

import argparse

from core.engine.rpc import DEFAULT_PORT


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "rpc-worker",
        help="serve this machine's device to a Hearth on another machine (llama.cpp RPC)",
        description="Run llama.cpp's RPC server so that a Hearth on another computer can load models split "
        "across both. The protocol has no authentication or encryption: it listens on 127.0.0.1 unless --host "
        "says otherwise; reach it through an SSH tunnel (ssh -L PORT:127.0.0.1:PORT host) or on a trusted network.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    p.add_argument("--cache", action="store_true",
                   help="keep received weights in Hearth's cache folder: the same model loads faster next time")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the physical cores)")
    p.set_defaults(func=run_rpc_worker)


def run_rpc_worker(args: argparse.Namespace) -> int:
    from core.engine.rpc import serve
    from core.errors import WorkerError

    if args.threads is not None and args.threads <= 0:
        raise WorkerError(f"--threads {args.threads} is not a thread count: give 1 or more.")
    return serve(args.host, args.port, cache=args.cache, threads=args.threads)
