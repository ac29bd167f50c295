"""The Adapters tab of My Models on a real adapter (trained for 2 steps on a tiny model): listing, details,
export, standalone model, delete, a missing base and locating it; screenshots empty and with an adapter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox

from core.finetune.adapters import list_adapters
from core.library import Library
from desktop.views.adapters_view import EMPTY_TEXT, AdaptersView, CombineDialog
from desktop.views.main_window import MainWindow
from tests.desktop.conftest import WindowFactory, wait_until

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / ".screenshots"
ADAPTER = "my-notes"
BASE = "tiny-chat"
_TRAINED: dict[str, tuple[Path, Path]] = {}


def trained_adapter(root: Path, method: str = "lora", name: str = ADAPTER) -> tuple[Path, Path]:
    """(tiny base GGUF, result folder): ``method`` trained 2 steps on documents, once per test session."""
    if method not in _TRAINED:
        from tests.fixtures.tiny_hf import write_tiny_chat_llama

        work = root / method
        work.mkdir()
        gguf = write_tiny_chat_llama(work / f"{BASE}.gguf")
        docs = work / "docs"
        docs.mkdir()
        (docs / "lighthouse.md").write_text("The lighthouse keeper rings the bell at dawn. " * 30, encoding="utf-8")
        spec = work / "spec.json"
        spec.write_text(json.dumps({
            "base": str(gguf), "name": name, "docs": [str(docs)], "method": method, "max_steps": 2, "epochs": 3,
            "lr": 5e-3, "seq_len": 64, "batch": 2, "grad_accum": 1, "samples": 1, "sample_tokens": 4,
            "save_every": 0}))
        # Trained in a child process, as the app does: torch never enters this (Qt) test process, whose
        # exit crashed with torch's threads loaded beside Qt's.
        done = subprocess.run([sys.executable, "-m", "core.jobs", "finetune", str(spec)], cwd=ROOT,
                              env={**os.environ, "HEARTH_HOME": str(work / "home")}, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        _TRAINED[method] = (gguf, work / "home" / "data" / "adapters" / name)
    return _TRAINED[method]


def install_adapter(root: Path, hearth_home: Path, *names: str) -> Path:
    """Put the trained adapter (under each of ``names``) and its base model into this test's library."""
    gguf, folder = trained_adapter(root)
    for name in names or (ADAPTER,):
        shutil.copytree(folder, hearth_home / "data" / "adapters" / name)
    Library().import_file(gguf, mode="copy", name=BASE)
    return gguf


@pytest.fixture(scope="session")
def train_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("adapter-train")


def _view(window: MainWindow) -> AdaptersView:
    window.show_page("models")
    window.models.tabs.setCurrentWidget(window.models.adapters)
    return window.models.adapters


def _wait_rows(qtbot: object, view: AdaptersView, n: int) -> None:
    wait_until(qtbot, lambda: view.model.rowCount() == n, 20, f"{n} adapter rows")


def _wait_idle(qtbot: object, view: AdaptersView, timeout: float = 60) -> None:
    wait_until(qtbot, lambda: not view.busy, timeout, "the adapter operation")


