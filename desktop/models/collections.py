"""Table models for the Knowledge page: the collections, one collection's files, and search results."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

from PySide6.QtCore import QModelIndex, Qt

from core.docs import CollectionInfo, FileStatus, Passage
from desktop.models.table import ColumnsTableModel, Index

STATUS_WORDS = {"indexed": "Indexed", "skipped": "Skipped", "missing": "Missing"}


def ago(stamp: float, now: float | None = None) -> str:
    """"just now", "5 min ago", "3 h ago", or the date for older stamps."""
    if not stamp:
        return "—"
    seconds = max(0.0, (now or time.time()) - stamp)
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return time.strftime("%Y-%m-%d", time.localtime(stamp))


def retrieval_words(info: CollectionInfo) -> str:
    """How the collection is searched: by keywords only, or keywords and the embedding model's vectors."""
    return f"keywords + {info.embed_model}" if info.embed_model else "keywords only"


class CollectionsTableModel(ColumnsTableModel):
    COLUMNS: ClassVar[tuple[str, ...]] = ("Collection", "Files", "Chunks", "Search", "Updated")

    def __init__(self) -> None:
        super().__init__()
        self.infos: list[CollectionInfo] = []

    def set_infos(self, infos: list[CollectionInfo]) -> None:
        self.beginResetModel()
        self.infos = list(infos)
        self.endResetModel()

    def row_total(self) -> int:
        return len(self.infos)

    def row_of(self, name: str) -> int:
        return next((i for i, info in enumerate(self.infos) if info.name == name), -1)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        info = self.infos[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return info.name
            if col == 1:
                return f"{info.indexed}" + (f" · {info.skipped} skipped" if info.skipped else "")
            if col == 2:
                return f"{info.chunks:,}"
            if col == 3:
                return retrieval_words(info)
            return ago(info.updated_at)
        if role == Qt.ItemDataRole.ToolTipRole:
            return info.folder
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (1, 2):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class FilesTableModel(ColumnsTableModel):
    COLUMNS: ClassVar[tuple[str, ...]] = ("File", "Status", "Chunks", "Note")

    def __init__(self) -> None:
        super().__init__()
        self.files: list[FileStatus] = []
        self.colors: dict[str, str] = {}

    def set_files(self, files: list[FileStatus]) -> None:
        self.beginResetModel()
        self.files = list(files)
        self.endResetModel()

    def set_colors(self, ok: str, warn: str, danger: str) -> None:
        self.colors = {"indexed": ok, "skipped": warn, "missing": danger}
        if self.files:
            self.dataChanged.emit(self.index(0, 1), self.index(len(self.files) - 1, 1))

    def row_total(self) -> int:
        return len(self.files)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        f = self.files[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return Path(f.path).name
            if col == 1:
                return STATUS_WORDS.get(f.status, f.status)
            if col == 2:
                return f"{f.chunks:,}" if f.status == "indexed" else ""
            if f.status == "indexed":
                pages = f"{f.pages} pages · " if f.pages > 1 else ""
                return f"{pages}{f.words:,} words"
            if f.status == "missing":
                return "gone from disk since it was indexed"
            return f.reason
        if role == Qt.ItemDataRole.ToolTipRole:
            return f.path if f.status != "skipped" else f"{f.path}\n{f.reason}"
        if role == Qt.ItemDataRole.ForegroundRole and col == 1 and f.status in self.colors:
            from PySide6.QtGui import QColor

            return QColor(self.colors[f.status])
        if role == Qt.ItemDataRole.TextAlignmentRole and col == 2:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def path_at(self, index: QModelIndex) -> str:
        return self.files[index.row()].path


class PassagesTableModel(ColumnsTableModel):
    COLUMNS: ClassVar[tuple[str, ...]] = ("#", "Passage", "File", "Where", "Score")

    def __init__(self) -> None:
        super().__init__()
        self.passages: list[Passage] = []

    def set_passages(self, passages: list[Passage]) -> None:
        self.beginResetModel()
        self.passages = list(passages)
        self.endResetModel()

    def row_total(self) -> int:
        return len(self.passages)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        p = self.passages[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return str(index.row() + 1)
            if col == 1:
                text = " ".join(p.text.split())
                return text if len(text) <= 160 else text[:159].rstrip() + "…"
            if col == 2:
                return Path(p.file).name
            if col == 3:
                return p.location
            return score_text(p)
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{p.file}\n{p.location}\n\n{p.text[:800]}"
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (0, 4):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


def score_text(p: Passage) -> str:
    """The score as the ranking gives it: BM25 alone, cosine alone, or the fused rank score."""
    if set(p.sources) == {"bm25"}:
        return f"{p.score:.2f}"
    if set(p.sources) == {"vector"}:
        return f"cos {p.score:.2f}"
    return f"{p.score:.4f}"
