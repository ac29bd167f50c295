"""Discover: search the Hub, see a model's quants with a fit badge for this machine, download one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QModelIndex, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListView,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from core.units import human_count, human_size
from desktop.models.hub import MODEL_ROLE, HubResultsModel, QuantTableModel
from desktop.ops import Executor, Op, error_text
from desktop.theme import Palette
from desktop.views.widgets import Banner, button, muted, page, title

if TYPE_CHECKING:
    from core.hub import HubModel, QuantGroup, RepoQuants
    from core.hub.pull import PullPlan
    from core.hub.search import SortKey


class DiscoverPage(QWidget):
    download_requested = Signal(str, object)  # repo id, QuantGroup

    def __init__(self, pool: Executor, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.pool = pool
        body, layout = page()
        outer = QHBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(body)
        layout.addWidget(title("Discover"))
        layout.addWidget(muted("Find GGUF models on the Hugging Face Hub. Each file is checked against this machine."))
        layout.addWidget(self._writer_card())
        bar = QHBoxLayout()
        self.query = QLineEdit()
        self.query.setPlaceholderText("Search models, e.g. qwen, llama, gemma…")
        self.query.returnPressed.connect(self.search)
        self.sort = QComboBox()
        self.sort.addItem("Most downloaded", "downloads")
        self.sort.addItem("Most liked", "likes")
        self.sort.addItem("Recently updated", "modified")
        self.search_button = button("Search", self.search, kind="primary")
        bar.addWidget(self.query, 1)
        bar.addWidget(self.sort)
        bar.addWidget(self.search_button)
        layout.addLayout(bar)
        self.banner = Banner()
        layout.addWidget(self.banner)

        self.results = HubResultsModel()
        self.results_view = QListView()
        self.results_view.setObjectName("hubResults")
        self.results_view.setModel(self.results)
        self.results_view.setSpacing(2)
        self.results_view.setAlternatingRowColors(True)
        self.results_view.clicked.connect(self._picked)
        self.results_view.activated.connect(self._picked)

        detail = QWidget()
        col = QVBoxLayout(detail)
        col.setContentsMargins(12, 0, 0, 0)
        self.repo_title = title("Pick a model", "sectionTitle")
        self.repo_facts = muted("")
        self.quants = QuantTableModel()
        self.quant_view = QTableView()
        self.quant_view.setModel(self.quants)
        self.quant_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.quant_view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.quant_view.verticalHeader().hide()
        self.quant_view.setShowGrid(False)
        self.quant_view.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in (1, 2, 3):
            self.quant_view.horizontalHeader().setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.quant_view.verticalHeader().setDefaultSectionSize(34)
        self.quant_view.doubleClicked.connect(lambda _i: self.download())
        self.reason = muted("")
        # The repo's vision projectors: a badge and the one that comes with the selected quant.
        self.vision_row = QWidget()
        vision = QHBoxLayout(self.vision_row)
        vision.setContentsMargins(0, 2, 0, 2)
        vision.setSpacing(8)
        self.vision_badge = QLabel("Reads images")
        self.vision_badge.setObjectName("badge")
        self.vision_badge.setToolTip("This repository has a vision projector (mmproj): its models can read images in chat")
        self.vision_text = muted("")
        vision.addWidget(self.vision_badge, 0)
        vision.addWidget(self.vision_text, 1)
        self.vision_row.hide()
        self.download_button = button("Download", self.download, kind="primary")
        self.download_button.setEnabled(False)
        col.addWidget(self.repo_title)
        col.addWidget(self.repo_facts)
        col.addWidget(self.quant_view, 1)
        col.addWidget(self.vision_row)
        col.addWidget(self.reason)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.download_button)
        col.addLayout(row)
        self.quant_view.selectionModel().selectionChanged.connect(lambda *_: self._selection_changed())

        split = QSplitter()
        split.addWidget(self.results_view)
        split.addWidget(detail)
        split.setSizes([360, 560])
        layout.addWidget(split, 1)
        self._searched = False

    def _writer_card(self) -> QFrame:
        """The writer recommended for this machine (``core.hub.writer``), downloaded in one click."""
        from core.hub.writer import recommend_writer

        self.writer = recommend_writer()
        card = QFrame()
        card.setObjectName("card")
        row = QHBoxLayout(card)
        row.setContentsMargins(14, 10, 14, 10)
        row.setSpacing(10)
        self.writer_badge = QLabel("Writer for teaching documents")
        self.writer_badge.setObjectName("badge")
        text = QVBoxLayout()
        text.setSpacing(2)
        self.writer_title = QLabel(f"<b>{self.writer.title}</b> · {self.writer.quant} · {human_size(self.writer.size_bytes)}")
        text.addWidget(self.writer_title)
        text.addWidget(muted("Fine-tune can use it to rewrite your documents' facts in other words. Picked for this "
                             "machine's memory."))
        self.writer_button = button("Download", self.download_writer,
                                    tip=f"{self.writer.repo_id}: {self.writer.filename}")
        row.addWidget(self.writer_badge, 0, Qt.AlignmentFlag.AlignVCenter)
        row.addLayout(text, 1)
        row.addWidget(self.writer_button, 0)
        return card

    def download_writer(self) -> None:
        from core.hub import plan_pull

        name = self.writer.pull_name
        self.writer_button.setEnabled(False)
        self.banner.hide()

        def planned(plan: PullPlan) -> None:
            self.writer_button.setEnabled(True)
            self.download_requested.emit(plan.repo_id, plan.group)

        def failed(exc: BaseException) -> None:
            self.writer_button.setEnabled(True)
            self._failed(exc)

        Op(lambda: plan_pull(name)).on_success(planned).on_failure(failed).run(self.pool)

    def set_palette(self, p: Palette) -> None:
        self.quants.fit_colours = {"full_gpu": p.ok, "partial_gpu": p.warn, "cpu": p.accent, "across_machines": p.warn,
                                   "too_large": p.danger}
        self.quants.highlight = p.selection
        self.vision_badge.setStyleSheet(f"color: {p.accent}; border: 1px solid {p.accent};")
        self.writer_badge.setStyleSheet(f"color: {p.accent}; border: 1px solid {p.accent};")

    def _selection_changed(self) -> None:
        self.download_button.setEnabled(bool(self.selected_group()))
        self._show_projector()

    def _show_projector(self) -> None:
        """The badge and the projector that comes with the selected quant (the others named too)."""
        rq = self.quants.quants
        projectors = rq.projectors if rq is not None else []
        self.vision_row.setVisible(bool(projectors))
        if not projectors:
            self.vision_text.setText("")
            return
        group = self.selected_group()
        chosen = group.mmproj if group is not None else (rq.mmproj if rq is not None else None)
        others = [f"{f.name} ({human_size(f.size)})" for f in projectors if f != chosen]
        text = (
            f"{chosen.name} ({human_size(chosen.size)}) comes with the download"
            if chosen is not None
            else "Vision projectors: " + ", ".join(f.name for f in projectors)
        )
        if chosen is not None and others:
            text += f" · {len(others)} other{'s' if len(others) > 1 else ''} here"
        self.vision_text.setText(text)
        self.vision_text.setToolTip(
            "The projector is downloaded after the model and paired with it; My Models can pair another one."
            + (f"\nAlso in this repository: {', '.join(others)}" if others else "")
            if chosen is not None
            else ""
        )

    def ensure_searched(self) -> None:
        """Show the most popular models the first time the page opens."""
        if not self._searched:
            self.search()

    def search(self) -> None:
        self._searched = True
        from core.hub import search_models

        query = self.query.text().strip()
        sort: SortKey = self.sort.currentData()
        self.search_button.setEnabled(False)
        self.banner.hide()
        Op(lambda: search_models(query, sort=sort, limit=40)).on_success(self._show_results).on_failure(
            self._failed
        ).run(self.pool)

    def _show_results(self, models: list[HubModel]) -> None:
        self.search_button.setEnabled(True)
        self.results.set_results(models)
        if not models:
            self.banner.show_message("No GGUF models match that search: try a shorter name.")

    def _failed(self, exc: BaseException) -> None:
        self.search_button.setEnabled(True)
        self.banner.show_message(error_text(exc))

    def _picked(self, index: QModelIndex) -> None:
        model: HubModel = index.data(MODEL_ROLE)
        self.repo_title.setText(model.id)
        facts = [x for x in (model.architecture, f"{human_count(model.parameters)} parameters" if model.parameters else None,
                             f"context {model.context_length:,}" if model.context_length else None) if x]
        self.repo_facts.setText(" · ".join(facts) + ("  —  checking the files…" if facts else "Checking the files…"))
        self.quants.set_quants(None)
        self.reason.setText("")
        self.vision_row.hide()
        self.download_button.setEnabled(False)
        repo_id = model.id
        from core.hub import repo_quants
        from core.workers import machines_for_fit  # Settings > Other machines count in the badges

        Op(lambda: repo_quants(repo_id, workers=machines_for_fit())).on_success(self._show_quants).on_failure(self._quants_failed).run(self.pool)

    def _show_quants(self, rq: RepoQuants) -> None:
        if rq.repo_id != self.repo_title.text():
            return
        self.repo_facts.setText(self.repo_facts.text().replace("  —  checking the files…", "").replace("Checking the files…", ""))
        self.quants.set_quants(rq)
        self.reason.setText(f"★ {rq.reason}" if rq.recommended else rq.reason)
        row = self.quants.recommended_row()
        if row >= 0:
            self.quant_view.selectRow(row)
        self._show_projector()

    def _quants_failed(self, exc: BaseException) -> None:
        self.repo_facts.setText("")
        self.banner.show_message(error_text(exc))

    def selected_group(self) -> QuantGroup | None:
        rows = self.quant_view.selectionModel().selectedRows()
        return self.quants.group(rows[0].row()) if rows and self.quants.quants else None

    def download(self) -> None:
        group = self.selected_group()
        rq = self.quants.quants
        if group is None or rq is None:
            return
        if not group.complete:
            self.banner.show_message(f"{group.name} is missing some of its parts on the Hub: pick another quant.")
            return
        self.download_requested.emit(rq.repo_id, group)

    def select_result(self, repo_id: str) -> bool:
        for row in range(self.results.rowCount()):
            if self.results.result(row).id == repo_id:
                index = self.results.index(row)
                self.results_view.setCurrentIndex(index)
                self._picked(index)
                return True
        return False


