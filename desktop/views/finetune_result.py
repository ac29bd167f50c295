"""What a finished fine-tune shows: the knowledge check, the improvement, samples before vs after, next steps;
for documents (tune + index), tuning and retrieval compared four ways on the job's held-out questions.

Also the error panel of a run that failed or whose process died: one sentence, what to do, details
(the core's detail and the log path) behind "Show details"; never a traceback on the page itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core.finetune.run_state import RunState
from desktop.ops import Executor, Op, error_text
from desktop.views.widgets import button, muted, title


def knowledge_sentence(state: RunState) -> str:
    """The knowledge check: both halves ("From your sentences: … · Asked in other words: …") when the job
    measured the restated half too, else the documents' own sentences before and after."""
    from core.finetune.indexing import knowledge_halves

    knowledge = (state.result.get("metrics") or {}).get("knowledge")
    if isinstance(knowledge, dict) and (knowledge.get("restated") or {}).get("total"):
        return knowledge_halves(knowledge) + "."
    before, after, total = state.knowledge_before, state.knowledge_after, state.knowledge_total
    if total and before is not None and after is not None:
        return (f"Answered {before} of {total} questions about your documents before, "
                f"{after} of {total} after.")
    return ""


def finished_sentence(state: RunState) -> str:
    """The headline of a run without a knowledge check (a JSONL file): what it trained on."""
    examples = state.data.get("train_examples")
    what = "preference pairs" if state.data.get("objective") == "dpo" else "examples"
    if examples:
        return f"Trained {state.step or state.total_steps:,} steps on {int(examples):,} {what} from your file."
    return "Training finished."


def from_file(state: RunState) -> bool:
    """A run on a JSONL file rather than on documents (a documents job's data event counts its chunks)."""
    return bool(state.data) and "chunks" not in state.data


def measured_text(state: RunState) -> str:
    """What the loss was measured on, in a user's words: the documents' text or the file's held-out part."""
    if not from_file(state):
        return "your documents' text"
    if state.data.get("objective") == "dpo":
        return "the preferred answers of the held-out pairs"
    return "the held-out examples of your file"


def improvement_sentence(state: RunState) -> str:
    ratio = state.perplexity_ratio
    if ratio is None:
        return ""
    what = measured_text(state)
    more = "more examples" if from_file(state) else "more text"
    if ratio >= 1000:
        return f"The model now predicts {what} over 1,000× better."
    if ratio >= 1.1:
        return f"The model now predicts {what} {ratio:,.1f}× better."
    if ratio > 0.95:
        return f"The model predicts {what} about as well as before: try more steps or {more}."
    return f"The model predicts {what} worse than before: try a lower learning rate."


def qa_sentence(qa: dict[str, Any]) -> str:
    """How many question-answer pairs the chosen model wrote, and what was dropped and why."""
    kept, written = int(qa.get("kept") or 0), int(qa.get("generated") or 0)
    dropped = [f"{int(qa[k]):,} {label}" for k, label in (("dropped_duplicate", "repeated"), ("dropped_empty", "empty"),
                                                         ("dropped_long", "too long"),
                                                         ("dropped_ungrounded", "not in your documents"))
               if qa.get(k)]
    head = f"{qa.get('model') or 'The question model'} wrote {kept:,} question–answer pair{'s' if kept != 1 else ''}"
    if written > kept:
        return f"{head} from your documents ({written:,} written; left out: {', '.join(dropped) or 'some'})."
    return f"{head} from your documents."


