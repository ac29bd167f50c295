"""Chat's Compare mode in the window, on real models: two set-ups stream, each column shows its answer and a
stats line with tokens/s; the comparison is listed once and reopens in Compare mode; one side continues as a
normal chat; the fine-tune result's "Compare with the base model" opens base vs tuned and answers with both.
Screenshots of each state, light and dark, go to /work/notes/shots (or HEARTH_SHOTS)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt

from core.chats.compare import compare_sides
from core.library import Library
from desktop.views.compare_column import CompareColumn
from desktop.views.main_window import MainWindow
from tests.desktop.conftest import WindowFactory, wait_until
from tests.desktop.test_adapters_view import ADAPTER, BASE, install_adapter, train_root  # noqa: F401 (fixture)

SHOTS = Path(os.environ.get("HEARTH_SHOTS", "/work/notes/shots"))


def _shoot(window: MainWindow, qtbot: Any, stem: str, themes: tuple[str, ...] = ("light", "dark")) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for theme in themes:
        window.set_theme(theme)
        qtbot.wait(150)
        assert window.grab().save(str(SHOTS / f"{stem}-{theme}.png"))


def _greedy(column: CompareColumn, max_tokens: int = 8) -> None:
    editors = column.setup.form.editors
    editors["temperature"].setValue(0)
    editors["max_tokens"].setValue(max_tokens)
    editors["n_ctx"].setValue(256)
    editors["n_threads"].setValue(2)


def _pick(column: CompareColumn, name: str) -> None:
    picker = column.setup.model_picker
    picker.setCurrentIndex(picker.findText(name))
    column.setup._model_picked()


def _send(qtbot: Any, window: MainWindow, text: str) -> None:
    assert window._compare is not None
    view = window._compare.view
    view.composer.edit.setPlainText(text)
    qtbot.keyClick(view.composer.edit, Qt.Key.Key_Return)


def _answers(column: CompareColumn) -> list[str]:
    return [b.message.content for b in column.transcript.bubbles if b.message.role == "assistant"]


def test_two_models_stream_side_by_side_with_their_speed_reopen_and_continue(
    make_window: WindowFactory, qtbot: Any, tiny_model: Path
) -> None:
    Library().import_file(tiny_model, mode="copy", name="tiny")
    window = make_window()
    window.resize(1280, 800)
    wait_until(qtbot, lambda: window.library_model.row_of("tiny") >= 0 and window.library_model.rowCount() >= 2, 30,
               "both models in the library")
    starter = next(e.name for e in window.library_model.entries() if e.name != "tiny")
    window.chat.select_model(starter)
    window.chat.compare_button.click()  # Compare mode for the chat's model
    mode = window._compare
    assert mode is not None and mode.active and window.current_page() == "chat"
    view = mode.view
    assert view.isVisible() and not window.chat.transcript.isVisible() and window.chat.conversations.isVisible()
    assert [c.setup.side().model for c in view.columns] == [starter, starter]
    _pick(view.columns[1], "tiny")
    for column in view.columns:
        _greedy(column)
        assert column.transcript.empty.isVisible() and column.stats.text() == ""
    _shoot(window, qtbot, "compare-empty")

    chunks: dict[int, list[str]] = {0: [], 1: []}
    shot_streaming: list[str] = []

    seen: dict[str, int] = {}

    waiting_b_shows: list[list[str]] = []  # side B's questions while side A writes

    def chunk(side: int, text: str) -> None:
        chunks[side].append(text)
        if side == 0 and not chunks[1]:
            waiting_b_shows.append([b.message.content for b in view.columns[1].transcript.bubbles
                                    if b.message.role == "user"])
        theme = window.settings.theme
        seen[theme] = seen.get(theme, 0) + (side == 0)
        if seen[theme] == 3 and theme not in shot_streaming:  # side A is writing, side B waits: the streaming state
            shot_streaming.append(theme)
            window.grab().save(str(SHOTS / f"compare-streaming-{theme}.png"))

    mode.controller.side_chunk.connect(chunk)
    window.set_theme("light")
    _send(qtbot, window, "The capital of France is")
    wait_until(qtbot, lambda: mode.controller.streaming, 10, "the comparison to start")
    assert view.composer.stop_button.isVisibleTo(view) and not view.composer.send_button.isVisibleTo(view)
    wait_until(qtbot, lambda: not mode.controller.streaming, 180, "both answers")
    assert chunks[0] and chunks[1]  # both sides streamed
    assert waiting_b_shows and waiting_b_shows[0] == ["The capital of France is"]  # asked of B at once
    assert not view.banner.isVisible(), view.banner.text
    for column, chunked in zip(view.columns, (chunks[0], chunks[1]), strict=True):
        assert _answers(column) == ["".join(chunked)] and _answers(column)[0]
        assert float(column.stats.text().split(" tokens/s")[0]) > 0
        assert column.continue_button.isVisibleTo(column)
    assert "Both models stay loaded" in view.plan_label.text()
    assert mode.controller.engines.plan == "both" and mode.controller.engines.second is not None
    _shoot(window, qtbot, "compare-answered")
    window.set_theme("dark")  # a second prompt, streaming in the dark theme; both sides see the whole exchange
    _send(qtbot, window, "And of Spain?")
    wait_until(qtbot, lambda: not mode.controller.streaming, 180, "both second answers")
    assert shot_streaming == ["light", "dark"] and all(len(_answers(c)) == 2 for c in view.columns)
    window.set_theme("light")

    # Saved as a comparison: one row in the list (marked ⇆), which reopens in Compare mode.
    group = view.group
    assert group is not None
    left, right = compare_sides(window.store, group)
    rows = [window.chat.conversations.model.conversation(r) for r in range(window.chat.conversations.model.rowCount())]
    assert [r.id for r in rows] == [left.id]
    assert window.chat.conversations.model.index(0).data().startswith("⇆  The capital of France is")
    view.back_button.click()  # back to the chat: a new one (none was open), not a side of the comparison
    assert window.chat.current_id is None
    assert not mode.active and window.chat.transcript.isVisible() and not view.isVisible()
    wait_until(qtbot, lambda: mode.controller.engines.second is None, 30, "the second engine released")
    window.chat.conversations.select(left.id)  # picked in the list
    assert mode.active and view.group == group
    assert _answers(view.columns[1]) == [m.content for m in window.store.messages(right.id) if m.role == "assistant"]

    # Continue side B alone: a normal chat with its messages and set-up, the comparison unchanged.
    view.columns[1].continue_requested.emit()
    assert not mode.active
    opened = window.chat.current_id
    assert opened is not None and opened not in (left.id, right.id)
    conv = window.store.get(opened)
    assert conv.compare_group == 0 and conv.model == "tiny"
    assert [b.message.content for b in window.chat.transcript.bubbles] == [m.content for m in window.store.messages(right.id)]
    assert window.chat.current_entry() is not None and window.chat.current_entry().name == "tiny"  # type: ignore[union-attr]
    window.chat.composer.edit.setPlainText("And of Spain?")
    window.chat.send()
    wait_until(qtbot, lambda: not window.chat.controller.streaming, 120, "the continued chat's answer")
    assert len(window.store.messages(opened)) == 6 and len(window.store.messages(right.id)) == 4
    rows = [window.chat.conversations.model.conversation(r).id for r in range(window.chat.conversations.model.rowCount())]
    assert sorted(rows) == sorted([opened, left.id])


def test_the_finetune_results_button_opens_base_vs_tuned_and_both_answer(
    make_window: WindowFactory, qtbot: Any, train_root: Path, hearth_home: Path  # noqa: F811
) -> None:
    from core.finetune.run_state import RunState
    from desktop import finetune_runs as runs

    install_adapter(train_root, hearth_home)
    window = make_window()
    window.resize(1280, 800)
    wait_until(qtbot, lambda: window.library_model.row_of(BASE) >= 0, 30, "the tiny base in the library")
    window.show_page("finetune")
    page = window.finetune
    state = RunState(name=ADAPTER)
    page.state, page.run_info = state, runs.RunInfo(ADAPTER, "done", 1, None, Path("x"), spec={"base": BASE})
    state.apply({"event": "done", "name": ADAPTER, "path": str(hearth_home / "data" / "adapters" / ADAPTER),
                 "metrics": {}})
    page._show_outcome(state)
    assert page.view() == "result" and page.result_view.compare_button.isVisibleTo(page.result_view)
    page.result_view.compare_button.click()
    mode = window._compare
    assert mode is not None and mode.active and window.current_page() == "chat"
    view = mode.view
    base, tuned = view.sides()
    assert (base.model, base.adapter) == (BASE, "") and (tuned.model, tuned.adapter, tuned.adapter_scale) == (
        BASE, ADAPTER, 1.0)
    assert view.columns[1].setup.adapter_picker.currentText() == ADAPTER and view.columns[1].setup.scale.isVisibleTo(view)
    for column in view.columns:
        _greedy(column, 6)
    _send(qtbot, window, "The lighthouse keeper")
    wait_until(qtbot, lambda: not mode.controller.streaming, 180, "both answers")
    assert not view.banner.isVisible(), view.banner.text
    assert all(_answers(c) for c in view.columns) and all("tokens/s" in c.stats.text() for c in view.columns)
    assert mode.controller.engines.plan == "shared" and mode.controller.engines.second is None
    assert "only the adapter changes" in view.plan_label.text()
    engine = window.controller.engine
    assert engine.status is not None and len(engine.status.loras) == 1 and engine.status.loras[0][1] == 1.0
    left, right = compare_sides(window.store, view.group or 0)
    assert (left.adapter, right.adapter, right.adapter_scale) == ("", ADAPTER, 1.0)
    _shoot(window, qtbot, "compare-base-vs-tuned")
    window.set_theme("system")


def test_knowledges_comparison_opens_the_model_with_and_without_documents_side_by_side(
    make_window: WindowFactory, qtbot: Any, tmp_path: Path
) -> None:
    from core.docs import DocsLibrary

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "kettle.md").write_text("The blue kettle whistles when the water boils at dawn.", encoding="utf-8")
    with DocsLibrary().create("kitchen") as collection:
        collection.add([folder])
    window = make_window()
    window.show_page("knowledge")
    wait_until(qtbot, lambda: window.chat.docs_toggle.picker.findText("kitchen") >= 0, 30, "the collection listed")
    page = window.knowledge
    wait_until(qtbot, lambda: page.current == "kitchen" and page.files.rowCount() == 1 and page._job is None, 30,
               "the collection opened")  # its files listed: nothing of the page's still runs when the window closes
    comparison = page.compare
    comparison.set_collection("kitchen")
    assert comparison.side_by_side.text() == "⇆  Open side by side in Chat"
    starter = window.library_model.entry(0).name
    comparison.base_picker.setCurrentIndex(comparison.base_picker.findText(starter))
    comparison.open_side_by_side()  # the link under a comparison's result
    mode = window._compare
    assert mode is not None and mode.active and window.current_page() == "chat"
    alone, with_docs = mode.view.sides()
    assert (alone.model, alone.docs) == (starter, "") and (with_docs.model, with_docs.docs) == (starter, "kitchen")
    assert mode.view.columns[1].setup.docs.check.isChecked() and not mode.view.columns[0].setup.docs.check.isChecked()
    window.resize(1280, 800)
    mode.view.columns[0].setup.params_button.click()  # a column's parameters, open under its set-up
    assert mode.view.columns[0].setup.form_area.isVisibleTo(mode.view)
    _shoot(window, qtbot, "compare-documents-and-parameters")
    window.set_theme("system")
