"""A full fine-tune's result (``--method full``: a whole model, not an adapter) in the window: "Chat with it" makes
it a model of My Models once and opens a chat on it; "Compare with base" puts the two models side by side.
Trained for real, 2 steps on a tiny llama in a child process; screenshots of the result after it, light and dark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.finetune.run_state import RunState
from core.library import Library
from desktop import finetune_runs as runs
from desktop.views.main_window import MainWindow
from tests.desktop.conftest import WindowFactory, wait_until

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / ".screenshots"
BASE = "tiny-chat"
TUNED = "my-notes-full"


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(tiny base GGUF, the full fine-tune's folder): 2 steps of ``--method full`` on a document."""
    from tests.fixtures.tiny_hf import write_tiny_chat_llama

    root = tmp_path_factory.mktemp("full-train")
    gguf = write_tiny_chat_llama(root / f"{BASE}.gguf")
    docs = root / "docs"
    docs.mkdir()
    (docs / "lighthouse.md").write_text("The lighthouse keeper rings the bell at dawn. " * 30, encoding="utf-8")
    spec = root / "spec.json"
    spec.write_text(json.dumps({
        "base": str(gguf), "name": TUNED, "docs": [str(docs)], "method": "full", "max_steps": 2, "epochs": 3,
        "lr": 5e-3, "seq_len": 64, "batch": 2, "grad_accum": 1, "samples": 1, "sample_tokens": 4, "save_every": 0}))
    done = subprocess.run([sys.executable, "-m", "core.jobs", "finetune", str(spec)], cwd=ROOT,
                          env={**os.environ, "HEARTH_HOME": str(root / "home")}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return gguf, root / "home" / "data" / "adapters" / TUNED


def _show_result(window: MainWindow, folder: Path) -> object:
    page = window.finetune
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    state = RunState(name=TUNED)
    page.state = state
    page.run_info = runs.RunInfo(TUNED, "done", None, None, Path("x"), spec={"base": BASE, "method": "full"})
    for event in ({"event": "data", "chunks": 4, "train_examples": 4},
                  {"event": "done", "name": TUNED, "path": str(folder), "metrics": manifest["metrics"]}):
        state.apply(event)
    window.show_page("finetune")
    page._show_outcome(state)
    assert page.view() == "result"
    return page


def test_chat_with_a_full_fine_tune_makes_it_a_model_once(make_window: WindowFactory, qtbot: object,
                                                          full_run: tuple[Path, Path], hearth_home: Path) -> None:
    import shutil

    gguf, folder = full_run
    assert (folder / "config.json").is_file() and not (folder / "adapter_config.json").exists()
    shutil.copytree(folder, hearth_home / "data" / "adapters" / TUNED)
    Library().import_file(gguf, mode="copy", name=BASE)
    window = make_window()
    wait_until(qtbot, lambda: window.library_model.row_of(BASE) >= 0, 30, "the tiny base in the library")
    page = _show_result(window, hearth_home / "data" / "adapters" / TUNED)
    page.result_view.comparison.shutdown()  # not what this test looks at

    before = {e.name for e in Library().models()}
    page.result_view.chat_button.click()
    chat = window.chat
    wait_until(qtbot, lambda: window.stack.currentWidget() is chat, 60, "the chat on the new model")
    made = [e.name for e in Library().models() if e.name not in before]
    assert len(made) == 1 and TUNED in made[0]
    entry = chat.current_entry()
    assert entry is not None and entry.name == made[0]
    assert chat.current_adapter()[0] == ""  # a whole model: no adapter on top
    assert page.result_view.export_label.text() == f"Added “{made[0]}” to My Models."
    window.show_page("finetune")
    SHOTS.mkdir(exist_ok=True)
    for theme in ("light", "dark"):
        window.set_theme(theme)
        qtbot.wait(120)  # type: ignore[attr-defined]
        assert window.grab().save(str(SHOTS / f"finetune-full-result-{theme}.png"))
    window.set_theme("system")

    page.result_view.compare_button.click()  # the same model again, not a second copy
    wait_until(qtbot, lambda: window._compare is not None and window.stack.currentWidget() is chat, 60,
               "the comparison")
    left, right = window._compare.view.sides()
    assert (left.model, right.model) == (BASE, made[0]) and not right.adapter
    assert [e.name for e in Library().models() if e.name not in before] == made
