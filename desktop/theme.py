"""Light and dark looks: one colour palette each, turned into a Qt palette and a style sheet.

"system" follows the desktop's colour scheme (``QStyleHints.colorScheme``) and changes with it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


def _resources() -> Path:
    """resources/ of a checkout, else where a wheel installs it (pyproject's data-files)."""
    checkout = Path(__file__).resolve().parent.parent / "resources"
    return checkout if checkout.is_dir() else Path(sys.prefix) / "share" / "hearth"


RESOURCES = _resources()


@dataclass(frozen=True)
class Palette:
    dark: bool
    window: str
    surface: str  # cards, panels
    sidebar: str
    border: str
    text: str
    muted: str
    accent: str
    accent_text: str
    user_bubble: str
    assistant_bubble: str
    code_bg: str
    code_header: str
    danger: str
    danger_bg: str
    ok: str
    warn: str
    selection: str


LIGHT = Palette(
    dark=False, window="#f7f7f8", surface="#ffffff", sidebar="#eef0f3", border="#dfe2e7", text="#1d2025",
    muted="#6b7280", accent="#d9692b", accent_text="#ffffff", user_bubble="#fbe9dd", assistant_bubble="#ffffff",
    code_bg="#f3f4f6", code_header="#e6e8ec", danger="#b42318", danger_bg="#fdecea", ok="#1f883d",
    warn="#b7791f", selection="#f8d9c4",
)
DARK = Palette(
    dark=True, window="#1b1c1f", surface="#242529", sidebar="#151618", border="#34363b", text="#e8e9eb",
    muted="#9aa0a8", accent="#f08a4b", accent_text="#1b1c1f", user_bubble="#3a2c23", assistant_bubble="#242529",
    code_bg="#16171a", code_header="#2c2e33", danger="#ff8a80", danger_bg="#3b2020", ok="#57c27a",
    warn="#e0b050", selection="#5a3a26",
)


def system_is_dark() -> bool:
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication

    return bool(QGuiApplication.styleHints().colorScheme() == Qt.ColorScheme.Dark)


def palette_for(theme: str) -> Palette:
    if theme == "dark":
        return DARK
    if theme == "light":
        return LIGHT
    return DARK if system_is_dark() else LIGHT


def icon_path(name: str, palette: Palette) -> str:
    """An SVG icon from resources/icons, recoloured for the palette (icons are drawn in #000)."""
    source = RESOURCES / "icons" / f"{name}.svg"
    if not palette.dark:
        return str(source)
    from core.paths import get_paths

    target = get_paths().cache / "icons-dark" / f"{name}.svg"
    if not target.exists() or target.stat().st_mtime < source.stat().st_mtime:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source.read_text(encoding="utf-8").replace("#000", palette.text), encoding="utf-8")
    return str(target)


