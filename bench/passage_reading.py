"""How well does the model read retrieved passages? The ceiling of "tuned + retrieval" in document_learning.

``bench/document_learning.py`` puts the top 3 passages of the fixture's Knowledge collection before each
question. Its target for tuned + retrieval (90%) can only be met when the model answers from the passages it
is given; this bench measures that reading alone, on the same questions, with the passages given in several
ways:

- ``chunks k=N``: the top N chunks (``hearth docs`` chunks: 250 words, 50 overlapping), numbered, within the
  same token budget (``core.docs.compare``), as document_learning gives 3;
- ``sentences n=N``: from the top 3 chunks only the N sentences that share the most rare words with the
  question (idf over those chunks' sentences), in document order: extractive compression as RECOMP does with a
  trained selector (Xu et al., arXiv 2310.04408), here with term overlap and no model.

Printed per way: accuracy, how often the right answer is in the passages at all, and the passages' median
tokens. With ``--adapter GGUF`` the same with a GGUF LoRA applied (a tuned model's reading).

    .venv/bin/python bench/passage_reading.py [--fixture handbook|rescue|both] [--adapter GGUF] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.document_learning import FIXTURE_NAMES, N_CTX, Fixture, as_probe, index_documents  # noqa: E402

CHUNKS = (1, 2, 3)
SENTENCES = (1, 3, 5)


def _words(text: str) -> set[str]:
    from core.finetune.data.probes import STOP_WORDS

    return {w for w in re.findall(r"[\w£€$']+", text.casefold()) if w not in STOP_WORDS}


def sentences_context(passages: list[Any], query: str, n: int) -> str:
    """The ``n`` sentences of ``passages`` that share the most rare words with ``query``, under their headers."""
    from core.docs.context import passage_header
    from core.finetune.data.probes import split_sentences

    found = [(p, s) for p in passages for s, heading in split_sentences(p.text) if not heading]
    df: dict[str, int] = {}
    for _, s in found:
        for w in _words(s):
            df[w] = df.get(w, 0) + 1
    asked = _words(query)

    def overlap(sentence: str) -> float:
        return sum(math.log(1 + len(found) / df[w]) for w in _words(sentence) & asked)

    keep = sorted(sorted(range(len(found)), key=lambda j: -overlap(found[j][1]))[:n])
    blocks: dict[int, tuple[Any, list[str]]] = {}
    for j in keep:
        passage, sentence = found[j]
        blocks.setdefault(id(passage), (passage, []))[1].append(sentence)
    return "\n\n".join(f"{passage_header(number, p)}\n{' '.join(ss)}"
                       for number, (p, ss) in enumerate(blocks.values(), start=1))


def run(fixture: Fixture, starter: Path, adapter: Path | None) -> dict[str, Any]:
    from core.docs import DocsLibrary, build_context, search
    from core.docs.compare import BUDGET_TOKENS, probe_query, score_probe
    from core.engine import Engine, LoadOptions

    home = Path(tempfile.mkdtemp(prefix=f"hearth-reading-{fixture.name}-"))
    os.environ["HEARTH_HOME"] = str(home)
    collection = index_documents(home, fixture)
    probes = [as_probe(q) for q in fixture.questions]
    with DocsLibrary().open(collection) as opened:
        found = [search(opened, probe_query(p), max(CHUNKS)) for p in probes]
    out: dict[str, Any] = {}
    with Engine() as engine:
        engine.load(starter, LoadOptions(n_ctx=N_CTX, n_threads=os.cpu_count() or 2,
                                         loras=[(str(adapter), 1.0)] if adapter else []))

        def count(text: str) -> int:
            return len(engine.tokenize(text))

        ways: dict[str, list[str]] = {"no passages": ["" for _ in probes]}
        for k in CHUNKS:
            ways[f"chunks k={k}"] = [build_context(f[:k], BUDGET_TOKENS, count).text for f in found]
        for n in SENTENCES:
            ways[f"sentences n={n}"] = [sentences_context(f[:3], probe_query(p), n) for f, p in zip(found, probes,
                                                                                                   strict=True)]
        print(f"\n## {fixture.name}: {len(probes)} questions" + (f", adapter {adapter.name}" if adapter else ""))
        for way, contexts in ways.items():
            right = [score_probe(engine, p, c) == p.answer_index for p, c in zip(probes, contexts, strict=True)]
            present = [p.answer in c for p, c in zip(probes, contexts, strict=True)]
            tokens = statistics.median(count(c) for c in contexts) if any(contexts) else 0
            out[way] = {"accuracy": sum(right) / len(right), "answer_in_passages": sum(present) / len(present),
                        "median_tokens": tokens, "right": [int(r) for r in right]}
            print(f"  {way:16s} {out[way]['accuracy']:4.0%}   answer in the passages {out[way]['answer_in_passages']:4.0%}"
                  f"   median {tokens:.0f} tokens", flush=True)
    return out


def main() -> None:
    from bench.common import starter_model_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixture", choices=[*FIXTURE_NAMES, "both"], default="both")
    parser.add_argument("--adapter", type=Path, help="a GGUF LoRA to apply (e.g. from hearth export)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    names = FIXTURE_NAMES if args.fixture == "both" else (args.fixture,)
    results = {name: run(Fixture(name), starter_model_path(), args.adapter) for name in names}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
