"""Retrieval over a collection: BM25 (SQLite FTS5), embeddings, and both fused by reciprocal rank.

Reciprocal-rank fusion: Cormack, Clarke and Büttcher, "Reciprocal Rank Fusion outperforms Condorcet and
individual Rank Learning Methods", SIGIR 2009 — score(d) = Σ_rankings 1 / (k + rank(d)), k = 60.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.docs.store import Collection, location_of
from core.docs.vectors import Embedder
from core.errors import HearthError

RRF_K = 60
# How deep each ranking goes before fusing: a passage at rank 50 in one list still counts.
FUSION_DEPTH = 50
MODES = ("auto", "bm25", "vector", "hybrid")

# Very common English words: in an OR query they match almost every chunk and add little to BM25.
_STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "do", "does", "for", "from", "how", "i", "in", "is", "it",
    "of", "on", "or", "that", "the", "this", "to", "was", "what", "when", "where", "which", "who", "why", "will",
    "with", "you", "your",
})
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Passage:
    """One retrieved chunk: its text, file and location, the final score and each ranking's rank (1-based)."""

    text: str
    file: str
    location: str
    score: float
    sources: dict[str, int] = field(default_factory=dict)  # "bm25"/"vector" -> rank in that ranking
    scores: dict[str, float] = field(default_factory=dict)  # "bm25" (higher is better)/"vector" (cosine)
    chunk_id: int = 0
    page: int | None = None
    section: str = ""
    line_start: int = 0
    line_end: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fts_query(text: str) -> str:
    """The user's words as an FTS5 OR query (each quoted, so no word is read as FTS5 syntax)."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))
    kept = [w for w in words if w not in _STOPWORDS] or words
    return " OR ".join(f'"{w}"' for w in kept)


def bm25_ranking(collection: Collection, query: str, depth: int) -> list[tuple[int, float]]:
    """(chunk id, score) best first, by FTS5's built-in bm25() (negated, so higher is better)."""
    match = fts_query(query)
    if not match:
        return []
    rows = collection.conn.execute(
        "SELECT rowid, bm25(chunks_fts) AS s FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY s LIMIT ?",
        (match, depth)).fetchall()
    return [(int(r[0]), -float(r[1])) for r in rows]


def vector_ranking(collection: Collection, query: str, embedder: Embedder, depth: int) -> list[tuple[int, float]]:
    """(chunk id, cosine similarity) best first, over the chunks that have vectors."""
    collection.check_embedder(embedder)
    ids, matrix = collection.vector_matrix()
    if len(ids) == 0:
        return []
    q = np.asarray(embedder.embed([query])[0], dtype=np.float32)
    sims = np.asarray(matrix @ q)
    top = np.argpartition(-sims, depth - 1)[:depth] if len(sims) > depth else np.arange(len(sims))
    top = top[np.argsort(-sims[top], kind="stable")]
    return [(int(ids[i]), float(sims[i])) for i in top]


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[int]], k: int = RRF_K
) -> list[tuple[int, float, dict[str, int]]]:
    """Fuse ranked id lists: (id, Σ 1/(k + rank), {ranking: rank}) best first; ties keep first-seen order."""
    scores: dict[int, float] = {}
    ranks: dict[int, dict[str, int]] = {}
    for name, ids in rankings.items():
        for rank, item in enumerate(ids, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
            ranks.setdefault(item, {})[name] = rank
    order = sorted(scores, key=lambda i: -scores[i])
    return [(i, scores[i], ranks[i]) for i in order]


def search(
    collection: Collection,
    query: str,
    k: int = 5,
    *,
    embedder: Embedder | None = None,
    mode: str = "auto",
) -> list[Passage]:
    """The ``k`` best passages for ``query``.

    ``mode``: ``bm25`` (terms, no model), ``vector`` (needs ``embedder``), ``hybrid`` (both, fused by
    reciprocal rank), or ``auto``: hybrid when an embedder is given and the collection has vectors, else BM25.
    """
    if mode not in MODES:
        raise HearthError(f"Unknown search mode '{mode}': use one of {', '.join(MODES)}.")
    if k < 1:
        raise HearthError("Ask for at least one passage (k ≥ 1).")
    if not query.strip():
        raise HearthError("The search is empty: type some words to look for.")
    has_vectors = bool(collection.embed_model)
    if mode == "auto":
        mode = "hybrid" if embedder is not None and has_vectors else "bm25"
    if mode in ("vector", "hybrid"):
        if embedder is None:
            raise HearthError(f"A {mode} search needs an embedding model: give one, or search by terms (bm25).")
        if not has_vectors:
            raise HearthError(f"Collection '{collection.name}' has no vectors yet: embed it first "
                              f"('hearth docs embed {collection.name} MODEL').")
    depth = max(FUSION_DEPTH, k) if mode == "hybrid" else k
    lists: dict[str, list[tuple[int, float]]] = {}
    if mode in ("bm25", "hybrid"):
        lists["bm25"] = bm25_ranking(collection, query, depth)
    if mode in ("vector", "hybrid"):
        assert embedder is not None
        lists["vector"] = vector_ranking(collection, query, embedder, depth)
    raw = {name: dict(pairs) for name, pairs in lists.items()}
    if mode == "hybrid":
        fused = reciprocal_rank_fusion({name: [i for i, _ in pairs] for name, pairs in lists.items()})[:k]
    else:
        (name, pairs), = lists.items()
        fused = [(i, s, {name: r}) for r, (i, s) in enumerate(pairs[:k], start=1)]
    rows = collection.chunks([i for i, _, _ in fused])
    passages = []
    for chunk_id, score, ranks in fused:
        row = rows[chunk_id]
        passages.append(Passage(
            text=row["text"], file=row["path"], location=location_of(row), score=score, sources=ranks,
            scores={name: raw[name][chunk_id] for name in ranks}, chunk_id=chunk_id, page=row["page"],
            section=row["section"], line_start=row["line_start"], line_end=row["line_end"],
        ))
    return passages
