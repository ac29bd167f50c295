"""Fine-tune: teach a library model your documents, watch it train, then chat with what it learned.

The page has three views: the form (``finetune_form``), the run (stages, loss chart, progress,
Cancel/Resume) and the result (``finetune_result``). Training runs in its own process
(``desktop.finetune_runs`` → ``core.jobs``); a thread follows the run's event log and hands each
event to the GUI by a signal, where a ``core.finetune.run_state.RunState`` takes it and the views,
subscribed to it, redraw. When the page is built it looks for runs: a running one is replayed from
the start and followed live, an interrupted one is offered for Resume.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QDragEnterEvent, QDragLeaveEvent, QDropEvent, QShowEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QScrollArea,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from core.events import CancelToken, Progress
from core.finetune.run_state import STAGES, RunState
from desktop import finetune_runs as runs
from desktop.models.library import LibraryTableModel
from desktop.ops import Executor, Op, error_text
from desktop.theme import LIGHT, Palette
from desktop.views.finetune_form import TeachForm
from desktop.views.finetune_result import ErrorPanel, ResultView
from desktop.views.widgets import button, muted, title


class RunFollower(QObject):
    """Reads one run's events on a thread (``finetune_runs.follow_events``) and emits each on the GUI thread."""

    event = Signal(object)
    ended = Signal()  # the log is read to its end and the process is gone (or ``stop``)

    def __init__(self, name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"finetune-follow-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _read(self) -> None:
        try:
            for event in runs.follow_events(self.name, stop=self._stop.is_set):
                if self._stop.is_set():
                    return
                self.event.emit(event)
        except Exception as exc:  # the log could not be read: say so like a death
            self.event.emit({"event": "job_died", "message": f"{type(exc).__name__}: {exc}"})
        if not self._stop.is_set():
            self.ended.emit()


class RunView(QWidget):
    """A run in progress (or stopped): stages, the loss chart, the numbers, Cancel and Resume."""

    cancel_requested = Signal()
    resume_requested = Signal()
    back_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.palette_: Palette = LIGHT
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(10)
        head = QHBoxLayout()
        self.heading = title("Training")
        head.addWidget(self.heading)
        head.addStretch(1)
        self.cancel_button = button("Cancel", self.cancel_requested.emit, kind="danger",
                                    tip="Stop after saving a checkpoint; Resume continues from it")
        self.resume_button = button("Resume", self.resume_requested.emit, kind="primary")
        self.back_button = button("Back to the form", self.back_requested.emit)
        for b in (self.cancel_button, self.resume_button, self.back_button):
            head.addWidget(b)
        col.addLayout(head)
        self.subtitle = muted("")
        col.addWidget(self.subtitle)
        self.error_panel = ErrorPanel()
        col.addWidget(self.error_panel)
        self.warning = QLabel("")
        self.warning.setObjectName("warningBanner")
        self.warning.setWordWrap(True)
        self.warning.hide()
        col.addWidget(self.warning)
        body = QHBoxLayout()
        body.setSpacing(16)
        stages = QFrame()
        stages.setObjectName("card")
        stages.setFixedWidth(300)
        stage_col = QVBoxLayout(stages)
        stage_col.setContentsMargins(14, 12, 14, 12)
        stage_col.setSpacing(6)
        self.stage_labels: dict[str, QLabel] = {}
        for stage in STAGES:
            label = QLabel(stage.label)
            label.setWordWrap(True)
            self.stage_labels[stage.key] = label
            stage_col.addWidget(label)
        stage_col.addSpacing(8)
        self.stage_message = muted("")
        stage_col.addWidget(self.stage_message)
        stage_col.addStretch(1)
        body.addWidget(stages)
        right = QVBoxLayout()
        self.chart_holder = QVBoxLayout()
        right.addLayout(self.chart_holder, 1)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        right.addWidget(self.progress)
        self.numbers = QLabel("")
        right.addWidget(self.numbers)
        body.addLayout(right, 1)
        col.addLayout(body, 1)
        self.chart: Any = None  # LossChart, built on first use (pyqtgraph is imported then)
        self._dirty = False
        self._state: RunState | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(150)  # redraw at most ~7 times a second, however fast events come
        self._timer.timeout.connect(self._redraw)

    def ensure_chart(self) -> Any:
        if self.chart is None:
            from desktop.views.loss_chart import LossChart

            self.chart = LossChart()
            self.chart.set_palette(self.palette_)
            self.chart_holder.addWidget(self.chart)
        return self.chart

    def set_palette(self, p: Palette) -> None:
        self.palette_ = p
        self.warning.setStyleSheet(f"QLabel#warningBanner {{ background: {p.code_bg}; color: {p.warn}; "
                                   f"border: 1px solid {p.warn}; border-radius: 8px; padding: 8px 12px; }}")
        if self.chart is not None:
            self.chart.set_palette(p)
        if self._state is not None:
            self._show_stages(self._state)

    def watch(self, state: RunState) -> None:
        self._state = state
        self.ensure_chart()
        self._dirty = True
        self._timer.start()
        self._redraw()

    def on_event(self, kind: str, _event: dict[str, Any]) -> None:
        self._dirty = True
        if kind in ("stage", "warning", "cancelled", "error", "job_died", "done", "resumed", "settings",
                    "held_out_check", "early_stop"):
            self._redraw()  # rare events show at once; steps wait for the timer

    def _redraw(self) -> None:
        state = self._state
        if state is None or not self._dirty:
            return
        self._dirty = False
        self.ensure_chart().show_points(state.losses, state.evals)
        self._show_stages(state)
        self.progress.setValue(int(state.fraction * 1000))
        self.numbers.setText(numbers_text(state))
        warning = state.memorising_warning
        self.warning.setText(f"⚠ {warning}")
        self.warning.setVisible(bool(warning))
        running = state.outcome == "running"
        self.cancel_button.setVisible(running)
        self.back_button.setVisible(not running)
        if not running:
            self._timer.stop()

    def _show_stages(self, state: RunState) -> None:
        current = state.stage_index
        p = self.palette_
        for i, stage in enumerate(STAGES):
            label = self.stage_labels[stage.key]
            if i < current or (state.outcome == "done"):
                label.setText(f"✓  {stage.label}")
                label.setStyleSheet(f"color: {p.muted};")
            elif i == current:
                mark = "●" if state.outcome == "running" else "■"
                label.setText(f"{mark}  {stage.label}")
                label.setStyleSheet(f"color: {p.accent if state.outcome == 'running' else p.danger}; font-weight: 600;")
            else:
                label.setText(f"○  {stage.label}")
                label.setStyleSheet(f"color: {p.muted};")
        self.stage_message.setText(state.stage_message[:1].upper() + state.stage_message[1:]
                                   if state.outcome == "running" else "")


def numbers_text(state: RunState) -> str:
    if not state.total_steps:
        return "Getting ready…" if state.outcome == "running" else ""
    parts = [f"Step {state.step} of {state.total_steps}"]
    if state.processes > 1:
        parts.append(f"{state.processes} processes")
    if state.tokens_per_s:
        parts.append(f"{state.tokens_per_s:,.0f} tokens/s")
    if state.elapsed_s is not None:
        parts.append(f"elapsed {_clock(state.elapsed_s)}")
    if state.outcome == "running" and state.eta_s is not None and state.step:
        parts.append(f"about {_clock(state.eta_s)} left")
    elif state.outcome == "running" and state.estimated_train_s and not state.step:
        early = bool(state.settings.get("stops_early"))
        parts.append(f"{'at most ' if early else ''}about {_clock(state.estimated_train_s)} expected")
    if state.loss is not None:
        parts.append(f"loss {state.loss:.3f}")
    return " · ".join(parts)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class FinetunePage(QWidget):
    """The Fine-tune page; ``chat_requested(base, adapter)`` when the user wants to chat with the result."""

    chat_requested = Signal(str, str)
    compare_requested = Signal(str, str)  # (base, adapter): the result side by side with its base model
    # A full fine-tune is a whole model: once made a model of My Models, its chat and its comparison use that.
    model_chat_requested = Signal(str)  # the new model's name
    model_compare_requested = Signal(str, str)  # (base, the new model)
    library_changed = Signal()  # a standalone model was added

    def __init__(self, library: LibraryTableModel, pool: Executor, *,
                 current_model: Callable[[], str | None] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.setAcceptDrops(True)
        self.pool = pool
        self.palette_: Palette = LIGHT
        self.job_overrides: dict[str, Any] = {}  # job settings added to the spec (scripts and tests)
        self.state: RunState | None = None
        self.run_info: runs.RunInfo | None = None
        self.follower: RunFollower | None = None
        self._unsubscribe: Callable[[], None] = lambda: None
        self._export_cancel: CancelToken | None = None
        self._full_model: tuple[str, str] | None = None  # (full fine-tune, the model made of it)
        self._closed = False

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.stack = QStackedWidget()
        outer.addWidget(self.stack)
        self.form = TeachForm(library, pool)
        if current_model is not None:
            self.form.preferred_base = current_model
            self.form.refresh_bases()
        self.form.start_requested.connect(self.start)
        self.run_view = RunView()
        self.run_view.cancel_requested.connect(self.cancel)
        self.run_view.resume_requested.connect(self.resume)
        self.run_view.back_requested.connect(self.show_form)
        self.result_view = ResultView(pool)  # its four-way comparison runs on the pool
        self.result_view.chat_requested.connect(self._chat)
        self.result_view.compare_requested.connect(self._compare)
        self.result_view.standalone_requested.connect(lambda: self.export(ollama=False))
        self.result_view.ollama_requested.connect(lambda: self.export(ollama=True))
        self.result_view.another_requested.connect(self.show_form)
        self.result_view.export_cancel_requested.connect(self._cancel_export)
        for view in (self.form, self.run_view, self.result_view):
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            holder = QWidget()
            holder.setObjectName("page")
            col = QVBoxLayout(holder)
            col.setContentsMargins(24, 20, 24, 20)
            col.addWidget(view)
            scroll.setWidget(holder)
            self.stack.addWidget(scroll)
        self.show_form()
        QTimer.singleShot(0, self, self.reattach)

    # -- views -----------------------------------------------------------------------------------
    def view(self) -> str:
        return ("form", "run", "result")[self.stack.currentIndex()]

    def show_form(self) -> None:
        self.stack.setCurrentIndex(0)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.form.start_checks()

    def set_palette(self, p: Palette) -> None:
        self.palette_ = p
        self.form.set_palette(p)
        self.run_view.set_palette(p)
        self.result_view.setStyleSheet(
            f"QLabel#sampleText {{ background: {p.surface}; border: 1px solid {p.border}; border-radius: 8px; "
            f"padding: 8px; }}")

    # -- drag and drop anywhere on the page -------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self.view() == "form" and any(u.toLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
            self.form.set_drop_hover(True)
        else:
            event.ignore()

    def dragLeaveEvent(self, event: QDragLeaveEvent) -> None:
        self.form.set_drop_hover(False)
        super().dragLeaveEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        self.form.set_drop_hover(False)
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.toLocalFile()]
        if paths and self.view() == "form":
            event.acceptProposedAction()
            self.form.add_paths(paths)
        else:
            event.ignore()

    # -- starting --------------------------------------------------------------------------------
    def start(self) -> None:
        reason = self.form.why_not()
        if reason:
            self.form.banner.show_message(reason)
            return
        name = self.form.name_edit.text().strip()
        if runs.name_taken(name):
            self._ask_replace(name)
            return
        self._start(self.form.spec_inputs())

    def _ask_replace(self, name: str) -> None:
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Hearth")
        box.setText(f"An adapter called “{name}” already exists.")
        box.setInformativeText("Replace it with this run (the old one is deleted when the new one starts), "
                               "or pick another name?")
        replace = box.addButton("Replace", QMessageBox.ButtonRole.DestructiveRole)
        rename = box.addButton("Rename", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(rename)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.replace_box = box

        def done(_result: int) -> None:
            if box.clickedButton() is replace:
                self._replace_and_start(name)
            elif box.clickedButton() is rename:
                base = self.form.base_name() or "model"
                paths, method = list(self.form.paths), self.form.advanced.method_name()
                Op(lambda: _free_name(runs.suggest_name(base, paths, method))).on_success(self._renamed).run(self.pool)

        box.finished.connect(done)
        box.open()

    def _renamed(self, name: str) -> None:
        self.form.name_edit.setText(name)
        self.form.name_edit.setFocus()
        self.form.name_edit.selectAll()

    def _replace_and_start(self, name: str) -> None:
        from core.finetune.adapters import remove_adapter

        inputs = self.form.spec_inputs()
        Op(lambda: remove_adapter(name)).on_success(lambda _r: self._start(inputs)).on_failure(
            lambda exc: self.form.banner.show_message(error_text(exc))).run(self.pool)

    def _start(self, inputs: dict[str, Any]) -> None:
        self.form.banner.hide()
        self.form.start_button.setEnabled(False)
        inputs = {**inputs, **self.job_overrides}

        def work() -> runs.RunInfo:
            return runs.start_finetune(runs.spec_from_inputs(**inputs))

        Op(work).on_success(self._follow).on_failure(self._start_failed).run(self.pool)

    def _start_failed(self, exc: BaseException) -> None:
        self.form._update_button()
        if self.view() == "form":
            self.form.banner.show_message(error_text(exc))
        else:
            self.run_view.error_panel.sentence.setText(error_text(exc))
            self.run_view.error_panel.show()

    # -- following a run -------------------------------------------------------------------------
    def _follow(self, info: runs.RunInfo) -> None:
        """Show the run ``info`` names, its log replayed from the start (a resumed run's log holds the
        run it continues as well, so its curve goes on from where it stopped)."""
        if self._closed:
            return
        self._stop_following()
        self.run_info = info
        state = RunState(name=info.name)
        self.state = state
        self._unsubscribe = state.subscribe(self._state_changed)
        self.run_view.heading.setText(f"Teaching “{info.name}”")
        base = Path(str(info.spec.get("base", ""))).name
        self.run_view.subtitle.setText(f"Training {base} in its own process: use the rest of Hearth, or close the "
                                       "window, while it trains; it is shown here again when you come back."
                                       if base else "")
        self.run_view.error_panel.hide()
        self.run_view.resume_button.hide()
        self.run_view.watch(state)
        self.stack.setCurrentIndex(1)
        follower = RunFollower(info.name)
        follower.event.connect(state.apply)
        follower.ended.connect(lambda f=follower: self._follow_ended(f))
        self.follower = follower
        follower.start()

    def _state_changed(self, kind: str, event: dict[str, Any]) -> None:
        self.run_view.on_event(kind, event)

    def _follow_ended(self, follower: RunFollower) -> None:
        """The run is over: its log is read to the end (a resumed run's log holds its earlier stops too)."""
        if follower is not self.follower:  # replaced (the run followed again) while its end was on its way
            return
        state = self.state
        self._stop_following()
        if state is None:
            return
        if state.outcome == "running":  # no last word: the process died (killed, out of memory)
            state.apply({"event": "job_died"})
        self._refresh_info(state)

    def _refresh_info(self, state: RunState) -> None:
        def listed(info: runs.RunInfo | None) -> None:
            if info is not None:
                self.run_info = info
            self._show_outcome(state)

        from core.finetune.runs import get_run

        Op(lambda: get_run(state.name, missing_ok=True)).on_success(listed).on_failure(
            lambda _exc: self._show_outcome(state)).run(self.pool)

    def _show_outcome(self, state: RunState) -> None:
        if self._closed or state is not self.state:
            return
        if state.outcome == "done":
            self.result_view.show_state(state)
            self.result_view.show_export(None)
            self.stack.setCurrentIndex(2)
            self.form._update_button()
            return
        self._show_stopped(state)

    def _show_stopped(self, state: RunState) -> None:
        name = state.name
        log = runs.log_path(self.run_info)
        resumable = runs.has_checkpoint(name)
        self.run_view.resume_button.setVisible(resumable)
        self.run_view.cancel_button.hide()
        self.run_view.back_button.show()
        if state.outcome == "cancelled":
            self.run_view.heading.setText(f"“{name}” stopped at step {state.step}")
            self.run_view.subtitle.setText(
                "Its checkpoint is kept: Resume continues from it." if resumable
                 else "It stopped before its first checkpoint: start it again from the form.")
        elif state.error.get("kind") == "died":
            self.run_view.heading.setText(f"Interrupted at step {state.step}: “{name}”")
            self.run_view.subtitle.setText("")
            self.run_view.error_panel.show_error(state, log, resumable)
        else:
            self.run_view.heading.setText(f"“{name}” stopped")
            self.run_view.subtitle.setText("")
            self.run_view.error_panel.show_error(state, log, resumable)
        self.form._update_button()

    def _stop_following(self) -> None:
        if self.follower is not None:
            self.follower.stop()
            self.follower.event.disconnect()
            self.follower.ended.disconnect()
            self.follower = None

    # -- reattach, cancel, resume ----------------------------------------------------------------
    def reattach(self) -> None:
        """Show a run that is training (replayed from its start) or one that was interrupted."""
        if self._closed or self.state is not None:
            return
        Op(runs.list_runs).on_success(self._runs_listed).on_failure(lambda exc: None).run(self.pool)

    def _runs_listed(self, listed: list[runs.RunInfo]) -> None:
        if self._closed or self.state is not None:
            return
        running = next((r for r in listed if r.state == "running"), None)
        if running is not None:
            self._follow(running)
            return
        stopped = next((r for r in listed if runs.resumable(r)), None)
        if stopped is not None:
            self._follow(stopped)  # its log replays the curve, then the page offers Resume

    def cancel(self) -> None:
        if self.state is None:
            return
        name = self.state.name
        self.run_view.cancel_button.setEnabled(False)
        self.run_view.cancel_button.setText("Stopping…")
        self.run_view.stage_message.setText("Saving a checkpoint, then stopping…")

        def done(_r: object = None) -> None:
            self.run_view.cancel_button.setEnabled(True)
            self.run_view.cancel_button.setText("Cancel")

        Op(lambda: runs.cancel_run(name)).on_success(done).on_failure(
            lambda exc: (done(), self.run_view.stage_message.setText(error_text(exc)))).run(self.pool)

    def resume(self) -> None:
        info = self.run_info
        if info is None:
            return
        spec = dict(info.spec)
        inputs: dict[str, Any] = {"base": spec.get("base", ""), "docs": spec.get("docs") or (),
                                  "data": spec.get("data"), "name": info.name, "method": spec.get("method", "lora"),
                                  "method_options": spec.get("method_options") or {}, "resume": True}
        self.run_view.resume_button.hide()
        self._start(inputs)

    # -- finished --------------------------------------------------------------------------------
    def _adapter(self) -> tuple[str, str]:
        assert self.state is not None and self.run_info is not None
        return str(self.run_info.spec.get("base", "")), str(self.state.result.get("name") or self.state.name)

    def _is_full(self) -> bool:
        return self.run_info is not None and self.run_info.spec.get("method") == "full"

    def _chat(self) -> None:
        base, adapter = self._adapter()
        if self._is_full():
            self._as_model(self.model_chat_requested.emit)
        else:
            self.chat_requested.emit(base, adapter)

    def _compare(self) -> None:
        base, adapter = self._adapter()
        if self._is_full():
            self._as_model(lambda model: self.model_compare_requested.emit(base, model))
        else:
            self.compare_requested.emit(base, adapter)

    def _as_model(self, then: Callable[[str], None]) -> None:
        """A full fine-tune made a model of My Models (once), then ``then(its name)``."""
        base, tuned = self._adapter()
        if self._full_model is not None and self._full_model[0] == tuned:
            then(self._full_model[1])
            return

        def made(name: str) -> None:
            self._export_cancel = None
            self._full_model = (tuned, name)
            self.result_view.show_export(f"Added “{name}” to My Models.")
            then(name)

        self._run_export("This fine-tune is a whole model: adding it to My Models…",
                         lambda report, token: str(runs.standalone_model(base, tuned, progress=report,
                                                                         cancel=token).name), made)

    def export(self, *, ollama: bool) -> None:
        base, adapter = self._adapter()
        self._run_export("Merging the adapter into the model…",
                         lambda report, token: runs.make_standalone(base, adapter, ollama=ollama, progress=report,
                                                                    cancel=token), self._exported)

    def _run_export(self, message: str, work: Callable[[Callable[[object], None], CancelToken], str],
                    done: Callable[[str], None]) -> None:
        """``work(report, cancel)`` in the background, its progress and Cancel in the result's export row."""
        token = CancelToken()
        self._export_cancel = token
        self.result_view.show_export(message, None, busy=True)
        Op(lambda report: work(report, token)).on_progress(self._export_progress).on_success(done).on_failure(
            lambda exc: self.result_view.show_export(error_text(exc))).run(self.pool)

    def _export_progress(self, p: object) -> None:
        if isinstance(p, Progress):
            self.result_view.show_export(p.message or "Merging…", p.fraction, busy=True)

    def _exported(self, message: str) -> None:
        self._export_cancel = None
        self.result_view.show_export(message)
        self.library_changed.emit()

    def _cancel_export(self) -> None:
        if self._export_cancel is not None:
            self._export_cancel.cancel()

    def shutdown(self) -> None:
        """Stop following (the job itself keeps training; the next window reattaches)."""
        self._closed = True
        self._stop_following()
        self._unsubscribe()
        self._cancel_export()
        self.result_view.comparison.shutdown()


def _free_name(name: str) -> str:
    n, stem = 2, name
    while runs.name_taken(name):
        name = f"{stem}-{n}"
        n += 1
    return name
