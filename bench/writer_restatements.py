"""What a writer model's restatements of a document set's fact lines look like after the guard.

    python -m bench.writer_restatements [--docs tests/fixtures/handbook] [--writer /work/models/smollm2-135m-instruct-q4_1.gguf]

Each sentence of the documents (``core.finetune.data.probes.split_sentences``, headings left out) is one
line; the writer writes ``--per-line`` restatements of each, and the guard of
``core.finetune.data.views.written`` keeps those with every name, number and date of their line. Prints
the counts, the reasons for dropping, and examples of both; ``--json`` writes the whole report.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DEFAULT_WRITER = "/work/models/smollm2-135m-instruct-q4_1.gguf"


def fact_lines(folder: Path) -> list[str]:
    from core.finetune.data.probes import split_sentences

    lines: list[str] = []
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".md", ".txt")):
        lines += [s for s, heading in split_sentences(path.read_text(encoding="utf-8")) if not heading]
    return lines


def main() -> None:
    from core.finetune.data.views.written import resolve_writer, write_restatements

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", default="tests/fixtures/handbook")
    parser.add_argument("--writer", default=DEFAULT_WRITER)
    parser.add_argument("--per-line", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="FILE", help="write the report (kept and dropped in full) here")
    args = parser.parse_args()
    lines = fact_lines(Path(args.docs))
    path, name = resolve_writer(args.writer)
    start = time.perf_counter()
    report = write_restatements(lines, path, seed=args.seed, per_line=args.per_line)
    seconds = time.perf_counter() - start
    summary = report.to_summary(name)
    print(f"writer {name}: {summary['lines']} lines, {summary['generated']} written, {summary['kept']} kept, "
          f"{summary['dropped']} dropped in {seconds:.0f} s")
    print("dropped by reason:", ", ".join(f"{k} {v}" for k, v in sorted(report.dropped_by_reason().items())))
    for line, text in report.kept[:5]:
        print(f"  kept    | {line}\n          → {text}")
    for item in report.dropped[:5]:
        print(f"  {item['why'][:28]:<28} | {item['line']}\n          → {item['text'][:160]}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            **summary, "seconds": round(seconds, 1), "by_reason": report.dropped_by_reason(),
            "kept_pairs": report.kept, "dropped_all": report.dropped,
        }, indent=1, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
