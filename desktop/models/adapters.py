"""Trained adapters as a table: one row per ``core.finetune.adapters.AdapterEntry``, with its base model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor

from core.finetune.adapters import AdapterEntry, find_base
from core.library import ModelEntry
from core.units import human_size
from desktop.models.table import ColumnsTableModel, Index

ADAPTER_ROLE = Qt.ItemDataRole.UserRole + 1


@dataclass(frozen=True)
class AdapterRow:
    """An adapter, the library model it was trained on (None: not in the library) and its size on disk."""

    entry: AdapterEntry
    base: ModelEntry | None
    size_bytes: int

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def base_name(self) -> str:
        return self.entry.base or "?"


def data_summary(manifest: dict[str, Any]) -> str:
    data = manifest.get("data") or {}
    documents = data.get("documents") or []
    if documents:
        return f"{len(documents)} document{'s' if len(documents) != 1 else ''}"
    if data.get("data"):
        return str(data["data"]).replace("\\", "/").rsplit("/", 1)[-1]
    return "-"


def score_summary(manifest: dict[str, Any]) -> str:
    """The knowledge check ("3 → 9 of 12") when there is one, else the held-out loss before → after."""
    metrics = manifest.get("metrics") or {}
    knowledge = metrics.get("knowledge")
    if isinstance(knowledge, dict) and knowledge.get("total"):
        return f"{knowledge.get('before', 0)} → {knowledge.get('after', 0)} of {knowledge['total']}"
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    if "eval_loss" in before and "eval_loss" in after:
        return f"loss {before['eval_loss']:.2f} → {after['eval_loss']:.2f}"
    return "-"


def created_text(manifest: dict[str, Any]) -> str:
    created = manifest.get("created_at")
    return time.strftime("%Y-%m-%d", time.localtime(float(created))) if created else "-"



class AdapterTableModel(ColumnsTableModel):
    """The Adapters tab's table; ``set_library`` re-matches every adapter with its base model."""

    COLUMNS = ("Name", "Base model", "Method", "Data", "Created", "Size", "Knowledge check")

    def __init__(self) -> None:
        super().__init__()
        self._adapters: list[tuple[AdapterEntry, int]] = []
        self._models: list[ModelEntry] = []
        self._rows: list[AdapterRow] = []

    def set_adapters(self, adapters: list[tuple[AdapterEntry, int]]) -> None:
        """Adapters with their size on disk in bytes (measured off the GUI thread)."""
        self._adapters = list(adapters)
        self._rebuild()

    def set_library(self, models: list[ModelEntry]) -> None:
        self._models = list(models)
        self._rebuild()

    def _rebuild(self) -> None:
        self.beginResetModel()
        self._rows = [AdapterRow(e, find_base(e, self._models), size) for e, size in self._adapters]
        self.endResetModel()

    def rows(self) -> list[AdapterRow]:
        return list(self._rows)

    def row(self, index: int) -> AdapterRow:
        return self._rows[index]

    def row_of(self, name: str) -> int:
        return next((i for i, r in enumerate(self._rows) if r.name == name), -1)

    def row_total(self) -> int:
        return len(self._rows)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        r = self._rows[index.row()]
        column = index.column()
        if role == ADAPTER_ROLE:
            return r
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(r, column)
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == 1 and r.base is None:
                return f"Base model missing: {r.base_name} is not in the library. Select the adapter to locate it."
            return str(r.entry.path) if column == 0 else None
        if role == Qt.ItemDataRole.ForegroundRole and column == 1 and r.base is None:
            return QColor("#c0392b")
        if role == Qt.ItemDataRole.TextAlignmentRole and column == 5:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    @staticmethod
    def _display(r: AdapterRow, column: int) -> str:
        m = r.entry.manifest
        if column == 0:
            return r.name
        if column == 1:
            return r.base_name if r.base is not None else f"⚠ missing: {r.base_name}"
        if column == 2:
            return r.entry.method or "-"
        if column == 3:
            return data_summary(m)
        if column == 4:
            return created_text(m)
        if column == 5:
            return human_size(r.size_bytes)
        return score_summary(m)
