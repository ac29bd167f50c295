"""Document collections for retrieval ("Knowledge"): index files, search them, put passages in a prompt.

``DocsLibrary`` lists, creates, opens and deletes collections; a ``Collection`` adds, refreshes and removes
files and holds their chunks (BM25 through SQLite FTS5, vectors when an ``Embedder`` is given);
``search`` returns ``Passage``s; ``build_context`` numbers them into a prompt within a token budget.
"""

from __future__ import annotations

from core.docs.context import (
    DocsTurn,
    RetrievedContext,
    build_context,
    prepare_question,
    question_with_context,
    retrieval_budget,
    source_lines,
)
from core.docs.search import Passage, reciprocal_rank_fusion, search
from core.docs.store import Collection, CollectionInfo, DocsLibrary, FileStatus, IndexReport
from core.docs.vectors import Embedder, EmbeddingMismatchError, EngineEmbedder, load_embedder

__all__ = [
    "Collection",
    "CollectionInfo",
    "DocsLibrary",
    "DocsTurn",
    "Embedder",
    "EmbeddingMismatchError",
    "EngineEmbedder",
    "FileStatus",
    "IndexReport",
    "Passage",
    "RetrievedContext",
    "build_context",
    "load_embedder",
    "prepare_question",
    "question_with_context",
    "reciprocal_rank_fusion",
    "retrieval_budget",
    "search",
    "source_lines",
]
