"""Document collections on disk: one folder per collection under ``<data>/docs``, one SQLite file each.

One file per collection (rather than one database beside the chats): deleting a collection is removing
a folder, a long indexing run locks only its own collection, and its derived vector matrix sits beside
it. Each change (add, refresh, remove, embed) is one SQLite transaction: a crash or a cancel rolls it
back, so a collection in use is always a committed state. A new collection is built in a hidden
folder and renamed into place; a deleted one is renamed away first, then removed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.docs.chunking import CHUNK_WORDS, OVERLAP_WORDS, TextChunk, chunk_pages, read_pages
from core.docs.names import DB_NAME, collection_names, docs_root
from core.docs.vectors import Embedder, EmbeddingMismatchError, mismatch_message, to_blob
from core.errors import AlreadyExistsError, CancelledError, DatasetError, HearthError, NotFoundError
from core.events import CancelToken, Progress
from core.finetune.data.documents import MIN_CHARS, SUFFIXES, find_files

SCHEMA_VERSION = 1
EMBED_BATCH = 16
LOCK_WAIT_S = 30.0  # how long a change waits for another process's change to the same collection
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# A progress callback may return False to cancel (None or True: go on).
IndexProgress = Callable[[Progress], bool | None]
Cancel = CancelToken | threading.Event

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE files (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL DEFAULT 0, mtime REAL NOT NULL DEFAULT 0, sha256 TEXT NOT NULL DEFAULT '',
    pages INTEGER NOT NULL DEFAULT 0, chunks INTEGER NOT NULL DEFAULT 0, words INTEGER NOT NULL DEFAULT 0,
    indexed_at REAL NOT NULL DEFAULT 0
);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL REFERENCES files(id), ordinal INTEGER NOT NULL,
    text TEXT NOT NULL, page INTEGER, section TEXT NOT NULL DEFAULT '', line_start INTEGER NOT NULL,
    line_end INTEGER NOT NULL, n_words INTEGER NOT NULL, vector BLOB
);
CREATE INDEX chunks_file ON chunks(file_id);
-- BM25 over the chunks' text (FTS5 external content; the triggers keep it in step).
-- https://www.sqlite.org/fts5.html#external_content_tables
CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content='chunks', content_rowid='id',
                                           tokenize='porter unicode61 remove_diacritics 2');
CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
"""


