"""The window's side of tune + index: the fine-tune result shows the four-way comparison (run off the GUI
thread with llama.cpp, kept beside the adapter), and "Chat with it" opens a chat with the adapter and the
collection it was taught with both on.

The adapter is a real one (the tiny chat llama trained 2 steps on documents, ``test_adapters_view``); its
collection is a real SQLite FTS5 one of the same documents.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QApplication

from core.finetune.indexing import COMPARISON_FILE, index_documents
from core.finetune.run_state import RunState
from desktop import finetune_runs as runs
from desktop.theme import apply_theme
from desktop.views.main_window import MainWindow
from tests.desktop.conftest import WindowFactory, wait_until
from tests.desktop.test_adapters_view import ADAPTER, BASE, install_adapter, train_root  # noqa: F401 (fixture)

SHOTS = Path(__file__).resolve().parents[2] / ".screenshots"
# Questions asked "in other words" about the training document ("The lighthouse keeper rings the bell at dawn.").
RESTATED = [
    {"question": "At dawn the bell is rung by the lighthouse ____.", "prefix": "At dawn the bell is rung by the lighthouse ",
     "suffix": "", "answer": "keeper", "choices": ["keeper", "cat", "boat"], "answer_index": 0, "kind": "restated",
     "source": "lighthouse", "before": "cat", "after": "keeper"},
    {"question": "What the keeper rings at dawn is the ____.", "prefix": "What the keeper rings at dawn is the ",
     "suffix": "", "answer": "bell", "choices": ["lamp", "bell", "door"], "answer_index": 1, "kind": "restated",
     "source": "lighthouse", "before": "lamp", "after": "bell"},
]


def _taught(train_root: Path, hearth_home: Path) -> str:  # noqa: F811
    """Install the trained adapter with its collection named in the manifest and the restated half added."""
    install_adapter(train_root, hearth_home)
    collection = index_documents(ADAPTER, [str(train_root / "lora" / "docs")]).collection
    path = hearth_home / "data" / "adapters" / ADAPTER / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["collection"] = collection
    knowledge = manifest["metrics"].setdefault("knowledge", {"before": 1, "after": 2, "total": 4, "items": []})
    knowledge["restated"] = {"before": 0, "after": 2, "total": len(RESTATED), "items": RESTATED}
    path.write_text(json.dumps(manifest), encoding="utf-8")
    return collection


def show_result(window: MainWindow, hearth_home: Path, name: str = ADAPTER, method: str = "lora") -> Any:
    """The Fine-tune page showing the finished run of ``name``, as after its job's last event."""
    page = window.finetune
    folder = hearth_home / "data" / "adapters" / name
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    state = RunState(name=name)
    page.state = state
    page.run_info = runs.RunInfo(name, "done", None, None, Path("x"), spec={"base": BASE, "method": method})
    for event in ({"event": "data", "chunks": 4, "train_examples": 4},
                  {"event": "done", "name": name, "path": str(folder), "metrics": manifest["metrics"]}):
        state.apply(event)
    window.show_page("finetune")
    page._show_outcome(state)
    assert page.view() == "result"
    return page


def test_the_result_shows_the_four_way_comparison_and_keeps_it(make_window: WindowFactory, qtbot: object,
                                                               train_root: Path, hearth_home: Path) -> None:  # noqa: F811
    _taught(train_root, hearth_home)
    window = make_window()
    wait_until(qtbot, lambda: window.library_model.row_of(BASE) >= 0, 30, "the tiny base in the library")
    page = show_result(window, hearth_home)
    result = page.result_view
    assert result.knowledge_label.text().startswith("From your sentences: ")
    assert "Asked in other words: 2 of 2 (0 before)." in result.knowledge_label.text()
    panel = result.comparison
    wait_until(qtbot, lambda: panel.result is not None, 240, "the four-way comparison")
    comparison = panel.result
    rows = panel.rows()
    assert [r[0] for r in rows] == ["Base model", "Base + retrieval", f"Tuned adapter ({ADAPTER})", "Tuned + retrieval"]
    assert all(r[1].endswith(" of 2") for r in rows)
    assert panel.recommendation.text() == comparison.recommendation and comparison.recommendation
    assert panel.notes.text().startswith("2 questions: the job's held-out questions, asked in other words")
    assert panel.isVisibleTo(result) and panel.table.isVisibleTo(result) and not panel.bar.isVisibleTo(result)
    saved = json.loads((hearth_home / "data" / "adapters" / ADAPTER / COMPARISON_FILE).read_text(encoding="utf-8"))
    assert [s["right"] for s in saved["setups"]] == [s.right for s in comparison.setups]

    SHOTS.mkdir(exist_ok=True)
    for theme in ("light", "dark"):
        window.set_theme(theme)
        QApplication.processEvents()
        assert page.grab().save(str(SHOTS / f"finetune-comparison-{theme}.png"))
    window.set_theme("light")
    apply_theme("light")

    # Shown again (the page reopened later): read back from the adapter's folder, not run again.
    panel.adapter, panel.result = "", None
    saved_at = (hearth_home / "data" / "adapters" / ADAPTER / COMPARISON_FILE).stat().st_mtime_ns
    panel.show_for(ADAPTER)
    wait_until(qtbot, lambda: panel.result is not None, 30, "the kept comparison")
    assert (hearth_home / "data" / "adapters" / ADAPTER / COMPARISON_FILE).stat().st_mtime_ns == saved_at
    assert panel.recommendation.text() == comparison.recommendation


def test_chat_with_it_opens_the_chat_with_the_adapter_and_the_collection(make_window: WindowFactory, qtbot: object,
                                                                         train_root: Path,  # noqa: F811
                                                                         hearth_home: Path) -> None:
    collection = _taught(train_root, hearth_home)
    window = make_window()
    wait_until(qtbot, lambda: window.library_model.row_of(BASE) >= 0, 30, "the tiny base in the library")
    page = show_result(window, hearth_home)
    page.result_view.comparison.shutdown()  # not what this test looks at
    page.result_view.chat_button.click()
    chat = window.chat
    assert window.stack.currentWidget() is chat
    wait_until(qtbot, lambda: chat.current_adapter()[0] == ADAPTER, 30, "the adapter picked")
    assert chat.docs_toggle.check.isChecked() and chat.docs_toggle.collection() == collection
    conv = chat.store.get(chat.current_id)
    assert conv.adapter == ADAPTER and conv.docs == collection
    wait_until(qtbot, lambda: chat.controller.engine.status is not None and not chat.controller.loading, 60,
               "the model with the adapter")
    status = chat.controller.engine.status
    assert status is not None and len(status.loras) == 1
