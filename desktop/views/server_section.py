"""Settings > Server: serve the library to other apps (OpenAI and Ollama APIs), with a live request log."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import replace

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QSpinBox,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from core.settings import ServerSettings, Settings
from desktop.server_control import ServerControl
from desktop.theme import LIGHT, Palette
from desktop.views.widgets import button, flat_button, muted, title

INTRO = ("Other programs on this computer — editors, note apps, agent tools — can use your models and "
         "tuned adapters (named MODEL+ADAPTER) through an OpenAI- or Ollama-compatible API. "
         "A model loads on the first request; the window and other apps take turns on it.")
NETWORK_HINT = ("Off: only programs on this computer can connect. On: any device on your network that has "
                "the API key can use your models.")


def new_api_key() -> str:
    return "hearth-" + secrets.token_urlsafe(24)


def _origins(text: str) -> list[str]:
    return [o.strip().rstrip("/") for o in text.replace(",", " ").split() if o.strip()]


class ServerSection(QFrame):
    """The Server card: the switch, its settings, where to connect, the status line and the request log.

    ``settings.server`` changes only through the switch and Apply; ``changed`` asks the window to save.
    """

    def __init__(
        self, settings: Settings, control: ServerControl, save: Callable[[], None], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("card")
        self.settings = settings
        self.control = control
        self._save = save
        self.palette_: Palette = LIGHT
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 14, 16, 14)
        layout.setSpacing(8)

        head = QHBoxLayout()
        head.addWidget(title("Server", "sectionTitle"))
        head.addStretch(1)
        self.switch = QCheckBox("Serve my models to other apps")
        self.switch.setChecked(settings.server.enabled)
        self.switch.setCursor(Qt.CursorShape.PointingHandCursor)
        self.switch.toggled.connect(self._switched)
        head.addWidget(self.switch)
        layout.addLayout(head)
        layout.addWidget(muted(INTRO))
        self.status = muted("")
        self.status.setObjectName("serverStatus")
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)

        columns = QHBoxLayout()
        columns.setSpacing(28)
        form = QFormLayout()
        form.setVerticalSpacing(8)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.port = QSpinBox()
        self.port.setRange(1024, 65535)
        self.port.setValue(settings.server.port)
        self.port.setMaximumWidth(110)
        form.addRow("Port", self.port)
        self.network = QCheckBox("Allow other devices on my network")
        self.network.setChecked(settings.server.allow_network)
        self.network.setToolTip(NETWORK_HINT)
        self.network.toggled.connect(self._network_toggled)
        form.addRow("Network", self.network)
        self.key = QLineEdit(settings.server.api_key)
        self.key.setEchoMode(QLineEdit.EchoMode.Password)
        self.key.setMinimumWidth(110)  # masked, and it grows with the window: 250 made the window's smallest size scroll sideways
        self.key.setPlaceholderText("None")
        self.key.setToolTip("Needed for other devices; apps on this computer connect without one unless it is set")
        self.show_key = flat_button("Show", self._toggle_key, "Show or hide the key")
        key_row = QHBoxLayout()
        key_row.setSpacing(4)
        key_row.addWidget(self.key, 1)
        key_row.addWidget(self.show_key)
        key_row.addWidget(flat_button("Copy", lambda: _copy(self.key.text()), "Copy the key"))
        key_row.addWidget(flat_button("New key", self._regenerate, "Make a new key (apps with the old one stop working)"))
        form.addRow("API key", key_row)
        self.origins = QLineEdit(" ".join(settings.server.cors_origins))
        self.origins.setPlaceholderText("None (e.g. http://localhost:3000)")
        self.origins.setToolTip("Web pages allowed to call the server from a browser, separated by spaces")
        form.addRow("Browser apps", self.origins)
        self.idle = QSpinBox()
        self.idle.setRange(0, 24 * 60)
        self.idle.setSuffix(" min")
        self.idle.setSpecialValueText("Never")
        self.idle.setValue(settings.server.idle_minutes)
        self.idle.setMaximumWidth(110)
        self.idle.setToolTip("A model loaded for another app is unloaded after this long without requests")
        form.addRow("Unload idle model", self.idle)
        columns.addLayout(form, 1)

        connect = QFormLayout()
        connect.setVerticalSpacing(8)
        connect.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        connect.addRow(muted("Paste into the other app:"))
        self.openai_url = self._url_row(connect, "OpenAI apps")
        self.ollama_url = self._url_row(connect, "Ollama apps")
        self.network_note = muted("")
        connect.addRow(self.network_note)
        apply_row = QHBoxLayout()
        apply_row.addStretch(1)
        self.apply_button = button("Apply changes", self.apply_changes, kind="primary",
                                   tip="Save these settings (a running server restarts with them)")
        apply_row.addWidget(self.apply_button)
        connect.addRow(apply_row)
        columns.addLayout(connect, 1)
        layout.addLayout(columns)

        log_head = QHBoxLayout()
        log_head.addWidget(title("Requests", "sectionTitle"))
        self.log_note = muted("")
        log_head.addWidget(self.log_note, 1)
        log_head.addWidget(flat_button("Clear", control.log.clear, "Clear the request log"))
        layout.addLayout(log_head)
        self.log_view = QTableView()
        self.log_view.setModel(control.log)
        self.log_view.setAlternatingRowColors(True)
        self.log_view.verticalHeader().hide()
        self.log_view.setShowGrid(False)
        self.log_view.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.log_view.setMinimumHeight(170)
        header = self.log_view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        layout.addWidget(self.log_view, 1)

        for signal in (self.port.valueChanged, self.idle.valueChanged, self.key.textChanged,
                       self.origins.textChanged, self.network.toggled):
            signal.connect(lambda *_a: self._refresh())
        control.changed.connect(self._refresh)
        control.log.rowsInserted.connect(lambda *_a: self._refresh_log_note())
        control.log.modelReset.connect(self._refresh_log_note)
        self._refresh()
        self._refresh_log_note()

    def _url_row(self, form: QFormLayout, label: str) -> QLineEdit:
        edit = QLineEdit()
        edit.setReadOnly(True)
        row = QHBoxLayout()
        row.setSpacing(4)
        row.addWidget(edit, 1)
        row.addWidget(flat_button("Copy", lambda: _copy(edit.text()), f"Copy the address for {label}"))
        form.addRow(label, row)
        return edit

    # -- what the form says --------------------------------------------------------------------
    def form_values(self) -> ServerSettings:
        return ServerSettings(
            enabled=self.switch.isChecked(), port=self.port.value(), allow_network=self.network.isChecked(),
            api_key=self.key.text().strip(), cors_origins=_origins(self.origins.text()),
            idle_minutes=self.idle.value(),
        )

    def _commit(self) -> None:
        self.settings.server = self.form_values()
        self._save()
        self.control.apply(self.settings.server)
        self._refresh()

    def _switched(self, _on: bool) -> None:
        self._commit()

    def apply_changes(self) -> None:
        self._commit()

    def _network_toggled(self, on: bool) -> None:
        if on and not self.key.text().strip():
            self.key.setText(new_api_key())

    def _regenerate(self) -> None:
        self.key.setText(new_api_key())

    def _toggle_key(self) -> None:
        shown = self.key.echoMode() == QLineEdit.EchoMode.Normal
        self.key.setEchoMode(QLineEdit.EchoMode.Password if shown else QLineEdit.EchoMode.Normal)
        self.show_key.setText("Show" if shown else "Hide")

    # -- showing the state ---------------------------------------------------------------------
    def set_palette(self, palette: Palette) -> None:
        self.palette_ = palette
        self._refresh()

    def _refresh(self) -> None:
        c = self.control
        form = self.form_values()
        dirty = replace(form, enabled=False) != replace(self.settings.server, enabled=False)
        self.apply_button.setEnabled(dirty)
        self.apply_button.setText("Apply and restart" if dirty and c.serving else "Apply changes")
        colour = {"serving": self.palette_.ok, "error": self.palette_.danger}.get(c.state, self.palette_.muted)
        self.status.setStyleSheet(f"color: {colour};")
        text = c.describe()
        if c.serving and dirty:
            text += " · unsaved changes: Apply to restart with them"
        self.status.setText(("● " if c.serving else "") + text)
        port = c.served.port if c.served else form.port
        self.openai_url.setText(c.url or f"http://127.0.0.1:{port}/v1")
        self.ollama_url.setText(c.base_url or f"http://127.0.0.1:{port}")
        if c.network_url:
            self.network_note.setText(f"From other devices: {c.network_url} (with the API key)")
        elif form.allow_network:
            self.network_note.setText("Other devices use this computer's network address and the API key.")
        else:
            self.network_note.setText("Apps send the API key as “Authorization: Bearer KEY”, when one is set.")

    def _refresh_log_note(self) -> None:
        n = self.control.log.rowCount()
        self.log_note.setText("  none yet" if n == 0 else f"  latest first · {n:,} shown")


def _copy(text: str) -> None:
    clipboard = QGuiApplication.clipboard()
    if clipboard is not None and text:
        clipboard.setText(text)