def style_sheet(p: Palette) -> str:
    chevron = icon_path("chevron", p).replace("\\", "/")
    chevron_up = icon_path("chevron-up", p).replace("\\", "/")
    return f"""
QWidget {{ color: {p.text}; font-size: 10pt; }}
QMainWindow, QStackedWidget > QWidget#page {{ background: {p.window}; }}
QWidget#page {{ background: {p.window}; }}
QFrame#sidebar {{ background: {p.sidebar}; border-right: 1px solid {p.border}; }}
QLabel#brand {{ font-size: 15pt; font-weight: 700; padding: 14px 16px 10px 16px; color: {p.text}; }}
QToolButton#navButton {{
    border: none; border-radius: 8px; padding: 8px 12px; margin: 2px 8px; text-align: left;
    color: {p.text}; background: transparent; font-size: 10.5pt;
}}
QToolButton#navButton:hover {{ background: {p.border}; }}
QToolButton#navButton:checked {{ background: {p.selection}; font-weight: 600; }}
QLabel#pageTitle {{ font-size: 16pt; font-weight: 700; }}
QLabel#sectionTitle {{ font-size: 11pt; font-weight: 600; }}
QLabel#muted, QLabel[muted="true"] {{ color: {p.muted}; }}
QFrame#card {{ background: {p.surface}; border: 1px solid {p.border}; border-radius: 10px; }}
QFrame#panel {{ background: {p.surface}; border-left: 1px solid {p.border}; }}
QFrame#convPanel {{ background: {p.surface}; border-right: 1px solid {p.border}; }}
QFrame#bubbleUser {{ background: {p.user_bubble}; border-radius: 12px; }}
QFrame#bubbleAssistant {{ background: {p.assistant_bubble}; border: 1px solid {p.border}; border-radius: 12px; }}
QFrame#banner {{ background: {p.danger_bg}; border: 1px solid {p.danger}; border-radius: 8px; }}
QFrame#banner QLabel {{ color: {p.danger}; }}
QLabel#errorText {{ color: {p.danger}; }}
QFrame#composer {{ background: {p.surface}; border: 1px solid {p.border}; border-radius: 12px; }}
QPlainTextEdit#composerEdit {{ border: none; background: transparent; }}
QTextBrowser#messageText {{ border: none; background: transparent; }}
QLineEdit, QPlainTextEdit, QTextEdit, QSpinBox, QDoubleSpinBox, QComboBox {{
    background: {p.surface}; border: 1px solid {p.border}; border-radius: 6px; padding: 4px 6px;
    selection-background-color: {p.selection}; selection-color: {p.text};
}}
QLineEdit:focus, QSpinBox:focus, QDoubleSpinBox:focus, QComboBox:focus {{ border: 1px solid {p.accent}; }}
QComboBox QAbstractItemView {{ background: {p.surface}; border: 1px solid {p.border}; }}
QComboBox::drop-down {{ border: none; width: 22px; }}
QAbstractSpinBox::up-button, QAbstractSpinBox::down-button {{
    subcontrol-origin: border; width: 16px; border: none; background: transparent;
}}
QAbstractSpinBox::up-button {{ subcontrol-position: top right; }}
QAbstractSpinBox::down-button {{ subcontrol-position: bottom right; }}
QAbstractSpinBox::up-arrow {{ image: url({chevron_up}); width: 9px; height: 9px; }}
QAbstractSpinBox::down-arrow {{ image: url({chevron}); width: 9px; height: 9px; }}
QComboBox::down-arrow {{ image: url({chevron}); width: 12px; height: 12px; }}
QPushButton {{
    background: {p.surface}; border: 1px solid {p.border}; border-radius: 6px; padding: 5px 12px;
}}
QPushButton:hover {{ border-color: {p.accent}; }}
QPushButton:disabled {{ color: {p.muted}; }}
QCheckBox:disabled {{ color: {p.muted}; }}
QPushButton#primary {{ background: {p.accent}; color: {p.accent_text}; border: none; font-weight: 600; }}
QPushButton#primary:disabled {{ background: {p.border}; color: {p.muted}; }}
QPushButton#danger {{ color: {p.danger}; }}
QToolButton#flat {{ border: none; border-radius: 5px; padding: 2px 6px; color: {p.muted}; background: transparent; }}
QToolButton#flat:hover {{ background: {p.border}; color: {p.text}; }}
QListView, QTableView, QTreeView {{
    background: {p.surface}; border: 1px solid {p.border}; border-radius: 8px;
    alternate-background-color: {p.window}; selection-background-color: {p.selection};
    selection-color: {p.text}; outline: none;
}}
QListView#hubResults::item {{ padding: 8px 10px; border-bottom: 1px solid {p.border}; }}
QListView#hubResults::item:selected {{ background: {p.selection}; }}
QListView#convList {{ border: none; background: transparent; }}
QListView#convList::item {{ padding: 8px 10px; border-radius: 6px; margin: 1px 6px; }}
QListView#convList::item:selected {{ background: {p.selection}; }}
QListView#convList::item:hover:!selected {{ background: {p.border}; }}
QHeaderView::section {{
    background: {p.window}; border: none; border-bottom: 1px solid {p.border}; padding: 6px; font-weight: 600;
    color: {p.muted};
}}
QTableView::item {{ padding: 4px; }}
QProgressBar {{
    border: none; border-radius: 4px; background: {p.border}; text-align: center; height: 8px; color: {p.text};
}}
QProgressBar::chunk {{ background: {p.accent}; border-radius: 4px; }}
QScrollArea {{ border: none; background: transparent; }}
QScrollArea > QWidget > QWidget#transcript {{ background: {p.window}; }}
QSplitter::handle {{ background: {p.border}; }}
QScrollBar:vertical {{ background: transparent; width: 10px; margin: 0; }}
QScrollBar::handle:vertical {{ background: {p.border}; border-radius: 5px; min-height: 30px; }}
QScrollBar::add-line, QScrollBar::sub-line {{ height: 0; width: 0; }}
QStatusBar {{ background: {p.sidebar}; color: {p.muted}; border-top: 1px solid {p.border}; }}
QToolTip {{ background: {p.surface}; color: {p.text}; border: 1px solid {p.border}; padding: 4px; }}
QLabel#badge {{ border-radius: 8px; padding: 2px 8px; font-size: 9pt; font-weight: 600; }}
"""


def apply_theme(theme: str) -> Palette:
    """Set the app's palette and style sheet for ``theme`` ("system", "light" or "dark")."""
    from PySide6.QtGui import QColor, QPalette
    from PySide6.QtWidgets import QApplication

    p = palette_for(theme)
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    app.setStyle("Fusion")
    qp = QPalette()
    roles = {
        QPalette.ColorRole.Window: p.window, QPalette.ColorRole.WindowText: p.text,
        QPalette.ColorRole.Base: p.surface, QPalette.ColorRole.AlternateBase: p.window,
        QPalette.ColorRole.Text: p.text, QPalette.ColorRole.Button: p.surface,
        QPalette.ColorRole.ButtonText: p.text, QPalette.ColorRole.Highlight: p.selection,
        QPalette.ColorRole.HighlightedText: p.text, QPalette.ColorRole.ToolTipBase: p.surface,
        QPalette.ColorRole.ToolTipText: p.text, QPalette.ColorRole.PlaceholderText: p.muted,
        QPalette.ColorRole.Link: p.accent,
    }
    for role, colour in roles.items():
        qp.setColor(role, QColor(colour))
    app.setPalette(qp)
    app.setStyleSheet(style_sheet(p))
    return p