@dataclass(frozen=True)
class FileStatus:
    """One file of a collection: ``indexed``, ``skipped`` (with the reason) or ``missing`` (gone from disk)."""

    path: str
    status: str
    reason: str = ""
    size: int = 0
    mtime: float = 0.0
    sha256: str = ""
    pages: int = 0
    chunks: int = 0
    words: int = 0
    indexed_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    folder: str
    files: int
    indexed: int
    skipped: int
    missing: int
    chunks: int
    words: int
    vectors: int
    embed_model: str
    embed_dim: int
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IndexReport:
    """What one ``add`` or ``refresh`` did; ``skipped`` and ``missing`` carry the reasons."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[FileStatus] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    chunks: int = 0  # chunks written
    words: int = 0
    embedded: int = 0  # chunks given vectors
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.missing or self.embedded
                    or any(s.reason for s in self.skipped))

    def counts(self, *, unchanged: bool = True, chunks_word: str = "chunks") -> list[str]:
        """What changed, in words ("2 added", "1 re-indexed", …); ``unchanged`` counts those too."""
        parts = []
        for count, what in ((len(self.added), "added"), (len(self.updated), "re-indexed"),
                            (len(self.unchanged) if unchanged else 0, "unchanged"),
                            (len([s for s in self.skipped if unchanged or s.reason]), "skipped"),
                            (len(self.missing), "gone from disk"), (self.embedded, f"{chunks_word} embedded")):
            if count:
                parts.append(f"{count} {what}")
        return parts

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["skipped"] = [s.to_dict() for s in self.skipped]
        return data


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise HearthError(
            f"'{name}' cannot name a collection: use letters, digits, '.', '_' or '-' (up to 64, no leading dot)."
        )
    return name


class DocsLibrary:
    """The user's document collections: list, create, open, delete."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or docs_root()

    def names(self) -> list[str]:
        return collection_names(self.root)

    def list(self) -> list[CollectionInfo]:
        infos = []
        for name in self.names():
            with self.open(name) as collection:
                infos.append(collection.info())
        return infos

    def exists(self, name: str) -> bool:
        return (self.root / check_name(name) / DB_NAME).is_file()

    def create(self, name: str) -> Collection:
        """A new, empty collection (built in a hidden folder, then renamed into place)."""
        if self.exists(name):
            raise AlreadyExistsError(f"A collection '{name}' exists already: add files to it, or pick another name.")
        self.root.mkdir(parents=True, exist_ok=True)
        self._sweep()
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.new-", dir=self.root))
        conn = sqlite3.connect(tmp / DB_NAME)
        try:
            conn.executescript(_SCHEMA)
            now = str(time.time())
            conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [
                ("schema", str(SCHEMA_VERSION)), ("name", name), ("created_at", now), ("updated_at", now),
                ("generation", "0"), ("chunk_words", str(CHUNK_WORDS)), ("overlap_words", str(OVERLAP_WORDS)),
                ("embed_model", ""), ("embed_dim", "0"),
            ])
            conn.commit()
        finally:
            conn.close()
        try:
            os.rename(tmp, self.root / name)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise AlreadyExistsError(f"A collection '{name}' was created meanwhile: add files to it.") from exc
        return self.open(name)

    def open(self, name: str) -> Collection:
        if not self.exists(name):
            known = ", ".join(self.names()) or "none yet"
            raise NotFoundError(f"No collection '{name}' (collections: {known}); create it with 'hearth docs add'.")
        return Collection(name, self.root / name)

    def delete(self, name: str) -> None:
        if not self.exists(name):
            raise NotFoundError(f"No collection '{name}': 'hearth docs list' shows them.")
        # Renamed away first, so a crash mid-removal never leaves a half-deleted collection visible.
        gone = self.root / f".{name}.deleted-{os.getpid()}-{time.time_ns()}"
        os.rename(self.root / name, gone)
        shutil.rmtree(gone, ignore_errors=True)

    def _sweep(self) -> None:
        """Remove what a crash left: half-built or half-deleted hidden folders."""
        for p in self.root.iterdir():
            stale = time.time() - p.stat().st_mtime > 3600  # not one that another process is building now
            if p.name.startswith(".") and (".new-" in p.name or ".deleted-" in p.name) and stale:
                shutil.rmtree(p, ignore_errors=True)


