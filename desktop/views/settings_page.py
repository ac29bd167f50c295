"""Settings and System: detected hardware, data folders, default parameters, theme, the API server."""

from __future__ import annotations

import html
from collections.abc import Callable
from functools import partial
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QResizeEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)
from shiboken6 import isValid

from core.hardware import Hardware, clear_cache, detect_hardware
from core.paths import get_paths
from core.settings import Settings, apply_gpu
from core.units import human_size
from desktop.ops import Executor, Op, error_text
from desktop.server_control import ServerControl
from desktop.theme import Palette
from desktop.tools_control import ToolsControl
from desktop.views.params_panel import ParamsForm
from desktop.views.server_section import ServerSection
from desktop.views.tools_section import ToolsSection
from desktop.views.widgets import button, flat_button, muted, title
from desktop.views.workers_section import WorkersSection


def _open_folder(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))


def about_text() -> str:
    """Hearth's version, how it is installed, and where fine-tuning's packages come from."""
    from core import __version__, trainpack
    from core.runtime import frozen

    kind = "installed app" if frozen() else "source checkout"
    if trainpack.builtin():
        training = "fine-tuning with this Python's own PyTorch"
    elif trainpack.ready() is not None:
        training = "training pack installed"
    else:
        training = "training pack not installed yet (the Fine-tune page offers it)"
    return f"Hearth {__version__} · {kind} · {training}"


def card(heading: str) -> tuple[QFrame, QVBoxLayout]:
    frame = QFrame()
    frame.setObjectName("card")
    layout = QVBoxLayout(frame)
    layout.setContentsMargins(16, 14, 16, 14)
    layout.setSpacing(8)
    layout.addWidget(title(heading, "sectionTitle"))
    return frame, layout


