"""The Fine-tune page on the tiny chat llama: documents in, a real job in its own process, its events live.

Slow-ish (each job imports torch in its child): one test runs a job to the end (with the screenshots and
the GUI-responsiveness check), one drives a second job through reattach, cancel, resume and a kill.
"""

from __future__ import annotations

import importlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QElapsedTimer, QMimeData, QPoint, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QLabel, QMessageBox

from core.finetune.runs import has_checkpoint, list_runs
from core.library import Library
from desktop.models.library import LibraryTableModel
from desktop.ops import Executor
from desktop.theme import apply_theme
from desktop.views.finetune_page import FinetunePage
from desktop.views.main_window import PAGES, MainWindow
from tests.desktop.conftest import WindowFactory, wait_until
from tests.fixtures.tiny_hf import write_tiny_chat_llama

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / ".screenshots"
KEEPER = ("The lighthouse of Saint Avel was built in 1887 on a granite reef. Its lamp can be seen from 32 "
          "kilometres away.\nKeeper Marguerite Olier served there for 41 years. She painted the lamp room blue every "
          "spring.\nHer cat Mistral slept beside the great Fresnel lens. The tower has 214 steps and stands 58 metres "
          "tall.\nIn 1953 a storm broke the lower windows. The supply boat from Brest came every Thursday.\n")
LOG = ("The fog horn sounds twice every 60 seconds. Olier wrote her log in green ink.\nThe lens was made in Paris "
       "by the Barbier workshop in 1885. The light was automated in 1996.\n")
FAST = {"seq_len": 64, "batch": 2, "grad_accum": 1, "lr": 5e-3, "sample_tokens": 4}


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_chat_llama(tmp_path_factory.mktemp("finetune-page") / "tiny-chat.gguf")


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "lighthouse-notes"
    folder.mkdir()
    (folder / "keeper.md").write_text(KEEPER * 6, encoding="utf-8")
    (folder / "log.txt").write_text(LOG * 6, encoding="utf-8")
    (folder / "empty.txt").write_text("", encoding="utf-8")
    return folder


