"""Every page's empty state at the window's smallest size, light and dark: each shown label gets the height
its wrapped text needs and lies inside its page, no page scrolls sideways, and no empty table pushes its
columns out of sight."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QAbstractScrollArea, QApplication, QLabel, QScrollArea, QTableView, QWidget

from desktop.views.main_window import PAGES, MainWindow
from tests.desktop.conftest import WindowFactory, wait_until


def _settle(page: QWidget) -> None:
    for _ in range(5):
        QApplication.processEvents()
    page.layout().activate() if page.layout() is not None else None
    QApplication.processEvents()


def _inside_a_scroll_area(widget: QWidget, page: QWidget) -> bool:
    parent = widget.parentWidget()
    while parent is not None and parent is not page:
        if isinstance(parent, QAbstractScrollArea):
            return True
        parent = parent.parentWidget()
    return False


def _label_problems(page: QWidget) -> list[str]:
    problems = []
    page_rect = page.rect()
    for label in page.findChildren(QLabel):
        if not label.isVisibleTo(page) or not label.text().strip():
            continue
        what = f"{label.text()[:50]!r}"
        if label.wordWrap():
            needed = label.heightForWidth(label.width())
            if needed > label.height():
                problems.append(f"{what}: {label.height()} px high for {needed} px of wrapped text")
        elif label.sizeHint().height() > label.height():
            problems.append(f"{what}: {label.height()} px high for a {label.sizeHint().height()} px line")
        if not _inside_a_scroll_area(label, page):  # a scrolled label may lie past the viewport, by design
            top_left = label.mapTo(page, label.rect().topLeft())
            bottom_right = label.mapTo(page, label.rect().bottomRight())
            if not (page_rect.contains(top_left) and page_rect.contains(bottom_right)):
                problems.append(f"{what}: outside its page ({top_left.x()},{top_left.y()})-"
                                f"({bottom_right.x()},{bottom_right.y()}) of {page_rect.width()}x{page_rect.height()}")
    for area in page.findChildren(QScrollArea):  # a page that scrolls sideways cuts its cards at the right
        if area.isVisibleTo(page) and area.widget() is not None and area.horizontalScrollBar().isVisible():
            problems.append(f"scrolls sideways: its content needs {area.widget().minimumSizeHint().width()} px "
                            f"of {area.viewport().width()} px")
    for table in page.findChildren(QTableView):
        header = table.horizontalHeader()
        if table.isVisibleTo(page) and header.length() > table.viewport().width() + 1 and not table.model().rowCount():
            problems.append(f"an empty table's columns ({header.length()} px) overflow its {table.viewport().width()} px")
    return problems


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_empty_state_fits_at_the_smallest_window_size(
    make_window: WindowFactory, qtbot: object, theme: str
) -> None:
    window: MainWindow = make_window()
    window.set_theme(theme)
    smallest = window.minimumSize() if window.minimumSize().width() > 0 else window.minimumSizeHint()
    window.resize(smallest)
    problems = {}
    for name in PAGES:
        if name == "discover":  # its first search is the Hub's (test_pages.py); its empty list has no text
            continue
        window.show_page(name)
        page = window.page(name)
        if name == "knowledge":
            wait_until(qtbot, lambda: not window.knowledge.busy and window.knowledge.stack.currentIndex() == 0,
                       20, "the empty Knowledge page")
        _settle(page)
        assert window.size() == smallest or window.width() <= smallest.width() + 1
        found = _label_problems(page)
        if found:
            problems[name] = found
    window.set_theme("light")
    assert not problems, problems
