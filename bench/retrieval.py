"""Retrieval speed: indexing throughput and query latency on a synthetic collection of documents.

    .venv/bin/python -m bench.retrieval [--docs 1000] [--queries 200] [--embed MODEL]

Writes ``--docs`` synthetic text files (Zipf-distributed words, a few hundred words each) into a
temporary folder, indexes them into a temporary collection, then times BM25 queries of 2–5 words
(median and p95; the issue's target is < 20 ms at 1,000 documents). The baseline, measured in the same
run, is a full scan of the chunks with SQL LIKE (what a store without a full-text index would do).
With ``--embed MODEL`` it also times embedding and vector/hybrid queries, and prints recall@5 of BM25,
vectors and hybrid on the labelled set in tests/fixtures/docs_queries.json.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, median

SYLLABLES = ["ka", "lo", "mi", "ren", "to", "sa", "vel", "dor", "qui", "an", "es", "ur", "pol", "ni", "zet", "ba"]


def vocabulary(size: int, rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))))
    return sorted(words)


def write_documents(folder: Path, count: int, rng: random.Random) -> tuple[list[str], int]:
    """``count`` files of 150–600 Zipf-distributed words; returns the vocabulary and the total words."""
    vocab = vocabulary(6000, rng)
    weights = [1.0 / (rank + 1) for rank in range(len(vocab))]
    total = 0
    for i in range(count):
        n = rng.randint(150, 600)
        words = rng.choices(vocab, weights=weights, k=n)
        lines = [" ".join(words[j : j + 12]) for j in range(0, n, 12)]
        suffix = ".md" if i % 4 == 0 else ".txt"
        head = f"# Document {i}\n" if suffix == ".md" else ""
        (folder / f"doc{i:05}{suffix}").write_text(head + "\n".join(lines) + "\n", encoding="utf-8")
        total += n
    return vocab, total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(fn: object, queries: list[str]) -> list[float]:
    out = []
    for query in queries:
        start = time.perf_counter()
        fn(query)  # type: ignore[operator]
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--embed", metavar="MODEL", help="an embedding model (library name or .gguf path)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    from core.docs import DocsLibrary, search
    from core.docs.search import bm25_ranking

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="hearth-bench-retrieval-") as tmp:
        folder = Path(tmp) / "docs"
        folder.mkdir()
        vocab, total_words = write_documents(folder, args.docs, rng)
        library = DocsLibrary(Path(tmp) / "collections")
        with library.create("bench") as collection:
            start = time.perf_counter()
            report = collection.add([folder])
            index_s = time.perf_counter() - start
            info = collection.info()
            size_mb = sum(p.stat().st_size for p in collection.folder.iterdir()) / 1e6
            print(f"Indexed {len(report.added)} documents ({total_words:,} words, {info.chunks:,} chunks) in "
                  f"{index_s:.2f} s: {len(report.added) / index_s:,.0f} docs/s, {total_words / index_s:,.0f} words/s; "
                  f"index {size_mb:.1f} MB")

            start = time.perf_counter()
            collection.refresh()
            print(f"Refresh with nothing changed (the check on open): {(time.perf_counter() - start) * 1000:.1f} ms")

            common = vocab[:300]  # queries mix frequent and rare words, as people's do
            queries = [" ".join(rng.choice(common if rng.random() < 0.5 else vocab) for _ in range(rng.randint(2, 5)))
                       for _ in range(args.queries)]
            timed(lambda q: search(collection, q, args.k), queries[:10])  # warm the page cache
            bm25 = timed(lambda q: search(collection, q, args.k), queries)
            fts_only = timed(lambda q: bm25_ranking(collection, q, args.k), queries)

            def like_scan(query: str) -> list[object]:
                words = query.split()
                where = " OR ".join("text LIKE ?" for _ in words)
                return collection.conn.execute(f"SELECT id FROM chunks WHERE {where}",
                                               [f"%{w}%" for w in words]).fetchall()

            baseline = timed(like_scan, queries[: max(20, args.queries // 5)])
            target = "met" if percentile(bm25, 0.95) < 20 else "MISSED"
            print(f"BM25 search, k={args.k}, {len(queries)} queries: median {median(bm25):.2f} ms, "
                  f"p95 {percentile(bm25, 0.95):.2f} ms (target < 20 ms: {target}); FTS5 alone median "
                  f"{median(fts_only):.2f} ms")
            print(f"Baseline, a LIKE scan of every chunk: median {median(baseline):.2f} ms "
                  f"({median(baseline) / median(bm25):.1f}× the BM25 search)")
            if args.embed:
                bench_embeddings(collection, queries, args)


def bench_embeddings(collection: object, queries: list[str], args: argparse.Namespace) -> None:
    from core.docs import DocsLibrary, load_embedder, search
    from tests.core.test_docs_support import labelled_set, write_handbook

    with load_embedder(args.embed) as embedder:
        start = time.perf_counter()
        count = collection.embed(embedder)  # type: ignore[attr-defined]
        seconds = time.perf_counter() - start
        print(f"Embedded {count:,} chunks with {embedder.model_name} ({embedder.dim}-long) in {seconds:.1f} s: "
              f"{count / seconds:,.1f} chunks/s")
        few = queries[:50]
        for mode in ("vector", "hybrid"):
            ms = timed(lambda q, m=mode: search(collection, q, args.k, embedder=embedder, mode=m), few)  # type: ignore[arg-type]
            print(f"{mode} search ({len(few)} queries, incl. embedding the query): median {median(ms):.1f} ms, "
                  f"p95 {percentile(ms, 0.95):.1f} ms")
        labelled = labelled_set()
        with tempfile.TemporaryDirectory(prefix="hearth-bench-labelled-") as tmp:
            library = DocsLibrary(Path(tmp) / "collections")
            with library.create("labelled") as handbook:
                handbook.add([write_handbook(Path(tmp) / "handbook")], embedder=embedder)
                row = []
                for mode in ("bm25", "vector", "hybrid"):
                    hits = sum(
                        any(Path(p.file).name == q["doc"] for p in search(handbook, q["query"], 5, embedder=embedder,
                                                                            mode=mode))
                        for q in labelled["queries"])
                    row.append(f"{mode} {hits}/{len(labelled['queries'])}")
                print(f"Recall@5 on the labelled set ({ROOT.name}/tests/fixtures/docs_queries.json): " + ", ".join(row))


if __name__ == "__main__":
    main()
