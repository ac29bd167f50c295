"""Desktop fixtures: Qt offscreen, a main window that is closed cleanly and checked for leaked windows."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PySide6.QtCore import QCoreApplication, QEvent
from PySide6.QtWidgets import QApplication, QWidget

from desktop.views.main_window import MainWindow

if TYPE_CHECKING:
    from desktop.views.chat_page import ChatPage

WindowFactory = Callable[[], MainWindow]


SHOTS = Path("/work/notes/shots")  # screenshots of the window's states, for people to look at


def save_shots(window: MainWindow, qtbot: object, name: str) -> None:
    """Light and dark screenshots of the window as it is now (``SHOTS/name-light.png``, ``-dark.png``)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for theme in ("light", "dark"):
        window.set_theme(theme)
        qtbot.wait(150)  # type: ignore[attr-defined]
        assert window.grab().save(str(SHOTS / f"{name}-{theme}.png"))
    window.set_theme("system")


def wait_until(qtbot: object, predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    """Process events until ``predicate()`` holds (the GUI keeps running meanwhile)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        QApplication.processEvents()
        time.sleep(0.01)


def pick_model(page: ChatPage, name: str) -> None:
    """Choose ``name`` in the chat page's model picker, as a user's click does."""
    page.model_picker.setCurrentIndex(page.library.row_of(name))
    page._model_picked()


def use_model(page: ChatPage, name: str, *, max_tokens: int, n_ctx: int) -> None:
    """Choose ``name`` and make its answers short and repeatable: greedy, ``max_tokens``, one thread."""
    pick_model(page, name)
    form = page.params.form.editors
    form["temperature"].setValue(0)
    form["max_tokens"].setValue(max_tokens)
    form["n_ctx"].setValue(n_ctx)
    form["n_threads"].setValue(1)


def _flush_deletes() -> None:
    for _ in range(3):
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        QApplication.processEvents()


@pytest.fixture
def make_window(qapp: QApplication, qtbot: object, starter_in_library: Path) -> Iterator[WindowFactory]:
    """Build (and show) main windows; at the end each is closed and no top-level widget may be left."""
    _flush_deletes()
    before = {id(w) for w in QApplication.topLevelWidgets()}
    windows: list[MainWindow] = []

    def factory() -> MainWindow:
        window = MainWindow()
        windows.append(window)
        window.show()
        # The starter model (already in the library folder) is registered in the background.
        wait_until(qtbot, lambda: window.library_model.rowCount() > 0, 30, "the starter model")
        return window

    yield factory
    for window in windows:
        window.close()
        window.deleteLater()
    _flush_deletes()
    leaked: list[QWidget] = [w for w in QApplication.topLevelWidgets() if id(w) not in before]
    assert not leaked, f"leaked top-level widgets: {[type(w).__name__ + ' ' + w.objectName() for w in leaked]}"


@pytest.fixture
def window(make_window: WindowFactory) -> MainWindow:
    return make_window()
