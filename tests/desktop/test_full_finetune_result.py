"""A full fine-tune's result (``--method full``: a whole model, not an adapter) in the window: "Chat with it" makes
it a model of My Models once and opens a chat on it; "Compare with base" puts the two models side by side.
Trained for real, 2 steps on a tiny llama in a child process; screenshots of the result after it, light and dark."""

from __future__ import annotations

import shutil
from pathlib import Path

from core.library import Library
from tests.desktop.conftest import WindowFactory, wait_until
from tests.desktop.test_adapters_view import BASE, _shoot, train_root, trained_adapter  # noqa: F401 (fixture)
from tests.desktop.test_tune_and_index import show_result

TUNED = "my-notes-full"


def test_chat_with_a_full_fine_tune_makes_it_a_model_once(make_window: WindowFactory, qtbot: object,
                                                          train_root: Path, hearth_home: Path) -> None:  # noqa: F811
    gguf, folder = trained_adapter(train_root, "full", TUNED)
    assert (folder / "config.json").is_file() and not (folder / "adapter_config.json").exists()
    shutil.copytree(folder, hearth_home / "data" / "adapters" / TUNED)
    Library().import_file(gguf, mode="copy", name=BASE)
    window = make_window()
    wait_until(qtbot, lambda: window.library_model.row_of(BASE) >= 0, 30, "the tiny base in the library")
    page = show_result(window, hearth_home, TUNED, "full")
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
    _shoot(window, qtbot, "finetune-full-result")

    page.result_view.compare_button.click()  # the same model again, not a second copy
    wait_until(qtbot, lambda: window._compare is not None and window.stack.currentWidget() is chat, 60,
               "the comparison")
    left, right = window._compare.view.sides()
    assert (left.model, right.model) == (BASE, made[0]) and not right.adapter
    assert [e.name for e in Library().models() if e.name not in before] == made
