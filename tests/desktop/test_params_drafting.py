"""The Drafting choice of the parameters panel: its rows, its values, a drafted answer's stats, screenshots."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from core.settings import ChatParameters
from desktop.views.main_window import MainWindow
from tests.desktop.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / ".screenshots"
PARAGRAPH = ("The lighthouse keeper climbed the narrow stairs every evening at dusk. He trimmed the wick, polished "
             "the great lens and wrote the weather in his logbook.")


def test_drafting_choice_shows_its_rows_and_round_trips(window: MainWindow) -> None:
    form = window.chat.params.form
    assert [form.draft.itemText(i) for i in range(form.draft.count())] == ["Off", "Prompt lookup", "Draft model"]
    starter = window.library_model.entry(0)
    assert form.draft_model.findData(str(starter.path)) >= 0  # the library's models are offered
    form.set_values(ChatParameters())
    assert not form.draft_model.isVisibleTo(form) and not form.editors["draft_max"].isVisibleTo(form)
    form.draft.setCurrentIndex(form.draft.findData("lookup"))
    assert form.editors["draft_max"].isVisibleTo(form) and not form.draft_model.isVisibleTo(form)
    assert form.values().draft == "lookup" and form.values().sampling().draft == "lookup"
    assert form.values().load_options().draft_model is None  # lookup needs no second model
    form.draft.setCurrentIndex(form.draft.findData("model"))
    assert form.draft_model.isVisibleTo(form)
    form.draft_model.setCurrentIndex(form.draft_model.findData(str(starter.path)))
    form.editors["draft_max"].setValue(12)
    values = form.values()
    assert (values.draft, values.draft_model, values.draft_max) == ("model", str(starter.path), 12)
    assert values.load_options().draft_model == str(starter.path) and values.sampling().draft == "model"
    # A draft model that left the library is still shown (by its file name), not silently dropped.
    form.set_values(ChatParameters(draft="model", draft_model="/gone/small-model.gguf"))
    assert form.draft_model.currentText() == "small-model.gguf"
    assert form.values().draft_model == "/gone/small-model.gguf"
    # The Settings page's defaults form offers the same choice and the same models.
    defaults = window.settings_page.defaults
    assert defaults.draft.count() == 3 and defaults.draft_model.findData(str(starter.path)) >= 0


def test_a_drafted_answer_says_how_much_was_accepted(window: MainWindow, qtbot: object) -> None:
    page = window.chat
    form = page.params.form
    form.editors["temperature"].setValue(0)
    form.editors["max_tokens"].setValue(32)
    form.editors["n_ctx"].setValue(1024)
    form.editors["n_threads"].setValue(1)
    form.editors["repeat_penalty"].setValue(1.0)
    form.draft.setCurrentIndex(form.draft.findData("lookup"))
    page.composer.edit.setPlainText(f"Copy this paragraph exactly:\n\n{PARAGRAPH}")
    qtbot.keyClick(page.composer.edit, Qt.Key.Key_Return)  # type: ignore[attr-defined]
    wait_until(qtbot, lambda: not page.controller.streaming, 120, "the answer to finish")
    assert page.current_id is not None
    answer = window.store.messages(page.current_id)[-1]
    assert answer.role == "assistant" and 0 < answer.meta["accepted_tokens"] <= answer.meta["drafted_tokens"]
    shown = page.transcript.bubbles[-1].stats.text()
    assert f"drafted {answer.meta['drafted_tokens']}, accepted {answer.meta['accepted_tokens']}" in shown
    SHOTS.mkdir(exist_ok=True)
    window.resize(1280, 800)
    form.draft.setCurrentIndex(form.draft.findData("model"))
    form.draft_model.setCurrentIndex(0)
    for theme in ("light", "dark"):
        window.set_theme(theme)
        qtbot.wait(120)  # type: ignore[attr-defined]
        for name, widget in (("params-drafting", page.params), ("chat-drafting", window)):
            path = SHOTS / f"{name}-{theme}.png"
            assert widget.grab().save(str(path))
            assert QImage(str(path)).height() > 300
    window.set_theme("system")