class _PathLabel(QLabel):
    """A folder's path on one line, shortened in the middle (``…``) when the card is narrow, whole in its
    tooltip: a long path held the page wider than the window's smallest size (it scrolled sideways)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.setObjectName("muted")
        self.path = path
        self.setToolTip(path)
        self.setMinimumWidth(80)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

    def sizeHint(self) -> QSize:
        return QSize(self.fontMetrics().horizontalAdvance(self.path) + 4, super().sizeHint().height())

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self.setText(self.fontMetrics().elidedText(self.path, Qt.TextElideMode.ElideMiddle, self.width()))


class SettingsPage(QWidget):
    theme_changed = Signal(str)
    defaults_saved = Signal()

    def __init__(
        self,
        settings: Settings,
        pool: Executor,
        server: ServerControl | None = None,
        save: Callable[[], None] | None = None,
        parent: QWidget | None = None,
        tools: ToolsControl | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.settings = settings
        self.pool = pool
        self.scroll_area = scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        inner = QWidget()
        inner.setObjectName("page")
        layout = QVBoxLayout(inner)
        layout.setContentsMargins(24, 20, 24, 20)
        layout.setSpacing(14)
        scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        layout.addWidget(title("Settings"))
        self.about = muted(about_text())
        self.about.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.about)

        grid = QGridLayout()
        grid.setSpacing(14)
        hw, hw_layout = card("This computer")
        self.hardware_label = QLabel("Detecting hardware…")
        self.hardware_label.setWordWrap(True)
        hw_layout.addWidget(self.hardware_label)
        self.gpu_use = QComboBox()
        for label, value in (("Where one is found", "auto"), ("Never (the CPU only)", "off")):
            self.gpu_use.addItem(label, value)
        self.gpu_use.setCurrentIndex(max(0, self.gpu_use.findData(settings.gpu)))
        self.gpu_use.setToolTip("Off: no GPU driver is even asked, for a driver that crashes or misbehaves "
                                "(the same as HEARTH_GPU=off). Applies from the next model load.")
        self.gpu_use.currentIndexChanged.connect(lambda _i: self._gpu_use_changed(save))
        gpu_form = QFormLayout()
        gpu_form.addRow("Run models on the GPU", self.gpu_use)
        hw_layout.addLayout(gpu_form)
        hw_layout.addStretch(1)
        grid.addWidget(hw, 0, 0)

        look, look_layout = card("Appearance")
        self.theme = QComboBox()
        for label, value in (("Follow the system", "system"), ("Light", "light"), ("Dark", "dark")):
            self.theme.addItem(label, value)
        self.theme.setCurrentIndex(max(0, self.theme.findData(settings.theme)))
        self.theme.currentIndexChanged.connect(lambda _i: self.theme_changed.emit(str(self.theme.currentData())))
        form = QFormLayout()
        form.addRow("Theme", self.theme)
        look_layout.addLayout(form)
        look_layout.addSpacing(8)
        look_layout.addWidget(title("Data folders", "sectionTitle"))
        paths = get_paths()
        folders = QFormLayout()
        for label, path in (("Models", paths.models), ("Chats and library", paths.data), ("Settings", paths.config),
                            ("Logs", paths.logs)):
            row = QHBoxLayout()
            text = _PathLabel(str(path))
            row.addWidget(text, 1)
            row.addWidget(flat_button("Open", partial(_open_folder, path), "Show this folder"))
            folders.addRow(label, row)
        look_layout.addLayout(folders)
        look_layout.addStretch(1)
        grid.addWidget(look, 0, 1)

        params, params_layout = card("Default chat parameters")
        params_layout.addWidget(muted("Used for every model without a saved preset."))
        self.defaults = ParamsForm()
        self.defaults.setMaximumWidth(380)
        self.defaults.set_values(settings.defaults)
        side = QHBoxLayout()
        side.setSpacing(24)
        side.addWidget(self.defaults, 1)
        prompt_col = QVBoxLayout()
        prompt_col.addWidget(QLabel("Default system prompt"))
        self.system_prompt = QPlainTextEdit(settings.system_prompt)
        self.system_prompt.setPlaceholderText("Used when a new chat starts, e.g. You are a helpful assistant.")
        prompt_col.addWidget(self.system_prompt, 1)
        side.addLayout(prompt_col, 1)
        params_layout.addLayout(side)
        row = QHBoxLayout()
        row.addStretch(1)
        self.saved_note = muted("")
        row.addWidget(self.saved_note)
        row.addWidget(button("Save defaults", self.save_defaults, kind="primary"))
        params_layout.addLayout(row)
        self.server: ServerSection | None = None
        if server is not None:
            self.server = ServerSection(settings, server, save or (lambda: None))
            grid.addWidget(self.server, 1, 0, 1, 2)
        self.tools: ToolsSection | None = None
        if tools is not None:
            self.tools = ToolsSection(tools, save_timeout=lambda seconds: self._save_timeout(seconds, save))
            grid.addWidget(self.tools, 2, 0, 1, 2)
        self.workers = WorkersSection(settings, pool, save)  # Other machines (core.workers)
        grid.addWidget(self.workers, 3, 0, 1, 2)
        grid.addWidget(params, 4, 0, 1, 2)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        layout.addLayout(grid)
        layout.addStretch(1)
        self._detected = False

    def set_palette(self, palette: Palette) -> None:
        self.workers.set_palette(palette)
        if self.server is not None:
            self.server.set_palette(palette)
        if self.tools is not None:
            self.tools.set_palette(palette)

    def _save_timeout(self, seconds: float, save: Callable[[], None] | None) -> None:
        self.settings.tool_timeout = seconds
        if save is not None:
            save()

    def _gpu_use_changed(self, save: Callable[[], None] | None) -> None:
        self.settings.gpu = str(self.gpu_use.currentData())
        if save is not None:
            save()  # save_settings also sets HEARTH_GPU for the engine's next process (core.settings.apply_gpu)
        else:
            apply_gpu(self.settings)
        clear_cache()
        self.hardware_label.setText("Detecting hardware…")
        Op(detect_hardware).on_success(self._show_hardware).on_failure(self._detect_failed).run(self.pool)

    def ensure_detected(self) -> None:
        if not self._detected:
            self._detected = True
            Op(detect_hardware).on_success(self._show_hardware).on_failure(self._detect_failed).run(self.pool)

    def _detect_failed(self, exc: BaseException) -> None:
        if isValid(self.hardware_label):  # the window may have closed while detecting
            self.hardware_label.setText(error_text(exc))

    def _show_hardware(self, hw: Hardware) -> None:
        if not isValid(self.hardware_label):  # the window closed while detecting
            return
        cores = f"{hw.cpu.physical_cores or '?'} cores / {hw.cpu.logical_cores or '?'} threads"
        lines = [
            f"<b>System</b>: {html.escape(hw.os)}",
            f"<b>CPU</b>: {html.escape(hw.cpu.model)} ({cores})",
            f"<b>Memory</b>: {human_size(hw.ram_total_bytes)} ({human_size(hw.ram_available_bytes)} free)",
        ]
        used = {g.index for g in hw.usable_gpus}
        if hw.gpus:
            for g in hw.gpus:
                runs = (f" · {html.escape(g.device)} ({html.escape(g.backend)})" if g.device else "") + (
                    f", also {html.escape(', '.join(g.also))}" if g.also else "")
                state = "used for models" if g.index in used else "not used"
                lines.append(f"<b>GPU {g.index}</b>: {html.escape(g.name)} — {human_size(g.total_bytes)} "
                             f"({human_size(g.free_bytes)} free){runs} · {state}")
        else:
            lines.append("<b>GPU</b>: none found")
        lines.append(f"<b>Models run on</b>: {html.escape(hw.runs_on)}")
        backends = ", ".join(hw.llama.backends) or "none"
        lines.append(f"<b>llama.cpp backends</b>: {html.escape(backends)}"
                     + (" (GPU offload available)" if hw.llama.gpu_offload else " (CPU only)"))
        if hw.llama.available:
            lines.append(f"<b>CPU backend</b>: {html.escape(hw.llama.cpu_backend)}")
        if hw.cpu.features:
            lines.append(f"<b>CPU features</b>: {html.escape(' '.join(hw.cpu.features[:12]))}")
        for note in hw.notes:
            lines.append(f"<span style='color:gray'>• {html.escape(note)}</span>")
        self.hardware_label.setText("<br>".join(lines))

    def save_defaults(self) -> None:
        self.settings.defaults = self.defaults.values()
        self.settings.system_prompt = self.system_prompt.toPlainText().strip()
        self.saved_note.setText("Saved.")
        self.defaults_saved.emit()
