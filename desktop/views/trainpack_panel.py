"""The Fine-tune page's offer to install the training pack (core.trainpack), when this app lacks it.

Shown above the form, which stays disabled until the pack is installed: what the pack is, which
torch build fits this machine, the download size (asked of pip in the background), a progress bar
while it installs, and on failure the reason with Try again. Nothing half-installed is ever used.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QProgressBar, QVBoxLayout, QWidget

from core import trainpack
from core.units import human_size
from desktop.ops import Executor, Op, error_text
from desktop.views.widgets import button, muted, title


class TrainingPackPanel(QFrame):
    """``ready`` once the training packages can be imported (at once when they already are)."""

    ready = Signal()

    def __init__(self, pool: Executor, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("card")
        self.pool = pool
        self.installing = False
        self._size_asked = False
        col = QVBoxLayout(self)
        col.setContentsMargins(18, 16, 18, 16)
        col.setSpacing(8)
        col.addWidget(title("Install the training pack to fine-tune", "sectionTitle"))
        self.choice = trainpack.choose_torch()
        self.about = muted(
            "Hearth trains with PyTorch, Transformers and PEFT. They are too large to come with the app, "
            f"so Hearth installs them once, into its own folder, with {self.choice.reason}. "
            "Your Python and your system are not touched."
        )
        col.addWidget(self.about)
        self.size_label = muted("Download size: checking…")
        col.addWidget(self.size_label)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.hide()
        col.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.hide()
        col.addWidget(self.status)
        row = QHBoxLayout()
        self.install_button = button("Install training pack", self.install, kind="primary")
        row.addWidget(self.install_button)
        row.addStretch(1)
        col.addLayout(row)
        self.hide()

    def check(self) -> None:
        """Emit ``ready`` when the packages import, else show the offer (finding them imports nothing)."""
        self._checked(trainpack.activate())

    def _checked(self, available: bool) -> None:
        if available:
            self.hide()
            self.ready.emit()
            return
        self.show()
        if not self._size_asked:
            self._size_asked = True
            choice = self.choice
            Op(lambda: trainpack.download_size(choice)).on_success(self._sized).on_failure(
                lambda _exc: self._sized(None)).run(self.pool)

    def _sized(self, size: int | None) -> None:
        self.size_label.setText(
            f"Download size: {human_size(size)}, once. Installing takes a few minutes." if size
            else "Download size: several hundred MB (pip could not say exactly now)."
        )

    def install(self) -> None:
        if self.installing:
            return
        self.installing = True
        self.install_button.setEnabled(False)
        self.install_button.setText("Installing…")
        self.status.setObjectName("")
        self.status.setText("Starting pip…")
        self.status.show()
        self.progress.setValue(0)
        self.progress.show()
        choice = self.choice

        def work(report: object) -> dict[str, object]:
            return trainpack.install(report, choice=choice)  # type: ignore[arg-type]

        Op(work).on_progress(self._progress).on_success(self._installed).on_failure(self._failed).run(self.pool)

    def _progress(self, p: object) -> None:
        if isinstance(p, trainpack.InstallProgress):
            self.progress.setValue(int(p.fraction * 1000))
            self.status.setText(p.message)

    def _installed(self, record: dict[str, object]) -> None:
        self.installing = False
        self.progress.hide()
        versions = record.get("versions") or {}
        assert isinstance(versions, dict)
        self.status.setText("Installed " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
        self.check()

    def _failed(self, exc: BaseException) -> None:
        self.installing = False
        self.progress.hide()
        self.status.setText(error_text(exc))
        self.status.setObjectName("errorText")
        self.status.style().unpolish(self.status)
        self.status.style().polish(self.status)
        self.install_button.setText("Try again")
        self.install_button.setEnabled(True)
