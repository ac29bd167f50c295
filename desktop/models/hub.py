"""Hub search results and one repo's quants, for the Discover page."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QAbstractListModel, QModelIndex, Qt
from PySide6.QtGui import QColor, QFont

from core.units import human_count, human_size
from desktop.models.table import ColumnsTableModel, Index

if TYPE_CHECKING:  # core.hub pulls in the HTTP stack: not needed to show the window
    from core.hub import HubModel, QuantGroup, RepoQuants

MODEL_ROLE = Qt.ItemDataRole.UserRole + 1
FIT_ROLE = Qt.ItemDataRole.UserRole + 2

FIT_WORDS = {"full_gpu": "Full GPU", "partial_gpu": "Partial GPU", "cpu": "CPU", "across_machines": "Across machines",
             "too_large": "Too large"}


def fit_kind(group: QuantGroup) -> str | None:
    kind = getattr(group.fit, "kind", None)
    return str(kind) if kind else None


def fit_label(group: QuantGroup) -> str:
    kind = fit_kind(group)
    if kind is None:
        return "Unknown"
    label = FIT_WORDS.get(kind, kind)
    layers = getattr(group.fit, "gpu_layers", None)
    return f"{label} ({layers} layers)" if kind == "partial_gpu" and layers else label


class HubResultsModel(QAbstractListModel):
    def __init__(self) -> None:
        super().__init__()
        self._items: list[HubModel] = []

    def set_results(self, items: list[HubModel]) -> None:
        self.beginResetModel()
        self._items = list(items)
        self.endResetModel()

    def result(self, row: int) -> HubModel:
        return self._items[row]

    def rowCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._items)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        m = self._items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            facts = [x for x in (m.architecture, human_count(m.parameters) if m.parameters else None) if x]
            stats = f"↓ {m.downloads or 0:,}   ♥ {m.likes or 0:,}"
            return f"{m.id}\n{' · '.join([*facts, stats])}"
        if role == MODEL_ROLE:
            return m
        return None


class QuantTableModel(ColumnsTableModel):
    COLUMNS = ("Quant", "Size", "Fit on this machine", "Files")

    def __init__(self) -> None:
        super().__init__()
        self._quants: RepoQuants | None = None
        self.fit_colours: dict[str, str] = {}
        self.highlight = "#fbe9dd"

    def set_quants(self, quants: RepoQuants | None) -> None:
        self.beginResetModel()
        self._quants = quants
        self.endResetModel()

    @property
    def quants(self) -> RepoQuants | None:
        return self._quants

    def group(self, row: int) -> QuantGroup:
        assert self._quants is not None
        return self._quants.groups[row]

    def recommended_row(self) -> int:
        if self._quants is None or self._quants.recommended is None:
            return -1
        return next((i for i, g in enumerate(self._quants.groups) if g.name == self._quants.recommended), -1)

    def row_total(self) -> int:
        return 0 if self._quants is None else len(self._quants.groups)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or self._quants is None:
            return None
        g = self._quants.groups[index.row()]
        col = index.column()
        recommended = g.name == self._quants.recommended
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return f"★ {g.name}  (recommended)" if recommended else g.name
            if col == 1:
                return human_size(g.size)
            if col == 2:
                return f"●  {fit_label(g)}"
            parts = f"{len(g.files)} of {g.parts_expected} parts" if not g.complete else f"{len(g.files)} file(s)"
            return parts
        if role == FIT_ROLE:
            return fit_kind(g)
        if role == Qt.ItemDataRole.ToolTipRole:
            reason = getattr(g.fit, "reason", None) or self._quants.fit_error or ""
            note = f"\nRecommended: {self._quants.reason}" if recommended else ""
            return f"{reason}{note}".strip() or None
        if role == Qt.ItemDataRole.FontRole and recommended:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.BackgroundRole and recommended:
            return QColor(self.highlight)
        if role == Qt.ItemDataRole.ForegroundRole and col == 2:
            colour = self.fit_colours.get(fit_kind(g) or "")
            return QColor(colour) if colour else None
        return None