class ComparisonPanel(QWidget):
    """Base, base + retrieval, tuned, tuned + retrieval on the job's held-out questions, and the advice.

    Runs ``core.finetune.indexing.adapter_comparison`` off the GUI thread (read back from the adapter's
    folder when it was made before); hidden for an adapter without a collection.
    """

    def __init__(self, pool: Executor | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.pool = pool
        self.adapter = ""
        self.result: Any = None
        self._cancel: threading.Event | None = None
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 4, 0, 0)
        col.setSpacing(6)
        col.addWidget(title("Tuning and retrieval, compared", "sectionTitle"))
        self.intro = muted("The job's held-out questions asked four ways: the model alone, with passages looked up "
                           "in your documents, the tuned adapter, and the adapter with the passages.")
        col.addWidget(self.intro)
        progress = QHBoxLayout()
        self.bar = QProgressBar()
        self.bar.setFixedWidth(180)
        self.progress_label = muted("")
        self.cancel_button = button("Cancel", self.cancel)
        progress.addWidget(self.bar)
        progress.addWidget(self.progress_label, 1)
        progress.addWidget(self.cancel_button)
        col.addLayout(progress)
        self.recommendation = QLabel("")
        self.recommendation.setWordWrap(True)
        self.recommendation.setStyleSheet("font-weight: 600;")
        # A grid of labels rather than a QTableWidget: four rows that size themselves, no scroll bars.
        self.table = QFrame()
        self.table.setObjectName("card")
        self.table.setMaximumWidth(460)
        self.grid = QGridLayout(self.table)
        self.grid.setContentsMargins(14, 10, 14, 10)
        self.grid.setHorizontalSpacing(18)
        self.grid.setVerticalSpacing(6)
        self.grid.setColumnStretch(0, 1)
        self.cells: list[list[QLabel]] = []
        col.addWidget(self.table)
        col.addWidget(self.recommendation)
        self.notes = muted("")
        col.addWidget(self.notes)
        self.hide()

    def show_for(self, adapter: str) -> None:
        """The comparison of ``adapter``: read back, or run now in the background (nothing for one without a
        collection)."""
        if adapter == self.adapter and (self.result is not None or self._cancel is not None):
            return
        self.cancel()
        self.adapter, self.result = adapter, None
        self.hide()
        if self.pool is None or not adapter:
            return
        cancel = threading.Event()
        self._cancel = cancel

        def work(report: Callable[[Any], None]) -> Any:
            from core.finetune.adapters import get_adapter
            from core.finetune.indexing import adapter_collection, adapter_comparison

            if adapter_collection(get_adapter(adapter)) is None:
                return None
            report(("reading the job's questions", 0.0))
            return adapter_comparison(adapter, cancel=cancel,
                                      progress=lambda message, fraction: report((str(message), float(fraction))))

        Op(work).on_progress(lambda p: self._progress(adapter, p)).on_success(
            lambda r: self._done(adapter, r)).on_failure(lambda exc: self._failed(adapter, exc)).run(self.pool)

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self._cancel = None

    def _progress(self, adapter: str, p: Any) -> None:
        if adapter != self.adapter or not isinstance(p, tuple):
            return
        message, fraction = p
        self.show()
        self._busy(True)
        self.bar.setRange(0, 1000)
        self.bar.setValue(round(fraction * 1000))
        self.progress_label.setText(f"Comparing: {message} ({fraction:.0%})")

    def _busy(self, busy: bool) -> None:
        for busy_part in (self.bar, self.cancel_button, self.progress_label):
            busy_part.setVisible(busy)
        for result_part in (self.recommendation, self.table, self.notes):
            result_part.setVisible(not busy)

    def _done(self, adapter: str, result: Any) -> None:
        if adapter != self.adapter:
            return
        self._cancel = None
        if result is None:
            self.hide()
            return
        self.show_result(result)

    def _failed(self, adapter: str, exc: BaseException) -> None:
        if adapter != self.adapter:
            return
        cancelled = self._cancel is None  # cancel() let go of it
        self._cancel = None
        self.show()
        self._busy(False)
        self.table.hide()
        self.notes.hide()
        self.recommendation.setText("The comparison was stopped." if cancelled else
                                    f"No comparison: {error_text(exc)}")

    def rows(self) -> list[list[str]]:
        """The set-up rows as shown (without the header), for reading back."""
        return [[cell.text() for cell in row] for row in self.cells]

    def show_result(self, result: Any) -> None:
        """The four rows, the one-sentence recommendation and the notes (which questions, trimmed passages)."""
        from core.finetune.indexing import comparison_rows

        self.result = result
        rows = comparison_rows(result)
        _clear(self.grid)
        best = max((s.right for s in result.setups), default=0)
        for j, head in enumerate(("Set-up", "Right", "Share")):
            label = muted(head)
            label.setStyleSheet("font-weight: 600;")
            self.grid.addWidget(label, 0, j, Qt.AlignmentFlag.AlignRight if j else Qt.AlignmentFlag.AlignLeft)
        self.cells = []
        for i, (row, setup) in enumerate(zip(rows, result.setups, strict=True), start=1):
            self.cells.append([])
            for j, text in enumerate(row):
                cell = QLabel(text)
                if setup.right == best and best > 0:
                    cell.setStyleSheet("font-weight: 600;")
                self.grid.addWidget(cell, i, j, Qt.AlignmentFlag.AlignRight if j else Qt.AlignmentFlag.AlignLeft)
                self.cells[-1].append(cell)
        self.recommendation.setText(str(result.recommendation))
        self.notes.setText(" · ".join(n[:1].upper() + n[1:] for n in result.notes))
        self.show()
        self._busy(False)
        self.notes.setVisible(bool(result.notes))

    def shutdown(self) -> None:
        self.cancel()


