"""Desktop fixtures: Qt offscreen, a main window that is closed cleanly and checked for leaked windows."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QCoreApplication, QEvent
from PySide6.QtWidgets import QApplication, QWidget

from desktop.views.main_window import MainWindow

WindowFactory = Callable[[], MainWindow]


def wait_until(qtbot: object, predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    """Process events until ``predicate()`` holds (the GUI keeps running meanwhile)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        QApplication.processEvents()
        time.sleep(0.01)


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