@pytest.fixture
def make_page(qtbot: Any, hearth_home: Path, tiny_gguf: Path) -> Iterator[Callable[[], FinetunePage]]:
    """Pages over a library holding the tiny model; every job still running at the end is killed."""
    library = Library(discover_hf_cache=False)
    library.import_file(tiny_gguf, mode="link", name="tiny-chat")
    model = LibraryTableModel()
    model.set_entries(library.models(include_discovered=False))
    pool = Executor(3, "test-finetune")
    pages: list[FinetunePage] = []

    def factory() -> FinetunePage:
        page = FinetunePage(model, pool)
        qtbot.addWidget(page)
        page.resize(1180, 820)
        page.show()
        pages.append(page)
        return page

    yield factory
    for page in pages:
        page.shutdown()
    for run in list_runs():
        if run.state == "running" and run.pid:
            try:
                os.kill(run.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    pool.shutdown(wait=False)
    apply_theme("light")


def drop(page: FinetunePage, *paths: Path) -> None:
    """Drop files or folders on the page as a file manager would."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(QPoint(200, 200), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    page.dragEnterEvent(enter)
    assert enter.isAccepted()
    event = QDropEvent(QPointF(200, 200), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    page.dropEvent(event)


def ready(qtbot: Any, page: FinetunePage, folder: Path, **job: Any) -> None:
    drop(page, folder)
    wait_until(qtbot, lambda: page.form.scan is not None and bool(page.form.name_edit.text()), 30, "the scan")
    page.form.advanced_toggle.setChecked(True)
    page.form.advanced.job_form.set_values({**FAST, **job})
    wait_until(qtbot, lambda: page.form.start_button.isEnabled() and page.form.estimate is not None, 60,
               "the estimate")


def shot(page: FinetunePage, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    for theme in ("light", "dark"):
        page.set_palette(apply_theme(theme))
        page.run_view._dirty = True
        page.run_view._redraw()
        QApplication.processEvents()
        assert page.grab().save(str(SHOTS / f"finetune-{name}-{theme}.png"))
    page.set_palette(apply_theme("light"))


def page_text(page: FinetunePage) -> str:
    return "\n".join(label.text() for label in page.findChildren(QLabel) if label.isVisibleTo(page))


def test_nothing_usable_disables_the_button_with_the_reason(qtbot: Any, make_page: Callable[[], FinetunePage],
                                                            tmp_path: Path) -> None:
    page = make_page()
    wait_until(qtbot, lambda: page.form.base_name() == "tiny-chat", 10, "the base model")
    assert not page.form.start_button.isEnabled()
    assert "Add documents" in page.form.reason_label.text()
    shot(page, "empty")
    folder = tmp_path / "nothing"
    folder.mkdir()
    (folder / "blank.txt").write_text("", encoding="utf-8")
    (folder / "photo.png").write_bytes(b"\x89PNG\r\n")
    drop(page, folder)
    wait_until(qtbot, lambda: page.form.scan is not None, 20, "the scan")
    assert not page.form.start_button.isEnabled()
    assert page.form.reason_label.text() == page.form.scan.why_not
    assert page.form.files.topLevelItemCount() == 2
    reasons = [page.form.files.topLevelItem(i).text(4) for i in range(2)]
    assert all(r.startswith("skipped: ") for r in reasons)


def test_documents_train_live_and_the_result_shows_before_and_after(
        qtbot: Any, make_page: Callable[[], FinetunePage], docs: Path) -> None:
    page = make_page()
    # Enough steps that the live view is still training when the checks below look at it (a tiny model
    # trains thousands of tokens a second, and the job's events arrive in batches).
    steps = 80
    ready(qtbot, page, docs, max_steps=steps, samples=1, save_every=0)
    form = page.form
    rows = {form.files.topLevelItem(i).text(0): form.files.topLevelItem(i) for i in range(form.files.topLevelItemCount())}
    assert set(rows) == {"lighthouse-notes/keeper.md", "lighthouse-notes/log.txt", "lighthouse-notes/empty.txt"}
    assert rows["lighthouse-notes/keeper.md"].text(1) == "md" and int(rows["lighthouse-notes/keeper.md"].text(3).replace(",", "")) > 300
    assert rows["lighthouse-notes/empty.txt"].text(3) == "-"
    assert rows["lighthouse-notes/empty.txt"].text(4).startswith("skipped: no text")
    assert form.name_edit.text() == "lighthouse-notes"
    assert "on this machine (estimated)" in form.estimate_label.text()
    assert "2 documents" in form.scan_label.text() and "1 skipped" in form.scan_label.text()
    shot(page, "documents")

    # The GUI thread must keep running while the job trains: between two ticks of a 20 ms timer it never
    # works for over 100 ms. Its CPU time is what is measured: on a machine loaded by other processes the
    # wall-clock gaps also hold the time the scheduler gave to others (reported, with a looser bound).
    clock = QElapsedTimer()
    gaps: list[int] = []
    busy: list[float] = []
    last_cpu = [time.thread_time()]

    def tick() -> None:
        gaps.append(clock.restart())
        now = time.thread_time()
        busy.append((now - last_cpu[0]) * 1000)
        last_cpu[0] = now

    ticker = QTimer()
    ticker.setInterval(20)
    ticker.timeout.connect(tick)
    form.start_button.click()
    wait_until(qtbot, lambda: page.view() == "run", 20, "the run view")
    wait_until(qtbot, lambda: page.state is not None and page.state.step >= 3, 240, "training steps")
    clock.start()
    last_cpu[0] = time.thread_time()
    ticker.start()
    wait_until(qtbot, lambda: page.state is not None and page.state.step >= 6, 240, "more steps")
    page.run_view._redraw()
    chart = page.run_view.chart
    assert [s for s, _ in chart.train_points()][:3] == [1, 2, 3]
    assert page.run_view.numbers.text().startswith(f"Step {page.state.step} of {steps}")
    assert page.run_view.progress.value() > 0
    assert "●  Training" in page_text(page)
    ticker.stop()  # the screenshots themselves block the GUI thread
    shot(page, "training")
    clock.restart()
    last_cpu[0] = time.thread_time()
    ticker.start()
    wait_until(qtbot, lambda: page.view() == "result", 300, "the result")
    ticker.stop()
    late = sorted(gaps)[int(len(gaps) * 0.95)]
    print(f"\nGUI timer over {len(gaps)} ticks: longest gap {max(gaps)} ms (95% within {late} ms), "
          f"longest GUI work between ticks {max(busy):.0f} ms")
    assert len(gaps) >= 5 and max(busy) <= 100, f"the GUI thread worked {max(busy):.0f} ms without a break"
    assert late <= 100 and max(gaps) <= 1000, f"the GUI timer was late: {sorted(gaps)[-5:]} ms"

    state = page.state
    assert state is not None and state.outcome == "done" and len(chart.train_points()) == steps
    assert chart.eval_points()  # the final held-out measurement
    result = page.result_view
    if hasattr(importlib.import_module("core.finetune.job"), "knowledge"):  # the job runs the knowledge check
        assert state.knowledge_total
    if state.knowledge_total:
        assert result.knowledge_label.text() == (
            f"Answered {state.knowledge_before} of {state.knowledge_total} questions about your documents before, "
            f"{state.knowledge_after} of {state.knowledge_total} after.")
    assert "predicts your documents' text" in result.improvement_label.text()
    texts = page_text(page)
    assert "Before" in texts and "After" in texts and "Prompt" in texts
    shot(page, "finished")

    with qtbot.waitSignal(page.chat_requested, timeout=2000) as blocker:
        result.chat_button.click()
    assert blocker.args == ["tiny-chat", "lighthouse-notes"]

    # Export for Ollama: merged into a standalone model in the library, with a Modelfile beside it.
    result.ollama_button.click()
    wait_until(qtbot, lambda: not result.export_bar.isVisible() and bool(result.export_label.text()), 240, "the export")
    assert result.export_label.text().startswith("Added “tiny-chat-lighthouse-notes"), result.export_label.text()
    assert "ollama create" in result.export_label.text()
    merged = [m for m in Library(discover_hf_cache=False).models(include_discovered=False) if m.source == "merge"]
    assert len(merged) == 1 and Path(merged[0].path).with_suffix(".Modelfile").exists()

    result.another_button.click()
    assert page.view() == "form"


def test_reattach_refuse_cancel_resume_and_a_killed_job(qtbot: Any, make_page: Callable[[], FinetunePage],
                                                       docs: Path) -> None:
    first = make_page()
    ready(qtbot, first, docs, max_steps=400, samples=0, save_every=3)
    first.form.start_button.click()
    wait_until(qtbot, lambda: first.state is not None and first.state.step >= 2, 240, "training steps")

    # A page opened later (a window reopened) replays the log from the start and follows it live.
    second = make_page()
    wait_until(qtbot, lambda: second.view() == "run" and second.state is not None and second.state.step >= 2,
               30, "the reattached run")
    assert second.state.losses[0][0] == 1
    step = second.state.step
    wait_until(qtbot, lambda: second.state.step > step, 120, "live steps on the reattached page")

    # Two jobs at once are refused with the core's words (the form is behind the run view: no drop there).
    second.form.add_paths([str(docs)])
    wait_until(qtbot, lambda: bool(second.form.name_edit.text()) and second.form.start_button.isEnabled(), 30,
               "the second form")
    second.form.start_button.click()
    wait_until(qtbot, lambda: "already running" in second.run_view.error_panel.sentence.text(), 20, "the refusal")
    second.run_view.error_panel.hide()

    # Cancel keeps the checkpoint; Resume continues from it.
    wait_until(qtbot, lambda: has_checkpoint("lighthouse-notes"), 120, "a checkpoint")
    second.run_view.cancel_button.click()
    wait_until(qtbot, lambda: second.state.outcome == "cancelled" and second.run_view.resume_button.isVisible(),
               120, "the cancelled run")
    wait_until(qtbot, lambda: first.run_view.resume_button.isVisible(), 30, "the first page too")
    stopped_at = second.state.step
    assert f"stopped at step {stopped_at}" in second.run_view.heading.text()
    assert not second.run_view.error_panel.isVisible()
    second.run_view.resume_button.click()
    wait_until(qtbot, lambda: second.state is not None and second.state.outcome == "running"
               and second.state.step > stopped_at, 240, "the resumed run")
    steps = [s for s, _ in second.state.losses]
    assert steps[0] == 1 and steps == sorted(set(steps))  # the curve goes on from the checkpoint, no doubling back

    # A job whose process dies: one sentence, the details behind a click, the checkpoint kept.
    pid = next(r.pid for r in list_runs() if r.state == "running")
    assert pid
    wait_until(qtbot, lambda: second.state.step >= stopped_at + 4, 120, "steps after the resume")
    os.kill(pid, signal.SIGKILL)
    wait_until(qtbot, lambda: second.run_view.error_panel.isVisible(), 60, "the error")
    panel = second.run_view.error_panel
    assert panel.sentence.text().startswith("The training process stopped unexpectedly")
    assert "press Resume" in panel.sentence.text()
    assert second.run_view.resume_button.isVisible() and has_checkpoint("lighthouse-notes")
    assert "Traceback" not in page_text(second)
    assert not panel.details.isVisible()
    panel.toggle.click()
    assert panel.details.isVisible() and "Log:" in panel.details.toPlainText()
    assert "Interrupted at step" in second.run_view.heading.text()
    shot(second, "error")

    # A page opened now finds the interrupted run and offers Resume.
    third = make_page()
    wait_until(qtbot, lambda: third.view() == "run" and third.run_view.resume_button.isVisible(), 30,
               "the interrupted run on a new page")
    assert "Interrupted at step" in third.run_view.heading.text()


def test_an_existing_name_asks_replace_or_rename(qtbot: Any, make_page: Callable[[], FinetunePage], docs: Path,
                                                 hearth_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = make_page()
    ready(qtbot, page, docs)
    taken = hearth_home / "data" / "adapters" / "lighthouse-notes"
    taken.mkdir(parents=True)
    (taken / "manifest.json").write_text("{}", encoding="utf-8")
    page.form.start_button.click()
    box = page.replace_box
    assert isinstance(box, QMessageBox) and "already exists" in box.text()
    rename = next(b for b in box.buttons() if b.text() == "Rename")
    rename.click()
    wait_until(qtbot, lambda: page.form.name_edit.text() == "lighthouse-notes-2", 10, "a free name")
    assert page.view() == "form" and taken.exists()


def test_the_window_has_the_page_between_my_models_and_settings(make_window: WindowFactory,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Knowledge (retrieval) sits between My Models and Fine-tune.
    assert PAGES.index("finetune") == PAGES.index("knowledge") + 1 == PAGES.index("settings") - 1
    assert PAGES.index("knowledge") == PAGES.index("models") + 1
    window: MainWindow = make_window()
    assert window.nav_buttons["finetune"].text() == "Fine-tune"
    window.show_page("finetune")
    assert window.current_page() == "finetune"
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(window.chat, "start_chat_with_adapter", lambda base, name: calls.append((base, name)),
                        raising=False)
    window.finetune.chat_requested.emit("tiny-chat", "notes")
    assert window.current_page() == "chat" and calls == [("tiny-chat", "notes")]


def test_events_drive_the_run_view_and_the_result(qtbot: Any, make_page: Callable[[], FinetunePage]) -> None:
    """The views draw what a RunState holds, whatever feeds it (here: events written by hand)."""
    from core.finetune.run_state import RunState
    from desktop import finetune_runs as runs

    page = make_page()
    state = RunState(name="notes")
    page.state, page.run_info = state, runs.RunInfo("notes", "running", 1, None, Path("x"), spec={"base": "tiny-chat"})
    state.subscribe(page._state_changed)
    page.run_view.watch(state)
    page.stack.setCurrentIndex(1)
    events: list[dict[str, Any]] = [
        {"event": "job_did_start", "pid": 1}, {"event": "stage", "stage": "check", "message": "checking"},
        {"event": "stage", "stage": "eval", "message": "measuring the base model"},
        {"event": "knowledge", "phase": "before", "correct": 3, "total": 12},
        {"event": "settings", "method": "lora", "objective": "pretrain", "total_steps": 8, "estimated_train_s": 240},
        {"event": "stage", "stage": "train", "message": "training 8 steps"},
        *({"event": "step", "step": s, "total_steps": 8, "loss": 3.0 - s * 0.2, "lr": 1e-3, "tokens_per_s": 900.0,
           "eta_s": 8 - s, "elapsed_s": s} for s in range(1, 6)),
        {"event": "cancelled", "step": 5, "message": "Stopped at step 5"}, {"event": "job_did_end", "code": 130},
        {"event": "job_did_start", "pid": 2, "resumed": True}, {"event": "resumed", "step": 4, "total_steps": 8},
        *({"event": "step", "step": s, "total_steps": 8, "loss": 2.0 - s * 0.1, "lr": 1e-3, "tokens_per_s": 950.0,
           "eta_s": 8 - s, "elapsed_s": s} for s in range(5, 9)),
        {"event": "eval", "step": 8, "eval_loss": 1.5, "perplexity": 4.48},
        {"event": "warning", "message": "The held-out loss was lowest at step 6: the model started memorising."},
    ]
    for event in events:
        state.apply(event)
    page.run_view._redraw()
    chart = page.run_view.chart
    assert [s for s, _ in chart.train_points()] == [1, 2, 3, 4, 5, 6, 7, 8]  # step 5 once: trained again
    assert chart.eval_points() == [(8, 1.5)]
    assert page.run_view.warning.isVisible() and "memorising" in page.run_view.warning.text()
    assert page.run_view.numbers.text().startswith("Step 8 of 8 · 950 tokens/s")
    assert "●  Training" in page_text(page)
    state.apply({"event": "knowledge", "phase": "after", "correct": 9, "total": 12})
    state.apply({"event": "done", "name": "notes", "path": "/adapters/notes", "metrics": {
        "before": {"eval_loss": 2.6, "perplexity": 13.5}, "after": {"eval_loss": 1.4, "perplexity": 4.0},
        "knowledge": {"before": 3, "after": 9, "total": 12, "items": []},
        "samples": [{"prompt": "The keeper", "before": "of the", "after": "paints the lamp room blue"}]}})
    page._show_outcome(state)
    assert page.view() == "result"
    result = page.result_view
    assert result.knowledge_label.text() == "Answered 3 of 12 questions about your documents before, 9 of 12 after."
    assert result.improvement_label.text() == "The model now predicts your documents' text 3.4× better."
    assert "paints the lamp room blue" in page_text(page)


def test_replace_removes_the_old_adapter_then_starts(qtbot: Any, make_page: Callable[[], FinetunePage], docs: Path,
                                                     hearth_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = make_page()
    ready(qtbot, page, docs)
    taken = hearth_home / "data" / "adapters" / "lighthouse-notes"
    taken.mkdir(parents=True)
    (taken / "manifest.json").write_text("{}", encoding="utf-8")
    started: list[dict[str, Any]] = []
    monkeypatch.setattr(page, "_start", started.append)
    page.form.start_button.click()
    next(b for b in page.replace_box.buttons() if b.text() == "Replace").click()
    wait_until(qtbot, lambda: bool(started), 10, "the start after the removal")
    assert not taken.exists() and started[0]["name"] == "lighthouse-notes"


def test_an_untrainable_base_is_disabled_with_its_reason(qtbot: Any, make_page: Callable[[], FinetunePage],
                                                         docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.errors import TrainingError
    from desktop import finetune_runs as runs

    def check(path: str) -> None:
        if "tiny-chat" in Path(path).name:
            raise TrainingError("tiny-chat is a 'llama' model that this test says cannot be trained.")

    monkeypatch.setattr(runs, "check_base", check)
    page = make_page()
    drop(page, docs)
    wait_until(qtbot, lambda: "cannot be trained" in page.form.reason_label.text(), 20, "the base check")
    combo = page.form.base_combo
    item = combo.model().item(combo.currentIndex())  # type: ignore[attr-defined]
    assert not item.isEnabled() and "cannot be trained" in item.toolTip()
    assert not page.form.start_button.isEnabled() and "cannot be trained" in page.form.base_note.text()


def test_a_failed_job_says_what_happened_in_one_sentence(qtbot: Any, make_page: Callable[[], FinetunePage]) -> None:
    from core.finetune.run_state import RunState
    from desktop import finetune_runs as runs

    page = make_page()
    state = RunState(name="notes")
    page.state, page.run_info = state, runs.RunInfo("notes", "failed", 1, None, Path("x"), spec={"base": "tiny-chat"})
    page.run_view.watch(state)
    page.stack.setCurrentIndex(1)
    state.apply({"event": "error", "kind": "InternalError", "message": "RuntimeError: boom",
                 "detail": "Traceback (most recent call last):\n  File \"trainer.py\", line 1\nRuntimeError: boom"})
    page._show_outcome(state)
    panel = page.run_view.error_panel
    assert panel.isVisible() and panel.sentence.text().startswith("Training stopped because of a problem in Hearth.")
    assert "Traceback" not in page_text(page)
    assert not page.run_view.resume_button.isVisible()  # no checkpoint was left
    panel.toggle.click()
    assert "Traceback" in panel.details.toPlainText() and "Log:" in panel.details.toPlainText()


@pytest.mark.slow
def test_the_starter_model_learns_the_documents_in_the_window(qtbot: Any, starter_in_library: Path,
                                                              docs: Path) -> None:
    """The real Gemma 3 270M, converted for training on first use as on a user's machine: a short run to the end."""
    library = Library(discover_hf_cache=False)
    entry = library.ensure_starter()  # registers the file already in the library folder, as the window does
    assert entry is not None
    starter = entry.name
    model = LibraryTableModel()
    model.set_entries(library.models(include_discovered=False))
    pool = Executor(3, "test-finetune-starter")
    page = FinetunePage(model, pool)
    qtbot.addWidget(page)
    page.resize(1180, 820)
    page.show()
    try:
        wait_until(qtbot, lambda: page.form.base_name() == starter, 60, "the starter as the base")
        ready(qtbot, page, docs, max_steps=4, samples=1, save_every=0)
        assert page.form.estimate is not None and page.form.estimate.fits
        page.form.start_button.click()
        wait_until(qtbot, lambda: page.view() == "result", 1200, "the finished starter run")
        state = page.state
        assert state is not None and state.outcome == "done" and state.step == 4
        assert state.knowledge_total and 0 <= state.knowledge_after <= state.knowledge_total
        assert page.result_view.knowledge_label.text().startswith("Answered ")
        with qtbot.waitSignal(page.chat_requested, timeout=2000) as blocker:
            page.result_view.chat_button.click()
        assert blocker.args == [starter, "lighthouse-notes"]
    finally:
        page.shutdown()
        for run in list_runs():
            if run.state == "running" and run.pid:
                os.kill(run.pid, signal.SIGKILL)
        pool.shutdown(wait=False)


def test_held_out_checks_and_the_early_stop_show_on_the_run_view(qtbot: Any,
                                                                   make_page: Callable[[], FinetunePage]) -> None:
    """A views run: each check of the questions asked in other words shows on the stage line, and the stop
    by them ends the progress at the step it stopped (not the planned one), in words."""
    from core.finetune.run_state import RunState
    from desktop import finetune_runs as runs

    page = make_page()
    state = RunState(name="handbook")
    page.state, page.run_info = state, runs.RunInfo("handbook", "running", 1, None, Path("x"),
                                                    spec={"base": "tiny-chat"})
    state.subscribe(page._state_changed)
    page.run_view.watch(state)
    page.run_view.resume_button.hide()  # as a started run has it
    page.stack.setCurrentIndex(1)
    for event in [
        {"event": "job_did_start", "pid": 1},
        {"event": "knowledge", "phase": "before", "correct": 9, "total": 24,
         "restated": {"correct": 0, "total": 6}},
        {"event": "settings", "method": "lora", "objective": "pretrain", "total_steps": 248,
         "estimated_train_s": 640, "stops_early": True},
        {"event": "stage", "stage": "train", "message": "training at most 248 steps"},
        *({"event": "step", "step": s, "total_steps": 248, "loss": 4.0 - s * 0.012, "lr": 1e-3,
           "tokens_per_s": 48.0, "eta_s": 2 * (248 - s), "elapsed_s": 2 * s} for s in range(1, 156)),
        {"event": "held_out_check", "step": 124, "correct": 2, "total": 6, "margin": 0.41},
        {"event": "held_out_check", "step": 155, "correct": 3, "total": 6, "margin": 0.52},
    ]:
        state.apply(event)
    page.run_view._redraw()
    assert "asked in other words, 3 of 6 right at step 155" in page_text(page)
    assert page.run_view.numbers.text().startswith("Step 155 of 248")
    shot(page, "held-out-check")
    for s in range(156, 187):
        state.apply({"event": "step", "step": s, "total_steps": 248, "loss": 2.1, "lr": 1e-3, "tokens_per_s": 48.0,
                     "eta_s": 2 * (248 - s), "elapsed_s": 2 * s})
    state.apply({"event": "held_out_check", "step": 186, "correct": 3, "total": 6, "margin": 0.47})
    state.apply({"event": "early_stop", "step": 186, "best_step": 155,
                 "message": "stopping at step 186 of 248: the questions asked in other words stopped improving "
                            "(best 3 of 6 at step 155; 3 now, and no surer); keeping the model of step 155"})
    page.run_view._redraw()
    text = page_text(page)
    assert "stopped improving" in text and "keeping the model of step 155" in text
    assert page.run_view.numbers.text().startswith("Step 186 of 186")
    assert "left" not in page.run_view.numbers.text()  # nothing of the planned steps remains
    assert page.run_view.progress.value() == 1000
    assert [c["step"] for c in state.held_out_checks] == [124, 155, 186]
    shot(page, "early-stop")


def test_the_estimate_counts_the_knowledge_views_and_says_at_most(
        qtbot: Any, make_page: Callable[[], FinetunePage]) -> None:
    page = make_page()
    drop(page, ROOT / "tests" / "fixtures" / "handbook")
    wait_until(qtbot, lambda: page.form.estimate is not None, 60, "the estimate")
    views = page.form.estimate
    assert views is not None and views.stops_early
    # Training may stop sooner: the questions asked in other words decide (core.finetune.planner).
    assert "at most about" in page.form.estimate_label.text()
    shot(page, "documents-estimate")
    # A change of theme recolours the list and keeps the estimate (it used to clear it and estimate again).
    assert page.form.estimate is views and page.form.estimate_label.isVisibleTo(page)
    page.form.advanced_toggle.setChecked(True)
    page.form.advanced.job_form.set_values({"views": "none"})  # the text as it is: a fixed number of passes
    wait_until(qtbot, lambda: page.form.estimate is not views and page.form.estimate is not None, 60,
               "the new estimate")
    plain = page.form.estimate
    assert plain is not None and not plain.stops_early and plain.total_steps < views.total_steps / 4
    assert "at most" not in page.form.estimate_label.text() and "on this machine (estimated)" in page.form.estimate_label.text()