class ResultView(QWidget):
    """The finished run; its buttons emit what the page should do next."""

    chat_requested = Signal()
    compare_requested = Signal()  # side by side with the base model (Chat's Compare mode)
    standalone_requested = Signal()
    ollama_requested = Signal()
    another_requested = Signal()
    export_cancel_requested = Signal()

    def __init__(self, pool: Executor | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(10)
        self.heading = title("Done")
        col.addWidget(self.heading)
        self.where = muted("")
        col.addWidget(self.where)
        card = QFrame()
        card.setObjectName("card")
        inner = QVBoxLayout(card)
        inner.setContentsMargins(16, 14, 16, 14)
        inner.setSpacing(6)
        self.knowledge_label = QLabel("")
        self.knowledge_label.setObjectName("sectionTitle")
        self.knowledge_label.setWordWrap(True)
        self.improvement_label = QLabel("")
        self.improvement_label.setWordWrap(True)
        self.numbers_label = muted("")
        for w in (self.knowledge_label, self.improvement_label, self.numbers_label):
            inner.addWidget(w)
        col.addWidget(card)
        self.comparison = ComparisonPanel(pool)
        col.addWidget(self.comparison)
        self.qa_title = title("Questions it practised", "sectionTitle")
        col.addWidget(self.qa_title)
        self.qa_label = muted("")
        self.qa_label.setWordWrap(True)
        col.addWidget(self.qa_label)
        self.qa_pairs = QGridLayout()
        self.qa_pairs.setHorizontalSpacing(12)
        self.qa_pairs.setVerticalSpacing(6)
        col.addLayout(self.qa_pairs)
        self.samples_title = title("Before and after", "sectionTitle")
        col.addWidget(self.samples_title)
        self.samples = QGridLayout()
        self.samples.setHorizontalSpacing(12)
        self.samples.setVerticalSpacing(8)
        col.addLayout(self.samples)
        col.addSpacing(6)
        row = QHBoxLayout()
        self.chat_button = button("Chat with it", self.chat_requested.emit, kind="primary",
                                  tip="Open a new chat with the base model and this adapter (and, for documents, "
                                      "their collection looked up as well)")
        self.compare_button = button("Compare with the base model", self.compare_requested.emit,
                                     tip="One prompt, two answers side by side: the base model alone and with this "
                                         "adapter")
        self.standalone_button = button("Make a standalone model", self.standalone_requested.emit,
                                        tip="Merge the adapter into the model: one .gguf file in My Models")
        self.ollama_button = button("Export for Ollama", self.ollama_requested.emit,
                                    tip="A standalone model plus a Modelfile for 'ollama create'")
        self.another_button = button("Teach another", self.another_requested.emit)
        for b in (self.chat_button, self.compare_button, self.standalone_button, self.ollama_button):
            row.addWidget(b)
        row.addStretch(1)
        row.addWidget(self.another_button)
        col.addLayout(row)
        export_row = QHBoxLayout()
        self.export_label = muted("")
        self.export_bar = QProgressBar()
        self.export_bar.setFixedWidth(220)
        self.export_cancel = button("Cancel", self.export_cancel_requested.emit)
        export_row.addWidget(self.export_label, 1)
        export_row.addWidget(self.export_bar)
        export_row.addWidget(self.export_cancel)
        col.addLayout(export_row)
        col.addStretch(1)
        self.show_export(None)

    def show_state(self, state: RunState) -> None:
        name = str(state.result.get("name") or state.name)
        self.heading.setText(f"“{name}” is ready")
        self.where.setText(f"Saved in {state.result.get('path', '')}")
        self.knowledge_label.setText(knowledge_sentence(state) or finished_sentence(state))
        self.improvement_label.setText(improvement_sentence(state))
        metrics = state.result.get("metrics") or {}
        before, after = metrics.get("before") or {}, metrics.get("after") or {}
        if before and after:
            self.numbers_label.setText(
                f"Loss on {measured_text(state)} {float(before['eval_loss']):.3f} → {float(after['eval_loss']):.3f}, "
                f"perplexity {_figure(float(before['perplexity']))} → {_figure(float(after['perplexity']))}.")
        self._show_qa(state.data.get("synthetic_qa") or {})
        self._show_samples(list(metrics.get("samples") or []))
        self.comparison.show_for(name if not from_file(state) else "")

    def _show_qa(self, qa: dict[str, Any]) -> None:
        """The pairs the question model wrote: how many, and the first few to read."""
        _clear(self.qa_pairs)
        for w in (self.qa_title, self.qa_label):
            w.setVisible(bool(qa))
        if not qa:
            return
        self.qa_label.setText(qa_sentence(qa))
        for r, messages in enumerate(list(qa.get("examples") or [])[:3]):
            question = next((m["content"] for m in messages if m.get("role") == "user"), "")
            answer = next((m["content"] for m in messages if m.get("role") == "assistant"), "")
            for c, text in enumerate((question, answer)):
                box = _text_box(str(text), 240)
                box.setAlignment(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft)
                self.qa_pairs.addWidget(box, r, c)
        for c in range(2):
            self.qa_pairs.setColumnStretch(c, 1)

    def _show_samples(self, samples: list[dict[str, Any]]) -> None:
        _clear(self.samples)
        self.samples_title.setVisible(bool(samples))
        if not samples:
            return
        for c, text in enumerate(("Prompt", "Before", "After")):
            head = muted(text)
            head.setStyleSheet("font-weight: 600;")
            self.samples.addWidget(head, 0, c)
        for r, sample in enumerate(samples[:3], start=1):
            for c, key in enumerate(("prompt", "before", "after")):
                self.samples.addWidget(_text_box(str(sample.get(key, ""))), r, c)
        for c in range(3):
            self.samples.setColumnStretch(c, 1)

    def show_export(self, text: str | None, fraction: float | None = None, *, busy: bool = False) -> None:
        """An export's progress (``busy``), its outcome (``text`` only), or nothing (``None``)."""
        self.export_label.setVisible(text is not None)
        self.export_label.setText(text or "")
        self.export_bar.setVisible(busy)
        self.export_cancel.setVisible(busy)
        if fraction is None:
            self.export_bar.setRange(0, 0)
        else:
            self.export_bar.setRange(0, 1000)
            self.export_bar.setValue(int(fraction * 1000))
        for b in (self.standalone_button, self.ollama_button):
            b.setEnabled(not busy)


class ErrorPanel(QFrame):
    """A failed run in one sentence, with the details one click away."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        col = QVBoxLayout(self)
        col.setContentsMargins(14, 10, 14, 10)
        col.setSpacing(6)
        self.sentence = QLabel("")
        self.sentence.setWordWrap(True)
        self.sentence.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        col.addWidget(self.sentence)
        self.toggle = QToolButton()
        self.toggle.setObjectName("flat")
        self.toggle.setCheckable(True)
        self.toggle.setText("▸ Show details")
        self.toggle.toggled.connect(self._toggle)
        col.addWidget(self.toggle, 0, Qt.AlignmentFlag.AlignLeft)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.hide()
        col.addWidget(self.details)
        self.hide()

    def _toggle(self, shown: bool) -> None:
        self.details.setVisible(shown)
        self.toggle.setText(("▾" if shown else "▸") + " Show details")

    def show_error(self, state: RunState, log_path: str, resumable: bool) -> None:
        e = state.error
        keep = " Your progress up to the last checkpoint is kept: press Resume to continue." if resumable else ""
        kind = e.get("kind")
        if kind == "died":
            text = ("The training process stopped unexpectedly (it may have run out of memory, or been closed)."
                    + (keep or " It stopped before its first checkpoint: start it again from the form."))
        elif kind == "InternalError":
            text = ("Training stopped because of a problem in Hearth." + keep
                    + ("" if keep else " Start it again; if it happens again, the details below help a bug report."))
        else:  # Hearth's own errors say what to do
            text = str(e.get("message") or "The training stopped with an error.").strip() + keep
        self.sentence.setText(text)
        if e.get("kind") == "died":
            lines = ["The job's process ended without a last message: it was killed, ran out of memory, "
                     "or crashed inside a native library.", str(e.get("message") or "")]
        else:
            lines = [f"{e.get('kind', 'Error')}: {e.get('message', '')}"]
        if e.get("detail"):
            lines.append(str(e["detail"]))
        lines.append(f"Log: {log_path or e.get('log') or 'none'}")
        text = "\n".join(x for x in lines if x)
        self.details.setPlainText(text)
        self.details.setFixedHeight(min(160, 24 + 18 * (text.count("\n") + 1)))
        self.toggle.setChecked(False)
        self.show()


def _figure(value: float) -> str:
    """A perplexity for reading: 2 decimals when small, whole numbers, then powers of ten past a billion."""
    if value < 1000:
        return f"{value:,.2f}"
    return f"{value:,.0f}" if value < 1e9 else f"{value:.2g}".replace("e+", " × 10^")


def _text_box(text: str, limit: int = 400) -> QLabel:
    """A selectable box of a sample's or a pair's text, clipped, the whole text in its tooltip."""
    box = QLabel(_clip(text.strip() or "(nothing)", limit))
    box.setObjectName("sampleText")
    box.setWordWrap(True)
    box.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
    box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    box.setToolTip(text)
    return box


def _clear(grid: QGridLayout) -> None:
    while grid.count():
        item = grid.takeAt(0)
        if item.widget():
            item.widget().deleteLater()


def _clip(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
