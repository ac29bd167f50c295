"""Start-up: the window shows with only the chat built; every other page is built the first time it is opened.

What the window imports is checked in a fresh interpreter (a test process has imported everything already);
how long start-up takes is ``bench/startup.py``'s business, not a test's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from core.docs import build_context, question_with_context
from core.docs.context import read_docs_message
from core.docs.search import Passage
from desktop.views.discover_page import DiscoverPage
from desktop.views.downloads_page import DownloadsPage
from desktop.views.finetune_page import FinetunePage
from desktop.views.knowledge_page import KnowledgePage
from desktop.views.main_window import PAGES, MainWindow
from desktop.views.models_page import ModelsPage
from desktop.views.settings_page import SettingsPage
from tests.desktop.conftest import WindowFactory, wait_until
from tests.fixtures.import_check import ROOT

# Modules the shown window must not have imported: each is loaded by the page or the feature that needs it.
HEAVY = ("numpy", "torch", "transformers", "llama_cpp", "core.docs.store", "core.docs.search", "core.docs.vectors",
         "core.finetune.spec", "desktop.views.finetune_page", "desktop.views.knowledge_page",
         "desktop.views.discover_page", "desktop.views.downloads_page", "desktop.views.models_page",
         "desktop.views.settings_page")

# Runs the window as ``hearth`` does (desktop.app.main), reopens the last chat after the first frame, then
# reports which modules are loaded once the start-up work is over (the starter model registered).
_SHOWN = """
import json, sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
import desktop.app  # what `hearth` imports before the window
app = QApplication([])
from desktop.views.main_window import MainWindow
window = MainWindow()
report = {}

def check():
    if window.library_model.rowCount() == 0 or window.chat.current_id is None or not window.chat.docs_toggle.collection():
        QTimer.singleShot(50, check)
        return
    report["loaded"] = [m for m in HEAVY if m in sys.modules]
    report["built"] = sorted(window._built)
    report["page"] = window.current_page()
    report["transcript"] = window.chat.current_id
    report["docs"] = window.chat.docs_toggle.collection()
    app.quit()

window.first_painted.connect(lambda: QTimer.singleShot(0, check))
window.show()
QTimer.singleShot(60_000, app.quit)
app.exec()
window.shutdown()
print("REPORT " + json.dumps(report))
"""


def _first_start(home: Path, starter: Path) -> dict[str, object]:
    """Start the window in a new process on ``home`` (the starter model and a chat asked with documents).

    The starter model is registered beforehand: registering a new model file reads its tensors with the
    ``gguf`` package (numpy), which is the library's work, not start-up's."""
    models = home / "data" / "models"
    models.mkdir(parents=True)
    os.link(starter, models / starter.name)
    env = dict(os.environ, HEARTH_HOME=str(home), QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1")
    setup = (
        "import sys; from core.chats import ChatStore, Message; from core.paths import get_paths\n"
        "store = ChatStore(get_paths().ensure().chats_db)\n"
        "c = store.create(title='Lighthouse', model='starter'); store.update(c.id, docs='lighthouse')\n"
        "store.add_message(c.id, Message(role='user', content=sys.argv[1]))\n"
        "store.add_message(c.id, Message(role='assistant', content='In 1871 [1].', finish_reason='stop'))\n"
        "store.close()\n"
        "from core.docs import DocsLibrary\n"
        "DocsLibrary().create('lighthouse').close()\n"
        "from core.library import Library\n"  # registered already, as a returning user's starter model is
        "Library().register(get_paths().models / sys.argv[2], name='starter', source='starter')\n"
    )
    passage = Passage(text="The keeper lit the lamp in 1871.", file="keeper.md", location="lines 1-2", score=1.0)
    asked = question_with_context("When was the lamp lit?", build_context([passage], 512, lambda t: len(t.split())))
    assert read_docs_message(asked) is not None  # a message the chat page reads back as asked with documents
    subprocess.run([sys.executable, "-c", setup, asked, starter.name], cwd=ROOT, env=env, check=True, timeout=120)
    code = f"HEAVY = {HEAVY!r}\n{_SHOWN}"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=180)
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert result.returncode == 0 and lines, result.stdout + result.stderr[-3000:]
    report: dict[str, object] = json.loads(lines[-1][len("REPORT "):])
    return report


def test_the_shown_window_has_built_only_the_chat_and_imported_nothing_heavy(
    tmp_path: Path, starter_model: Path
) -> None:
    report = _first_start(tmp_path / "home", starter_model)
    assert report.get("loaded") == [], report  # checked after the first frame and the start-up work
    assert report["built"] == ["chat"] and report["page"] == "chat"
    assert report["transcript"] is not None  # the chat asked with documents was reopened without them,
    assert report["docs"] == "lighthouse"  # and it is still on with its collection (listed without the store)


PAGE_TYPES = {"discover": DiscoverPage, "downloads": DownloadsPage, "models": ModelsPage,
              "knowledge": KnowledgePage, "finetune": FinetunePage, "settings": SettingsPage}


def test_each_page_is_built_when_first_opened_from_the_sidebar_and_works(
    make_window: WindowFactory, qtbot: object
) -> None:
    window: MainWindow = make_window()
    assert not any(window.is_built(name) for name in PAGE_TYPES)
    for name in PAGES:
        window.nav_buttons[name].click()
        page = window.stack.currentWidget()
        assert window.current_page() == name and window.is_built(name)
        assert page is window.page(name) and page.isVisible()
        if name in PAGE_TYPES:
            assert isinstance(page, PAGE_TYPES[name])
        assert window.stack.count() == len(PAGES)  # the holder gave its place to the page
    # Each page does its first-open work: Discover searches, My Models lists the library, Knowledge lists
    # collections (none: its empty state), Fine-tune shows its form with the library's models, Settings detects.
    assert window.discover._searched  # its first search started (its results are test_pages.py's business)
    assert window.models.table.model().rowCount() == window.library_model.rowCount() > 0
    wait_until(qtbot, lambda: not window.knowledge.busy and window.knowledge.stack.currentIndex() == 0, 20,
               "the collections listed")
    assert window.finetune.view() == "form"
    wait_until(qtbot, lambda: "Memory" in window.settings_page.hardware_label.text(), 60, "hardware detection")
    # Built once: opening a page again shows the same widget, and the theme reaches pages built later.
    models = window.models
    window.show_page("chat")
    window.show_page("models")
    assert window.models is models and window.stack.currentWidget() is models
    window.set_theme("dark")
    assert window.finetune.palette_ is window.palette_ and window.knowledge.palette_ is window.palette_
    window.set_theme("light")


def test_a_page_needed_elsewhere_is_built_then_without_being_opened(
    make_window: WindowFactory, qtbot: object, tmp_path: Path
) -> None:
    window: MainWindow = make_window()
    window.finetune_on([str(tmp_path / "notes.md")])  # Knowledge's "Fine-tune on these files"
    assert window.current_page() == "finetune" and window.finetune.form.paths == [str(tmp_path / "notes.md")]
    assert not window.is_built("knowledge") and not window.is_built("models")
    window.open_in_chat(window.library_model.entry(0).name)  # My Models' "Open in chat", from any page
    assert window.current_page() == "chat"
    assert not window.is_built("models")
