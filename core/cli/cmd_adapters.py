"""``hearth adapters``: list the trained adapters."""

from __future__ import annotations

import argparse
import time

from core.cli.output import print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    a = sub.add_parser("adapters", help="list trained adapters")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    from core.finetune.adapters import list_adapters

    entries = list_adapters()
    if args.json:
        print_json([e.to_dict() for e in entries])
        return 0
    rows = []
    for e in entries:
        after = e.manifest.get("metrics", {}).get("after", {})
        rows.append([e.name, e.base, e.method, e.manifest.get("objective", ""),
                     f"{after.get('eval_loss', float('nan')):.3f}" if after else "-",
                     time.strftime("%Y-%m-%d %H:%M", time.localtime(float(e.manifest.get("created_at", 0))))])
    print_table(rows, ["NAME", "BASE", "METHOD", "OBJECTIVE", "EVAL LOSS", "CREATED"])
    return 0
