"""Document collections for retrieval ("Knowledge"): index files, search them, put passages in a prompt.

``DocsLibrary`` lists, creates, opens and deletes collections; a ``Collection`` adds, refreshes and removes
files and holds their chunks (BM25 through SQLite FTS5, vectors when an ``Embedder`` is given);
``search`` returns ``Passage``s; ``build_context`` numbers them into a prompt within a token budget.
"""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# The names are loaded on first use (PEP 562): ``core.docs.context`` reads a message without numpy, which the
# store, search and vectors import; the window starts without it.
_HOMES = {
    **dict.fromkeys(("DocsTurn", "RetrievedContext", "build_context", "prepare_question", "question_with_context",
                     "retrieval_budget", "source_lines"), "core.docs.context"),
    **dict.fromkeys(("Passage", "reciprocal_rank_fusion", "search"), "core.docs.search"),
    **dict.fromkeys(("Collection", "CollectionInfo", "DocsLibrary", "FileStatus", "IndexReport"), "core.docs.store"),
    **dict.fromkeys(("Embedder", "EmbeddingMismatchError", "EngineEmbedder", "load_embedder"), "core.docs.vectors"),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'core.docs' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value


class _Package(ModuleType):
    """Keeps ``core.docs.search`` the function, as the eager imports did: importing the submodule
    ``core.docs.search`` would otherwise bind the package's ``search`` to that module."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "search" and isinstance(value, ModuleType):
            value = value.search
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


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
