"""The Discover page without a network: within 2 seconds it says the Hub is unreachable and the library still works."""

from __future__ import annotations

import time

import pytest
from PySide6.QtWidgets import QApplication

from desktop.views.main_window import MainWindow
from tests.core.test_offline import ENDPOINTS, RETRY_WORDS


@pytest.mark.parametrize("kind", list(ENDPOINTS))
def test_discover_says_the_hub_is_unreachable_within_two_seconds(
    kind: str, window: MainWindow, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", ENDPOINTS[kind]())
    started = time.monotonic()
    window.show_page("discover")
    page = window.discover
    while not page.banner.text and time.monotonic() - started < 10:
        QApplication.processEvents()
        time.sleep(0.01)
    seconds = time.monotonic() - started
    assert page.banner.text, "no message after 10 s"
    assert seconds < 2.0, f"the message took {seconds:.1f} s"
    assert "unreachable" in page.banner.text and "models already in the library still work" in page.banner.text
    assert page.results.rowCount() == 0 and page.search_button.isEnabled()
    assert not any(word in capfd.readouterr().err for word in RETRY_WORDS)
