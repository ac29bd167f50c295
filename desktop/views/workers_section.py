"""Settings > Other machines: the computers a model is split across (llama.cpp's RPC workers).

Each worker runs ``hearth rpc-worker`` on its own computer; this card lists them (``core.workers``) with
what each reports when asked (device, free and total memory) and whether it answers, adds one by its
address, removes one, and switches each on or off. Asking a worker (``core.workers.probe_workers``) runs
off the GUI thread on the page's pool. The window never starts a worker: the user does, on that computer.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from core.engine.rpc import WorkerInfo
from core.errors import HearthError
from core.settings import Settings
from core.units import human_size
from core.workers import (
    WorkerEntry,
    add_worker,
    check_new_worker,
    device_words,
    forget_probes,
    probe_workers,
    remove_worker,
    set_enabled,
    why_not,
)
from desktop.ops import Executor, Op, error_text
from desktop.theme import LIGHT, Palette
from desktop.views.tool_call_card import plain_label
from desktop.views.widgets import button, flat_button, muted, title

INTRO = ("A model too large for this computer can run split across it and your other computers: each one lends "
         "its memory, and llama.cpp spreads the model's layers by what each has free. The chat, the window and the "
         "server load across the machines switched on here.")
# Settings.workers_use (core.workers.WORKER_USES), in the order of the choice box.
USES = (("needed", "Only for models too large for this computer"), ("always", "For every model"))
EMPTY = ("No other machines yet. On the other computer, run “hearth rpc-worker --host 0.0.0.0” (it listens on "
         "port 50052), then add its address below.")
SECURITY = ("llama.cpp's RPC has no password and no encryption: use it on a network you trust, or through an "
            "SSH tunnel (ssh -L 50052:127.0.0.1:50052 that-computer, then add 127.0.0.1:50052).")


def describe_worker(info: WorkerInfo | None) -> str:
    """The second line of a row: the devices and memory it reports, or why it does not answer."""
    if info is None:
        return "Asking…"
    if not info.ok:
        return f"Does not answer: {why_not(info)}."
    return f"Answers · {device_words(info)} · {human_size(info.free_bytes)} free of {human_size(info.total_bytes)}"


class WorkerRow(QFrame):
    """One worker: a dot for whether it answers, its name and address, what it reports, On, Remove."""

    def __init__(self, entry: WorkerEntry, info: WorkerInfo | None, palette: Palette,
                 on_toggle: Callable[[str, bool], None], on_remove: Callable[[str], None],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("workerRow")
        self.endpoint = entry.endpoint
        p = palette
        self.setStyleSheet(f"QFrame#workerRow {{ border: 1px solid {p.border}; border-radius: 8px; }}")
        col = QVBoxLayout(self)
        col.setContentsMargins(12, 8, 10, 10)
        col.setSpacing(4)
        head = QHBoxLayout()
        head.setSpacing(8)
        colour = p.muted if info is None else p.ok if info.ok else p.danger
        self.dot = QLabel("●")
        self.dot.setStyleSheet(f"color: {colour};")
        head.addWidget(self.dot)
        self.title = plain_label(entry.label, "sectionTitle")
        self.title.setWordWrap(False)
        head.addWidget(self.title)
        self.address = plain_label(entry.endpoint if entry.name else "", "muted")
        self.address.setWordWrap(False)
        head.addWidget(self.address, 1)
        self.switch = QCheckBox("On")
        self.switch.setChecked(entry.enabled)
        self.switch.setToolTip("Load models split onto this machine (off: it stays listed, unused)")
        self.switch.toggled.connect(lambda on: on_toggle(entry.endpoint, on))
        head.addWidget(self.switch)
        self.remove_button = flat_button("Remove", lambda: on_remove(entry.endpoint), "Forget this machine")
        head.addWidget(self.remove_button)
        col.addLayout(head)
        self.status = plain_label(describe_worker(info), "muted")
        if info is not None and not info.ok:
            self.status.setStyleSheet(f"color: {p.danger};")
        col.addWidget(self.status)


class WorkersSection(QFrame):
    """The Other machines card: what it is, the workers with what they report, adding one, Check."""

    def __init__(self, settings: Settings, pool: Executor, save: Callable[[], None] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("card")
        self.settings = settings
        self.pool = pool
        self._save = save or (lambda: None)
        self.palette_: Palette = LIGHT
        self.infos: dict[str, WorkerInfo] = {}
        self.checking = False
        self._pending: tuple[str, str] | None = None  # an address that did not answer, for "Add anyway"
        self._checked_once = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 14, 16, 14)
        layout.setSpacing(8)
        head = QHBoxLayout()
        head.addWidget(title("Other machines", "sectionTitle"))
        head.addStretch(1)
        self.check_button = button("Check", self.check, tip="Ask every machine again what it has free")
        head.addWidget(self.check_button)
        layout.addLayout(head)
        layout.addWidget(muted(INTRO))
        self.empty = muted(EMPTY)
        self.empty.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.empty)
        self.security = muted(SECURITY)
        self.security.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.security)
        use = QHBoxLayout()
        use.setSpacing(8)
        use.addWidget(plain_label("Use them", ""))
        self.use = QComboBox()
        for key, text in USES:
            self.use.addItem(text, key)
        self.use.setCurrentIndex(max(0, self.use.findData(settings.workers_use)))
        self.use.setToolTip("A model that fits here runs faster here alone: every token of a split model crosses "
                            "the network")
        self.use.currentIndexChanged.connect(self._use_changed)
        use.addWidget(self.use)
        use.addStretch(1)
        layout.addLayout(use)
        self.rows_box = QVBoxLayout()
        self.rows_box.setSpacing(8)
        layout.addLayout(self.rows_box)
        self.rows: dict[str, WorkerRow] = {}

        add = QHBoxLayout()
        add.setSpacing(8)
        self.address = QLineEdit()
        self.address.setPlaceholderText("Address, e.g. 192.168.1.20:50052")
        self.address.setToolTip("Where 'hearth rpc-worker' listens on the other computer (port 50052 by default)")
        self.address.returnPressed.connect(self.add_from_form)
        add.addWidget(self.address, 2)
        self.name = QLineEdit()
        self.name.setPlaceholderText("Name (optional), e.g. studio-pc")
        self.name.returnPressed.connect(self.add_from_form)
        add.addWidget(self.name, 1)
        self.add_button = button("Add", self.add_from_form, kind="primary", tip="Ask this machine, then add it")
        add.addWidget(self.add_button)
        layout.addLayout(add)
        note = QHBoxLayout()
        self.add_error = plain_label("", "errorText")
        self.add_error.hide()
        note.addWidget(self.add_error, 1)
        self.add_note = muted("")
        note.addWidget(self.add_note)
        self.add_anyway = flat_button("Add anyway", self._add_anyway, "Add it now; it is used once it answers")
        self.add_anyway.hide()
        note.addWidget(self.add_anyway, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(note)
        self.set_palette(LIGHT)

    # -- asking the workers ----------------------------------------------------------------------
    def showEvent(self, event: object) -> None:  # type: ignore[override]
        super().showEvent(event)  # type: ignore[arg-type]
        if not self._checked_once:
            self._checked_once = True
            self.check()

    def check(self) -> None:
        """Ask every listed worker, off the GUI thread; the rows update when the answers come."""
        entries = list(self.settings.workers)
        if not entries or self.checking:
            return
        self.checking = True
        self.check_button.setEnabled(False)
        self.infos = {}
        self.refresh()
        forget_probes()
        Op(lambda: probe_workers(entries)).on_success(self._checked).on_failure(self._check_failed).run(self.pool)

    def _checked(self, infos: list[WorkerInfo]) -> None:
        self.checking = False
        self.check_button.setEnabled(True)
        self.infos = {i.endpoint: i for i in infos}
        self.refresh()

    def _check_failed(self, exc: BaseException) -> None:
        self.checking = False
        self.check_button.setEnabled(True)
        self._say_error(error_text(exc))

    # -- changing the list -------------------------------------------------------------------------
    def add_from_form(self) -> None:
        """Ask the machine at the typed address; it is added when it answers (else "Add anyway" is offered)."""
        self.add_note.setText("")
        self.add_anyway.hide()
        self._pending = None
        try:
            endpoint = check_new_worker(self.address.text(), self.name.text(), settings=self.settings)
        except HearthError as exc:
            self._say_error(str(exc))
            return
        name = self.name.text().strip()
        self.add_error.hide()
        self.add_button.setEnabled(False)
        self.add_note.setText(f"Asking {endpoint}…")
        Op(lambda: probe_workers([WorkerEntry(endpoint, name)])[0]).on_success(
            lambda info: self._answered(endpoint, name, info)).on_failure(self._add_failed).run(self.pool)

    def _answered(self, endpoint: str, name: str, info: WorkerInfo) -> None:
        self.add_button.setEnabled(True)
        self.add_note.setText("")
        if not info.ok:
            self._pending = (endpoint, name)
            self._say_error(f"{endpoint} does not answer: {why_not(info)}. Then press Add again, or add it anyway "
                            "to use it once it runs.")
            self.add_anyway.show()
            return
        self._add(endpoint, name, info)

    def _add_failed(self, exc: BaseException) -> None:
        self.add_button.setEnabled(True)
        self.add_note.setText("")
        self._say_error(error_text(exc))

    def _add_anyway(self) -> None:
        if self._pending is not None:
            endpoint, name = self._pending
            self._add(endpoint, name, None)

    def _add(self, endpoint: str, name: str, info: WorkerInfo | None) -> None:
        try:
            add_worker(endpoint, name, check=False, settings=self.settings)
        except HearthError as exc:
            self._say_error(str(exc))
            return
        self._save()
        self._pending = None
        self.add_anyway.hide()
        self.add_error.hide()
        self.address.clear()
        self.name.clear()
        self.infos[endpoint] = info or WorkerInfo(endpoint, False, [], "it did not answer when added; press Check "
                                                  "once 'hearth rpc-worker' runs there")
        self.add_note.setText(f"Added {name or endpoint}.")
        self.refresh()

    def _toggle(self, endpoint: str, on: bool) -> None:
        try:
            set_enabled(endpoint, on, settings=self.settings)
        except HearthError as exc:
            self._say_error(str(exc))
            return
        self._save()

    def _use_changed(self, _index: int) -> None:
        self.settings.workers_use = str(self.use.currentData())
        self._save()

    def _remove(self, endpoint: str) -> None:
        try:
            entry = remove_worker(endpoint, settings=self.settings)
        except HearthError as exc:
            self._say_error(str(exc))
            return
        self._save()
        self.infos.pop(endpoint, None)
        self.add_note.setText(f"Removed {entry.label}.")
        self.refresh()

    def _say_error(self, text: str) -> None:
        self.add_error.setText(text)
        self.add_error.show()

    # -- showing the list ---------------------------------------------------------------------------
    def set_palette(self, palette: Palette) -> None:
        self.palette_ = palette
        self.refresh()

    def refresh(self) -> None:
        self.add_error.setStyleSheet(f"color: {self.palette_.danger};")
        for row in self.rows.values():
            row.hide()
            row.deleteLater()
        self.rows = {}
        for entry in self.settings.workers:
            row = WorkerRow(entry, self.infos.get(entry.endpoint), self.palette_, self._toggle, self._remove)
            self.rows_box.addWidget(row)
            self.rows[entry.endpoint] = row
        self.empty.setVisible(not self.settings.workers)
        self.check_button.setVisible(bool(self.settings.workers))