def _shoot(window: MainWindow, qtbot: object, stem: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    for theme in ("light", "dark"):
        window.set_theme(theme)
        qtbot.wait(120)  # type: ignore[attr-defined]
        assert window.grab().save(str(SHOTS / f"{stem}-{theme}.png"))
    window.set_theme("system")


def test_no_adapters_says_where_they_come_from(make_window: WindowFactory, qtbot: object) -> None:
    window = make_window()
    window.resize(1280, 800)
    view = _view(window)
    qtbot.wait(200)  # type: ignore[attr-defined]
    assert view.model.rowCount() == 0
    assert view.stack.currentWidget() is view.empty and view.empty.text() == EMPTY_TEXT
    assert not view.delete_button.isEnabled() and not view.chat_button.isEnabled()
    _shoot(window, qtbot, "adapters-empty")
    window.models.tabs.setCurrentIndex(0)
    _shoot(window, qtbot, "models-tab")


def test_the_table_and_details_show_the_manifest_and_export_writes_a_gguf(
    make_window: WindowFactory, qtbot: object, train_root: Path, hearth_home: Path
) -> None:
    install_adapter(train_root, hearth_home)
    window = make_window()
    window.resize(1280, 800)
    view = _view(window)
    _wait_rows(qtbot, view, 1)
    wait_until(qtbot, lambda: view.model.row(0).base is not None, 20, "the base model matched")
    cells = [view.model.index(0, c).data() for c in range(view.model.columnCount())]
    assert cells[:4] == [ADAPTER, BASE, "lora", "1 document"]
    assert cells[6].startswith("loss ") and "→" in cells[6]
    view.select(ADAPTER)
    text = view.details.toPlainText()
    for words in ("Base", BASE, "Method", "lora (rank 16, alpha 32", "Objective", "pretrain", "1 document(s): lighthouse.md",
                  "Steps", "Eval loss", "before", "after", "Answers before and after training", "Size on disk"):
        assert words in text, words
    assert view.chat_button.isEnabled() and not view.missing.isVisible()
    _shoot(window, qtbot, "adapters")

    view.export_selected()
    assert view.busy
    _wait_idle(qtbot, view)
    exported = hearth_home / "data" / "adapters" / ADAPTER / f"{ADAPTER}-lora-f32.gguf"
    assert exported.is_file() and exported.stat().st_size > 0
    assert str(exported) in view.work_label.text() and not view.banner.text
    from core.library import read_gguf_info

    assert read_gguf_info(exported, check_architecture=False).general_type == "adapter"
    wait_until(qtbot, lambda: "GGUF export" in view.details.toPlainText(), 10, "the export in the details")

    # Chat with it asks the window for a chat on the base model with the adapter.
    asked: list[tuple[str, str]] = []
    view.chat_requested.connect(lambda b, a: asked.append((b, a)))
    view.chat_button.click()
    assert asked == [(BASE, ADAPTER)]


def test_a_standalone_model_lands_in_my_models(
    make_window: WindowFactory, qtbot: object, train_root: Path, hearth_home: Path
) -> None:
    install_adapter(train_root, hearth_home)
    window = make_window()
    view = _view(window)
    _wait_rows(qtbot, view, 1)
    wait_until(qtbot, lambda: view.model.row(0).base is not None, 20, "the base model matched")
    view.select(ADAPTER)
    changed: list[int] = []
    window.library_changed.connect(lambda: changed.append(1))
    view.make_standalone("F16", "tiny-notes")
    _wait_idle(qtbot, view, 120)
    assert not view.banner.text, view.banner.text
    wait_until(qtbot, lambda: window.library_model.row_of("tiny-notes") >= 0, 20, "the merged model in the library")
    assert changed and "tiny-notes" in view.work_label.text()
    assert window.library_model.entry(window.library_model.row_of("tiny-notes")).file_type == "F16"


def test_delete_asks_first_and_removes_only_that_adapter(
    make_window: WindowFactory, qtbot: object, train_root: Path, hearth_home: Path
) -> None:
    install_adapter(train_root, hearth_home, ADAPTER, "other-notes")
    window = make_window()
    view = _view(window)
    _wait_rows(qtbot, view, 2)
    view.select(ADAPTER)
    box = view.delete_selected()
    assert isinstance(box, QMessageBox)
    assert ADAPTER in box.text() and str(hearth_home / "data" / "adapters" / ADAPTER) in box.informativeText()
    assert "other adapters and your chats stay" in box.informativeText()
    cancel = box.button(QMessageBox.StandardButton.Cancel)
    cancel.click()
    qtbot.wait(50)  # type: ignore[attr-defined]
    assert len(list_adapters()) == 2
    box = view.delete_selected()
    assert isinstance(box, QMessageBox)
    next(b for b in box.buttons() if b.text() == "Delete").click()
    _wait_rows(qtbot, view, 1)
    assert [a.name for a in list_adapters()] == ["other-notes"]
    assert view.model.row(0).name == "other-notes"
    assert not (hearth_home / "data" / "adapters" / ADAPTER).exists()
    assert window.library_model.row_of(BASE) >= 0  # the base model stays
    assert "Deleted my-notes" in view.work_label.text()


def test_a_missing_base_is_shown_and_locating_the_file_brings_it_back(
    make_window: WindowFactory, qtbot: object, train_root: Path, hearth_home: Path, tiny_model: Path
) -> None:
    gguf = install_adapter(train_root, hearth_home)
    window = make_window()
    view = _view(window)
    _wait_rows(qtbot, view, 1)
    wait_until(qtbot, lambda: window.library_model.row_of(BASE) >= 0, 20, "the base model listed")
    window.delete_model(BASE)
    wait_until(qtbot, lambda: window.library_model.row_of(BASE) < 0, 20, "the base model removed")
    wait_until(qtbot, lambda: view.model.rowCount() == 1 and view.model.row(0).base is None, 20, "the base missing")
    assert "missing" in view.model.index(0, 1).data()
    view.select(ADAPTER)
    words = f"Base model missing: {BASE} — import it again or locate the file."
    assert view.missing.isVisibleTo(view) and view.missing_label.text() == words
    assert words in view.details.toPlainText()
    assert not view.chat_button.isEnabled() and not view.export_button.isEnabled() and view.locate_button.isEnabled()

    view.locate_base(str(tiny_model))  # another model: refused by its SHA-256, nothing imported
    _wait_idle(qtbot, view)
    assert "is not the model" in view.banner.text and window.library_model.row_of(BASE) < 0

    view.locate_base(str(gguf))
    _wait_idle(qtbot, view)
    assert not view.banner.text, view.banner.text
    wait_until(qtbot, lambda: view.model.row(0).base is not None, 20, "the base found again")
    assert window.library_model.row_of(BASE) >= 0 and not view.missing.isVisibleTo(view)
    assert view.chat_button.isEnabled()


def test_combine_with_another_adapter_of_the_same_base_makes_a_new_adapter(
    make_window: WindowFactory, qtbot: object, train_root: Path, hearth_home: Path
) -> None:
    install_adapter(train_root, hearth_home, ADAPTER, "other-notes")
    window = make_window()
    view = _view(window)
    _wait_rows(qtbot, view, 2)
    wait_until(qtbot, lambda: all(r.base is not None for r in view.model.rows()), 20, "the base matched")
    view.select(ADAPTER)
    assert view.combine_button.isEnabled()
    dialog = CombineDialog(view.selected(), view.partners(view.selected()), view)  # type: ignore[arg-type]
    assert dialog.other() == "other-notes" and dialog.name() == f"{ADAPTER}+other-notes" and dialog.weights() == (1.0, 1.0)
    dialog.deleteLater()
    view.combine("other-notes", (0.5, 0.25), "mixed")
    _wait_idle(qtbot, view, 180)
    assert not view.banner.text, view.banner.text
    _wait_rows(qtbot, view, 3)
    view.select("mixed")
    text = view.details.toPlainText()
    assert "Combined from" in text and f"{ADAPTER} ×0.5, other-notes ×0.25" in text and "combined" in text
    assert view.model.row(view.model.row_of("mixed")).base is not None
    view.combine("other-notes", (1.0, 1.0), "mixed")  # the name is taken: said in place
    _wait_idle(qtbot, view, 60)
    assert "already exists" in view.banner.text


def test_a_knowledge_check_is_the_score_shown_first(qapp: object, tmp_path: Path) -> None:
    from core.finetune.adapters import AdapterEntry
    from desktop.models.adapters import AdapterTableModel
    from desktop.views.adapters_view import StandaloneDialog, details_html

    manifest = {"base": {"name": "gemma-3-270m-q4_k_m", "sha256": "ab" * 32}, "method": {"name": "lora"},
                "objective": "pretrain", "data": {"data": "/data/notes.jsonl"}, "created_at": 1_700_000_000,
                "metrics": {"before": {"eval_loss": 2.5}, "after": {"eval_loss": 1.25},
                            "knowledge": {"before": 3, "after": 9, "total": 12, "items": []}}}
    model = AdapterTableModel()
    model.set_adapters([(AdapterEntry("facts", tmp_path, manifest), 2048)])
    assert [model.index(0, c).data() for c in range(model.columnCount())][1:] == [
        "⚠ missing: gemma-3-270m-q4_k_m", "lora", "notes.jsonl", "2023-11-14", "2.0 KB", "3 → 9 of 12"]
    row = model.row(0)
    html = details_html(row)
    assert html.index(">Knowledge check<") < html.index(">Base<") and "From your sentences: 9 of 12 (3 before)" in html
    assert "Base model missing: gemma-3-270m-q4_k_m — import it again or locate the file." in html
    assert StandaloneDialog(row).quant() == "Q4_K_M"  # the default when the base's type is not known
