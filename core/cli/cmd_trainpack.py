"""``hearth training-pack``: the on-demand install of torch, transformers and peft (core.trainpack)."""

from __future__ import annotations

import argparse
import sys

from core.cli.output import print_json, print_kv, status_line
from core.units import human_size


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("training-pack", help="install, check or remove the fine-tuning packages")
    p.add_argument("action", nargs="?", choices=["status", "install", "remove"], default="status")
    p.add_argument("--json", action="store_true", help="print JSON (status)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core import trainpack

    if args.action == "install":
        return install_with_progress()
    if args.action == "remove":
        if trainpack.builtin():
            print("This Python has the training packages itself (a source install); nothing to remove.")
        elif trainpack.remove():
            print("Removed the training pack.")
        else:
            print("The training pack is not installed.")
        return 0
    record = trainpack.ready()
    status = {
        "builtin": trainpack.builtin(),
        "installed": record is not None,
        "folder": str(trainpack.pack_dir()),
        "record": record,
        "torch_build": trainpack.choose_torch().build,
    }
    if args.json:
        print_json(status)
        return 0
    if status["builtin"]:
        print("Fine-tuning uses this Python's own torch, transformers and peft (a source install).")
    elif record:
        versions = ", ".join(f"{k} {v}" for k, v in (record.get("versions") or {}).items())
        print_kv([("Training pack", "installed"), ("Packages", versions),
                  ("torch build", record.get("torch_build", "")),
                  ("Size", human_size(int(record.get("bytes") or 0))), ("Folder", trainpack.pack_dir())])
    else:
        print("The training pack is not installed: 'hearth training-pack install' installs it "
              f"({trainpack.choose_torch().reason}).")
    return 0


def install_with_progress() -> int:
    from core import trainpack

    def show(p: trainpack.InstallProgress) -> None:
        if sys.stderr.isatty():
            status_line(f"[{p.fraction * 100:3.0f}%] {p.message}")
        else:
            print(f"[{p.fraction * 100:3.0f}%] {p.message}", file=sys.stderr, flush=True)

    record = trainpack.install(show)
    if sys.stderr.isatty():
        status_line()
    versions = ", ".join(f"{k} {v}" for k, v in (record.get("versions") or {}).items())
    print(f"Installed the training pack ({versions}; {human_size(int(record['bytes']))}).")
    return 0


def offer_install() -> bool:
    """Before a fine-tune: True when training can run, after offering the install in a terminal."""
    from core import trainpack

    if trainpack.activate():
        return True
    if not sys.stdin.isatty():
        trainpack.require()  # raises the clear error
    choice = trainpack.choose_torch()
    print("Checking the training pack's download size…", file=sys.stderr, flush=True)
    size = trainpack.download_size(choice)
    amount = f"{human_size(size)} to download" if size else "a download of several hundred MB"
    answer = input(f"Fine-tuning needs the training pack (torch, transformers, peft; {choice.reason}), "
                   f"{amount}. Install it now? [Y/n] ")
    if answer.strip().lower() not in ("", "y", "yes"):
        trainpack.require()
    install_with_progress()
    return trainpack.activate()
