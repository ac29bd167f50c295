"""The ``hearth`` command: the same core API the desktop app uses, for terminals and scripts.

Each topic lives in its own ``cmd_*`` module with a ``register(subparsers)`` function; user errors
(``HearthError``) print one line and exit non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from core.errors import HearthError

# Modules that add sub-commands, in the order they appear in --help.
COMMAND_MODULES = [
    "core.cli.cmd_setup",
    "core.cli.cmd_models",
    "core.cli.cmd_chat",
    "core.cli.cmd_compare",
    "core.cli.cmd_tools",
    "core.cli.cmd_docs",
    "core.cli.cmd_hub",
    "core.cli.cmd_hw",
    "core.cli.cmd_workers",
    "core.cli.cmd_finetune",
    "core.cli.cmd_trainpack",
    "core.cli.cmd_adapters",
    "core.cli.cmd_export",
    "core.cli.cmd_serve",
    "core.cli.cmd_rpc",
]


def build_parser() -> argparse.ArgumentParser:
    from core import __version__

    parser = argparse.ArgumentParser(
        prog="hearth",
        description="Run and fine-tune local LLMs. With no command, opens the desktop app.",
    )
    parser.add_argument("--version", action="version", version=f"hearth {__version__}")
    parser.add_argument("--self-test", metavar="SCREENSHOT", nargs="?",
                        help="open the window, chat a few tokens with the starter model, save a screenshot, quit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # a topic not built yet
            raise
        module.register(sub)
    return parser


def open_desktop(self_test: str | None = None) -> int:
    try:
        # Imported by name: core never depends on the desktop package, it only launches it.
        desktop_main = importlib.import_module("desktop.app").main
    except ImportError as exc:
        missing = getattr(exc, "name", "") or ""
        if missing.startswith(("PySide6", "shiboken6", "desktop")):
            print(
                "The desktop app is not installed (PySide6 is missing): install it with "
                "'pip install \"hearth[desktop]\"' or run 'make run'; 'hearth --help' lists the commands.",
                file=sys.stderr,
            )
            return 2
        raise
    if self_test is not None:
        return int(desktop_main(self_test=self_test))
    return int(desktop_main())


def main(argv: Sequence[str] | None = None) -> int:
    from core import trainpack

    trainpack.activate()  # the installed app's torch, safetensors and peft live in the training pack
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list:
        return open_desktop()
    if args_list[0] == "--self-test":
        # The installers' smoke test: the window chats a few tokens with the starter model, then quits.
        from core.paths import get_paths

        shot = args_list[1] if len(args_list) > 1 else str(get_paths().logs / "self-test.png")
        return open_desktop(self_test=shot)
    parser = build_parser()
    args = parser.parse_args(args_list)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HearthError as exc:
        print(f"hearth: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