class Collection:
    """One open collection. Not shared between threads: open one per thread (SQLite allows many readers)."""

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        self.folder = folder
        self.conn = sqlite3.connect(folder / DB_NAME, isolation_level=None, timeout=LOCK_WAIT_S)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        schema = int(self.meta("schema") or 0)
        if schema != SCHEMA_VERSION:
            self.conn.close()
            raise HearthError(f"Collection '{name}' was made by another version of Hearth (schema {schema}): "
                              f"delete it with 'hearth docs rm {name}' and add its files again.")

    # -- plumbing --------------------------------------------------------------------------------
    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def meta(self, key: str) -> str:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else ""

    def _set_meta(self, key: str, value: object) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, str(value)))

    def set_note(self, key: str, value: str) -> None:
        """Record a note of the collection's own (e.g. ``made_by``: the adapter whose job built it); ``meta`` reads it."""
        if key in ("schema", "name", "generation", "embed_model", "embed_dim", "created_at", "updated_at"):
            raise ValueError(f"'{key}' is kept by the collection itself")
        self._set_meta(key, value)

    @property
    def generation(self) -> int:
        """Counts committed changes to the chunks; derived files (the vector matrix) are named by it."""
        return int(self.meta("generation") or 0)

    @property
    def embed_model(self) -> str:
        return self.meta("embed_model")

    @property
    def embed_dim(self) -> int:
        return int(self.meta("embed_dim") or 0)

    def _transaction(self, work: Callable[[], None]) -> None:
        """Run ``work`` in one write transaction; anything raised (a cancel too) rolls all of it back."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            raise HearthError(f"Collection '{self.name}' is being changed by another Hearth (the window or a "
                              "command): try again when that finishes.") from exc
        try:
            work()
            self._set_meta("generation", self.generation + 1)
            self._set_meta("updated_at", time.time())
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    # -- reading ---------------------------------------------------------------------------------
    def info(self) -> CollectionInfo:
        counts = dict(self.conn.execute("SELECT status, COUNT(*) FROM files GROUP BY status").fetchall())
        chunks, words, vectors = self.conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(n_words), 0), COUNT(vector) FROM chunks").fetchone()
        return CollectionInfo(
            name=self.name, folder=str(self.folder), files=sum(counts.values()),
            indexed=counts.get("indexed", 0), skipped=counts.get("skipped", 0), missing=counts.get("missing", 0),
            chunks=chunks, words=words, vectors=vectors, embed_model=self.embed_model, embed_dim=self.embed_dim,
            created_at=float(self.meta("created_at") or 0), updated_at=float(self.meta("updated_at") or 0),
        )

    def files(self) -> list[FileStatus]:
        rows = self.conn.execute("SELECT * FROM files ORDER BY path").fetchall()
        return [_file_status(r) for r in rows]

    def chunks(self, ids: Sequence[int]) -> dict[int, sqlite3.Row]:
        """The chunks with these ids, with their file's path and page count."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(
            f"SELECT c.*, f.path AS path, f.pages AS pages FROM chunks c JOIN files f ON f.id = c.file_id "
            f"WHERE c.id IN ({marks})", list(ids)).fetchall()
        return {int(r["id"]): r for r in rows}

    # -- changing --------------------------------------------------------------------------------
    def add(
        self,
        paths: Sequence[str | Path],
        *,
        embedder: Embedder | None = None,
        progress: IndexProgress | None = None,
        cancel: Cancel | None = None,
    ) -> IndexReport:
        """Index these files and folders (new, or changed since last time); all or nothing.

        ``progress`` returning False, or ``cancel`` set, stops it with ``CancelledError`` and nothing
        changed. Unreadable, empty or image-only files are recorded as skipped with the reason.
        """
        files = [p.resolve() for p in find_files(paths)]
        return self._index(files, embedder, progress, cancel)

    def refresh(
        self,
        *,
        embedder: Embedder | None = None,
        progress: IndexProgress | None = None,
        cancel: Cancel | None = None,
    ) -> IndexReport:
        """Re-index the files changed on disk since they were indexed (size, mtime, then sha256), mark gone ones."""
        rows = self.conn.execute("SELECT path, size, mtime, status FROM files").fetchall()
        stale: list[Path] = []
        missing: list[str] = []
        for row in rows:
            path = Path(row["path"])
            try:
                st = path.stat()
            except OSError:
                if row["status"] != "missing":
                    missing.append(str(path))
                continue
            if row["status"] == "missing" or st.st_size != row["size"] or st.st_mtime != row["mtime"]:
                stale.append(path)
        if not stale and not missing:
            return IndexReport()
        return self._index(stale, embedder, progress, cancel, missing=missing)

    def remove(self, paths: Sequence[str | Path]) -> list[str]:
        """Take these files (or every file under these folders) out of the collection; returns their paths."""
        targets = [str(Path(p).expanduser().resolve()) for p in paths]
        rows = self.conn.execute("SELECT id, path FROM files").fetchall()
        doomed = [(r["id"], r["path"]) for r in rows
                  if any(r["path"] == t or r["path"].startswith(t.rstrip(os.sep) + os.sep) for t in targets)]
        if not doomed:
            raise NotFoundError(f"None of {', '.join(targets)} is in collection '{self.name}': "
                                f"'hearth docs show {self.name}' lists its files.")

        def work() -> None:
            for file_id, _ in doomed:
                self.conn.execute("DELETE FROM chunks WHERE file_id = ?", (file_id,))
                self.conn.execute("DELETE FROM files WHERE id = ?", (file_id,))

        self._transaction(work)
        return [p for _, p in doomed]

    def embed(
        self,
        embedder: Embedder,
        *,
        replace: bool = False,
        progress: IndexProgress | None = None,
        cancel: Cancel | None = None,
    ) -> int:
        """Give every chunk without a vector one (all chunks with ``replace``, e.g. for another model).

        Returns how many chunks were embedded. A model other than the collection's raises
        ``EmbeddingMismatchError`` unless ``replace``.
        """
        count = 0

        def work() -> None:
            nonlocal count
            if replace:
                self.conn.execute("UPDATE chunks SET vector = NULL")
                self._set_meta("embed_model", "")
                self._set_meta("embed_dim", 0)
            count = self._embed_missing(embedder, progress, cancel)

        self._transaction(work)
        return count

    def check_embedder(self, embedder: Embedder) -> None:
        """``EmbeddingMismatchError`` when the collection's vectors come from another model."""
        model, dim = self.embed_model, self.embed_dim
        if model and (model != embedder.model_name or dim != embedder.dim):
            raise EmbeddingMismatchError(mismatch_message(self.name, model, dim, embedder.model_name, embedder.dim))

    # -- vectors ---------------------------------------------------------------------------------
    def vector_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, unit vectors as rows) for the chunks that have vectors, memory-mapped from a cache file.

        The cache is derived from the SQLite file and named by the generation, so it is never stale.
        """
        gen = self.generation
        ids_path = self.folder / f"vectors-{gen}.ids.npy"
        mat_path = self.folder / f"vectors-{gen}.npy"
        if not (ids_path.is_file() and mat_path.is_file()):
            rows = self.conn.execute("SELECT id, vector FROM chunks WHERE vector IS NOT NULL ORDER BY id").fetchall()
            ids = np.asarray([r[0] for r in rows], dtype=np.int64)
            dim = self.embed_dim
            matrix = (np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
                      if rows else np.zeros((0, dim), dtype=np.float32))
            for old in self.folder.glob("vectors-*.npy"):
                old.unlink(missing_ok=True)
            _save_atomic(mat_path, matrix)
            _save_atomic(ids_path, ids)  # written last: its presence says the pair is whole
        return np.load(ids_path), np.load(mat_path, mmap_mode="r")

    # -- indexing --------------------------------------------------------------------------------
    def _index(
        self,
        files: Sequence[Path],
        embedder: Embedder | None,
        progress: IndexProgress | None,
        cancel: Cancel | None,
        missing: Iterable[str] = (),
    ) -> IndexReport:
        started = time.perf_counter()
        report = IndexReport()
        if embedder is not None:
            self.check_embedder(embedder)
        known = {r["path"]: r for r in self.conn.execute("SELECT * FROM files").fetchall()}

        def work() -> None:
            for gone in missing:
                self._mark_missing(known[gone]["id"])
                report.missing.append(gone)
            for done, path in enumerate(files):
                _check_cancel(progress, cancel, Progress("index", done, len(files), path.name))
                self._index_file(path, known.get(str(path)), report)
            _check_cancel(progress, cancel, Progress("index", len(files), len(files), ""))
            if embedder is not None:
                report.embedded = self._embed_missing(embedder, progress, cancel)

        self._transaction(work)
        report.seconds = time.perf_counter() - started
        return report

    def _index_file(self, path: Path, known: sqlite3.Row | None, report: IndexReport) -> None:
        key = str(path)

        def skip(reason: str, **fields: Any) -> None:
            status = FileStatus(key, "skipped", reason, indexed_at=time.time(), **fields)
            self._write_file(known, status, [])
            report.skipped.append(status)

        try:
            before = path.stat()
            if path.suffix.lower() not in SUFFIXES:
                return skip(f"unsupported type '{path.suffix or 'none'}' (use {', '.join(SUFFIXES)})",
                            size=before.st_size, mtime=before.st_mtime)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            return skip("was deleted before it could be read")
        except OSError as exc:
            return skip(f"cannot be read ({exc.strerror or exc})")
        sizes = {"size": before.st_size, "mtime": before.st_mtime, "sha256": digest}
        if known is not None and known["sha256"] == digest and known["status"] == "indexed":
            self.conn.execute("UPDATE files SET size = ?, mtime = ? WHERE id = ?",
                              (before.st_size, before.st_mtime, known["id"]))
            report.unchanged.append(key)
            return None
        if before.st_size == 0:
            return skip("is empty", **sizes)
        try:
            pages = read_pages(path)
        except DatasetError as exc:
            if not path.exists():
                return skip("was deleted while it was being indexed")
            return skip(str(exc), **sizes)
        chunks = chunk_pages(pages, markdown=path.suffix.lower() in (".md", ".markdown"))
        if sum(len(c.text) for c in chunks) < MIN_CHARS:
            return skip("no text (empty, or a scanned image without a text layer)", pages=len(pages), **sizes)
        try:
            after = path.stat()
        except FileNotFoundError:
            return skip("was deleted while it was being indexed")
        reason = ""
        if (after.st_size, after.st_mtime) != (before.st_size, before.st_mtime):
            # Indexed as read; a recorded mtime of 0 makes the next refresh read it again.
            reason = "changed while it was being indexed: indexed as read, re-read on the next refresh"
            sizes["mtime"], sizes["sha256"] = 0.0, ""
        words = sum(c.n_words for c in chunks)
        status = FileStatus(key, "indexed", reason, pages=len(pages), chunks=len(chunks), words=words,
                            indexed_at=time.time(), **sizes)  # type: ignore[arg-type]
        self._write_file(known, status, chunks)
        (report.updated if known is not None else report.added).append(key)
        report.chunks += len(chunks)
        report.words += words
        return None

    def _write_file(self, known: sqlite3.Row | None, status: FileStatus, chunks: Sequence[TextChunk]) -> None:
        values = (status.status, status.reason, status.size, status.mtime, status.sha256, status.pages,
                  status.chunks, status.words, status.indexed_at)
        if known is None:
            cur = self.conn.execute(
                "INSERT INTO files(status, reason, size, mtime, sha256, pages, chunks, words, indexed_at, path) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (*values, status.path))
            file_id = int(cur.lastrowid or 0)
        else:
            file_id = int(known["id"])
            self.conn.execute("DELETE FROM chunks WHERE file_id = ?", (file_id,))
            self.conn.execute(
                "UPDATE files SET status = ?, reason = ?, size = ?, mtime = ?, sha256 = ?, pages = ?, chunks = ?, "
                "words = ?, indexed_at = ? WHERE id = ?", (*values, file_id))
        self.conn.executemany(
            "INSERT INTO chunks(file_id, ordinal, text, page, section, line_start, line_end, n_words) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(file_id, c.ordinal, c.text, c.page, c.section, c.line_start, c.line_end, c.n_words) for c in chunks])

    def _mark_missing(self, file_id: int) -> None:
        self.conn.execute("DELETE FROM chunks WHERE file_id = ?", (file_id,))
        self.conn.execute("UPDATE files SET status = 'missing', reason = ?, chunks = 0, words = 0 WHERE id = ?",
                          ("the file is gone (moved or deleted): add it again, or remove it", file_id))

    def _embed_missing(self, embedder: Embedder, progress: IndexProgress | None, cancel: Cancel | None) -> int:
        self.check_embedder(embedder)
        rows = self.conn.execute("SELECT id, text FROM chunks WHERE vector IS NULL ORDER BY id").fetchall()
        for start in range(0, len(rows), EMBED_BATCH):
            _check_cancel(progress, cancel, Progress("embed", start, len(rows), ""))
            batch = rows[start : start + EMBED_BATCH]
            vectors = embedder.embed([r["text"] for r in batch])
            self.conn.executemany("UPDATE chunks SET vector = ? WHERE id = ?",
                                  [(to_blob(v), r["id"]) for v, r in zip(vectors, batch, strict=True)])
        if rows:
            self._set_meta("embed_model", embedder.model_name)
            self._set_meta("embed_dim", embedder.dim)
        return len(rows)


def _check_cancel(progress: IndexProgress | None, cancel: Cancel | None, report: Progress) -> None:
    wants_stop = progress is not None and progress(report) is False
    if cancel is not None:
        wants_stop = wants_stop or (cancel.cancelled if isinstance(cancel, CancelToken) else cancel.is_set())
    if wants_stop:
        raise CancelledError("Indexing was cancelled; the collection is as it was before.")


def _file_status(row: sqlite3.Row) -> FileStatus:
    return FileStatus(path=row["path"], status=row["status"], reason=row["reason"], size=row["size"],
                      mtime=row["mtime"], sha256=row["sha256"], pages=row["pages"], chunks=row["chunks"],
                      words=row["words"], indexed_at=row["indexed_at"])


def _save_atomic(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def location_of(row: sqlite3.Row) -> str:
    """The human location of a chunk row joined with its file (``Collection.chunks``)."""
    chunk = TextChunk(ordinal=row["ordinal"], text="", page=row["page"], section=row["section"],
                      line_start=row["line_start"], line_end=row["line_end"], n_words=row["n_words"])
    return chunk.location(int(row["pages"] or 1))
