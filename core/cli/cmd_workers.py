"""``hearth workers``: the other machines a model is split across (llama.cpp's RPC workers).

Each worker runs ``hearth rpc-worker`` (``core.engine.rpc``); this command keeps the list in the settings
(``core.workers``) and shows what each one reports: device, free and total memory, whether it answers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.cli.output import print_json, print_table
from core.errors import HearthError
from core.workers import device_words

if TYPE_CHECKING:
    from core.engine.rpc import WorkerInfo
    from core.workers import WorkerEntry

USER_ERROR = 2  # like argparse's usage errors: nothing was changed
SECURITY = ("llama.cpp's RPC has no password and no encryption: reach a worker through an SSH tunnel "
            "(ssh -L 50052:127.0.0.1:50052 HOST) or on a network you trust.")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "workers",
        help="other machines to split models across (each runs 'hearth rpc-worker')",
        description="With no action: list the workers with what each reports. A model too large for this computer "
        "loads split across it and the enabled workers ('hearth workers use always': every model; "
        "HEARTH_WORKERS=off: here alone). " + SECURITY,
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_list)
    actions = p.add_subparsers(dest="workers_command", metavar="ACTION")
    a = actions.add_parser("add", help="add a worker by its address (it is asked first)")
    a.add_argument("endpoint", metavar="HOST:PORT", help="where 'hearth rpc-worker' listens (port 50052 by default)")
    a.add_argument("--name", default="", help="a short name to show, e.g. studio-pc")
    a.add_argument("--no-check", action="store_true", help="add it even when it does not answer now")
    a.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    a.set_defaults(func=run_add)
    r = actions.add_parser("remove", help="remove a worker (by name or address)")
    r.add_argument("worker", metavar="NAME_OR_ADDRESS")
    r.set_defaults(func=run_remove)
    for action, on in (("enable", True), ("disable", False)):
        e = actions.add_parser(action, help=f"{'use' if on else 'stop using'} a worker (it stays in the list)")
        e.add_argument("worker", metavar="NAME_OR_ADDRESS")
        e.set_defaults(func=run_enable, enabled=on)
    u = actions.add_parser("use", help="which models load across the workers: 'needed' (too large for here) or 'always'")
    u.add_argument("use", choices=("needed", "always"))
    u.set_defaults(func=run_use)




def worker_row(entry: WorkerEntry, info: WorkerInfo) -> dict[str, Any]:
    """One worker as JSON: the entry, whether it answers, and what it reports."""
    return {**entry.to_dict(), **info.to_dict(), "answers": info.ok}


def _user_error(exc: HearthError) -> int:
    print(f"hearth: error: {exc}", file=sys.stderr)
    return USER_ERROR


def _size(n: int) -> str:
    from core.units import human_size

    return human_size(n) if n > 0 else "-"


def print_workers(entries: Sequence[WorkerEntry], infos: Sequence[WorkerInfo]) -> None:
    rows = [
        (e.name or "-", e.endpoint, "yes" if i.ok else "no", device_words(i), _size(i.free_bytes),
         _size(i.total_bytes), "on" if e.enabled else "off")
        for e, i in zip(entries, infos, strict=True)
    ]
    print_table(rows, ["NAME", "ADDRESS", "ANSWERS", "DEVICE", "FREE", "TOTAL", "USED"])
    for e, i in zip(entries, infos, strict=True):
        if not i.ok:
            print(f"{e.label}: {i.error or 'does not answer.'}")


def run_list(args: argparse.Namespace) -> int:
    from core.workers import forget_probes, list_workers, probe_workers, workers_switched_off

    try:
        entries = list_workers()
    except HearthError as exc:
        return _user_error(exc)
    forget_probes()
    infos = probe_workers(entries) if entries else []
    if args.json:
        print_json({"workers": [worker_row(e, i) for e, i in zip(entries, infos, strict=True)],
                    "switched_off": workers_switched_off()})
        return 0
    if not entries:
        print("No other machines yet. On the other computer run 'hearth rpc-worker --host 0.0.0.0', then here "
              "'hearth workers add HOST:50052 --name NAME'.")
        print(SECURITY)
        return 0
    print_workers(entries, infos)
    print(_USE_WORDS[_current_use()])
    if workers_switched_off():
        print("HEARTH_WORKERS=off is set: models load on this computer alone.")
    return 0


def run_add(args: argparse.Namespace) -> int:
    from core.workers import add_worker, find_worker

    try:
        info = add_worker(args.endpoint, args.name, check=not args.no_check)
        entry = find_worker(info.endpoint)
    except HearthError as exc:
        return _user_error(exc)
    if getattr(args, "json", False):
        print_json(worker_row(entry, info))
        return 0
    if info.ok:
        print(f"Added {entry.label} ({entry.endpoint}): {device_words(info)}, {_size(info.free_bytes)} free of "
              f"{_size(info.total_bytes)}. {_USE_WORDS[_current_use()]}")
    else:
        print(f"Added {entry.label} ({entry.endpoint}) without asking it; it is used once it answers.")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from core.workers import remove_worker

    try:
        entry = remove_worker(args.worker)
    except HearthError as exc:
        return _user_error(exc)
    print(f"Removed {entry.label} ({entry.endpoint}).")
    return 0


def run_enable(args: argparse.Namespace) -> int:
    from core.workers import set_enabled

    try:
        entry = set_enabled(args.worker, args.enabled)
    except HearthError as exc:
        return _user_error(exc)
    state = "on: models load split onto it" if entry.enabled else "off: models load without it"
    print(f"{entry.label} ({entry.endpoint}) is {state}.")
    return 0


_USE_WORDS = {
    "needed": "Models too large for this computer load split across it and the workers switched on "
              "('hearth workers use always': every model).",
    "always": "Every model loads split across this computer and the workers switched on "
              "('hearth workers use needed': only models too large for here).",
}


def _current_use() -> str:
    from core.settings import load_settings

    try:
        use = load_settings().workers_use
    except HearthError:
        return "needed"
    return use if use in _USE_WORDS else "needed"


def run_use(args: argparse.Namespace) -> int:
    from core.settings import load_settings, save_settings

    try:
        settings = load_settings()
        settings.workers_use = args.use
        save_settings(settings)
    except HearthError as exc:
        return _user_error(exc)
    print(_USE_WORDS[args.use])
    return 0
