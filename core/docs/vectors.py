"""Embeddings for retrieval: the ``Embedder`` a collection asks for vectors, and one over Hearth's engine.

Vectors are stored as float32 blobs beside their chunks in the collection's SQLite file (so they commit
or roll back with the chunks) and searched as one memory-mapped numpy matrix (``Collection.vector_matrix``).
sqlite-vec was the other candidate: its ``vec0`` tables also search by brute force, and loading it needs
``sqlite3.enable_load_extension``, which this Python's sqlite3 (like several packaged builds) lacks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

import numpy as np

from core.errors import HearthError

if TYPE_CHECKING:
    from core.engine import Engine


class EmbeddingMismatchError(HearthError):
    """The collection's vectors come from another embedding model (or another vector length)."""


class Embedder(Protocol):
    """Turns texts into L2-normalised vectors of a fixed length; ``model_name`` identifies the model."""

    @property
    def model_name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A float32 array of shape (len(texts), dim), rows of unit length."""
        ...


class EngineEmbedder:
    """An ``Embedder`` over an ``Engine`` loaded with ``LoadOptions(embedding=True)``."""

    def __init__(self, engine: Engine, model_name: str) -> None:
        status = engine.status
        if status is None or not status.embedding:
            raise HearthError("The embedding model is not loaded for embeddings: load it with embedding=True.")
        self.engine = engine
        self._model_name = model_name
        self._dim = int(status.n_embd)

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.engine.embed([self._fitting(text) for text in texts]).vectors
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self._dim)

    def _fitting(self, text: str) -> str:
        """The text, or as many of its first words as the model embeds at once (the start stands for a chunk).

        The limit is the smaller of the context and the training context: llama.cpp pads a small context
        up (to 256), past the position embeddings of a model trained on fewer tokens.
        """
        status = self.engine.status
        limit = min(status.n_ctx, status.n_ctx_train or status.n_ctx) if status else 0
        words = text.split()
        while limit and len(words) > 1:
            n_tokens = len(self.engine.tokenize(" ".join(words), add_bos=True))
            if n_tokens <= limit:
                break
            words = words[: max(1, min(len(words) - 1, int(len(words) * limit / n_tokens * 0.95)))]
        return " ".join(words) if len(words) != len(text.split()) else text


@contextmanager
def load_embedder(model: str) -> Iterator[EngineEmbedder]:
    """Load a library model (name or .gguf path) for embeddings in its own engine, for the ``with`` block."""
    from core.engine import Engine, LoadOptions
    from core.library import Library

    entry = Library().get(model)
    with Engine() as engine:
        engine.load(entry.path, LoadOptions(embedding=True, n_ctx=0))
        yield EngineEmbedder(engine, entry.name)


def to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def mismatch_message(collection: str, stored_model: str, stored_dim: int, model: str, dim: int) -> str:
    what = f"{dim}-long vectors" if dim != stored_dim else "different vectors"
    return (
        f"Collection '{collection}' holds {stored_dim}-long vectors from '{stored_model}', and '{model}' makes "
        f"{what}: search with '{stored_model}', or re-embed the collection with "
        f"'hearth docs embed {collection} {model} --replace'."
    )
