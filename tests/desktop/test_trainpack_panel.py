"""The Fine-tune page without the training packages: the offer to install the training pack.

The app here is a source install with torch, so ``HEARTH_TRAINPACK_ONLY=1`` makes it ignore them, as
the installed app (which never has them) does. pip really runs: the download size comes from its
dry run against this machine's registries, and the failed install from an index that refuses
connections. A full install, and training with it, runs in packaging/package_test.sh.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QApplication

from core import trainpack
from core.library import Library
from desktop.models.library import LibraryTableModel
from desktop.ops import Executor
from desktop.theme import apply_theme
from desktop.views.finetune_page import FinetunePage
from tests.desktop.conftest import wait_until
from tests.fixtures.dead_index import use_dead_pip_index
from tests.fixtures.tiny_hf import write_tiny_chat_llama

SHOTS = Path(__file__).resolve().parents[2] / ".screenshots"


@pytest.fixture
def page(qtbot: Any, hearth_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FinetunePage]:
    monkeypatch.setenv(trainpack.ONLY_ENV, "1")
    monkeypatch.setenv(trainpack.INDEX_ENV, "")
    library = Library(discover_hf_cache=False)
    library.import_file(write_tiny_chat_llama(tmp_path / "tiny-chat.gguf"), mode="link", name="tiny-chat")
    model = LibraryTableModel()
    model.set_entries(library.models(include_discovered=False))
    pool = Executor(2, "test-trainpack")
    page = FinetunePage(model, pool)
    qtbot.addWidget(page)
    page.resize(1180, 820)
    page.show()
    yield page
    page.shutdown()
    pool.shutdown(wait=False)
    apply_theme("light")


def shot(page: FinetunePage, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    for theme in ("light", "dark"):
        page.set_palette(apply_theme(theme))
        QApplication.processEvents()
        assert page.grab().save(str(SHOTS / f"finetune-{name}-{theme}.png"))
    page.set_palette(apply_theme("light"))


def test_the_page_offers_the_pack_then_reports_a_failed_install_and_retries(
        qtbot: Any, page: FinetunePage, monkeypatch: pytest.MonkeyPatch) -> None:
    panel = page.form.pack_panel
    wait_until(qtbot, lambda: panel.isVisible(), 10, "the training-pack offer")
    assert not page.form.pack_ready and not page.form.start_button.isEnabled()
    assert page.form.reason_label.text() == "Install the training pack above first."
    assert "CPU build" in panel.about.text() and "not touched" in panel.about.text()
    # The size is pip's own answer for this machine (torch alone is well over 100 MB).
    wait_until(qtbot, lambda: "checking" not in panel.size_label.text(), 300, "the download size")
    assert "MB" in panel.size_label.text() or "GB" in panel.size_label.text(), panel.size_label.text()
    shot(page, "trainpack-offer")

    use_dead_pip_index(monkeypatch)
    panel.install_button.click()
    assert panel.installing and not panel.install_button.isEnabled()
    # The first report comes before pip starts (which takes a second or more): the bar and its words show.
    wait_until(qtbot, lambda: panel.progress.value() > 0, 30, "the first progress report")
    assert panel.installing and panel.progress.isVisible() and "Finding torch" in panel.status.text()
    shot(page, "trainpack-installing")
    wait_until(qtbot, lambda: not panel.installing, 300, "the failed install")
    assert "could not be installed" in panel.status.text() and "try again" in panel.status.text()
    assert panel.install_button.text() == "Try again" and panel.install_button.isEnabled()
    assert trainpack.ready() is None and not list(trainpack.pack_root().glob(".partial-*"))
    assert not page.form.start_button.isEnabled()
    shot(page, "trainpack-failed")

    # Once the packages import (here: this Python's own again), the offer goes and the form works.
    monkeypatch.delenv(trainpack.ONLY_ENV)
    panel.check()
    assert not panel.isVisible() and page.form.pack_ready
    wait_until(qtbot, lambda: page.form.reason_label.text() != "Install the training pack above first.", 10,
               "the form to take over")
