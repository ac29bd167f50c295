"""Background ops: results, errors and progress arrive on the GUI thread, in order, and everything an op
holds (its callable, its callbacks and the widgets they capture) is freed there, never on a worker.

Freeing a widget's last reference on a worker thread deletes it off the GUI thread, which crashes Qt
natively and at random: the worker used to keep each finished op until the next one arrived.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import shiboken6
from PySide6.QtWidgets import QApplication, QLabel

from core.errors import HearthError
from desktop.ops import Executor, Op
from tests.desktop.conftest import wait_until


class Owner:
    """Stands for a widget a callback captures: records the thread that frees it."""

    def __init__(self, freed: list[str]) -> None:
        self.freed = freed
        self.results: list[Any] = []

    def compute(self) -> int:
        return 7

    def done(self, result: Any) -> None:
        self.results.append(result)

    def __del__(self) -> None:
        self.freed.append(threading.current_thread().name)


@pytest.fixture
def pool() -> Any:
    executor = Executor(2, "test-ops")
    yield executor
    executor.shutdown(wait=True)


def test_ops_and_what_their_callbacks_hold_are_freed_on_the_gui_thread(qapp: QApplication, qtbot: Any,
                                                                        pool: Executor) -> None:
    freed: list[str] = []
    for i in range(12):
        callable_owner, callback_owner = Owner(freed), Owner(freed)
        Op(callable_owner.compute).on_success(callback_owner.done).on_failure(callback_owner.done).run(pool)
        del callable_owner, callback_owner
        wait_until(qtbot, lambda i=i: len(freed) == 2 * (i + 1), 10, f"op {i} delivered and freed")
    assert freed == [threading.main_thread().name] * 24


def test_results_errors_and_progress_arrive_on_the_gui_thread_in_order(qapp: QApplication, qtbot: Any,
                                                                       pool: Executor) -> None:
    seen: list[tuple[str, Any, str]] = []

    def counting(report: Any) -> str:
        for n in range(5):
            report(n)
        return "counted"

    def note(kind: str) -> Any:
        return lambda value: seen.append((kind, value, threading.current_thread().name))

    Op(counting).on_progress(note("progress")).on_success(note("ok")).run(pool)
    wait_until(qtbot, lambda: len(seen) == 6, 10, "the progress and the result")
    assert [(k, v) for k, v, _t in seen] == [("progress", n) for n in range(5)] + [("ok", "counted")]
    assert {t for _k, _v, t in seen} == {threading.main_thread().name}

    def fails() -> None:
        try:
            raise KeyError("inner")
        except KeyError as exc:
            raise HearthError("the model file is gone") from exc

    errors: list[BaseException] = []
    Op(fails).on_success(note("wrong")).on_failure(errors.append).run(pool)
    wait_until(qtbot, lambda: bool(errors), 10, "the error")
    (error,) = errors
    assert isinstance(error, HearthError) and str(error) == "the model file is gone"
    assert isinstance(error.__cause__, KeyError)
    # The frames (and the locals they held) were let go on the worker, before it reported.
    assert error.__traceback__ is None and error.__cause__.__traceback__ is None


def test_a_callback_of_a_deleted_widget_is_skipped(qapp: QApplication, qtbot: Any, pool: Executor) -> None:
    label = QLabel("waiting")
    gate = threading.Event()
    done: list[str] = []
    Op(lambda: (gate.wait(10), "late")[1]).on_success(label.setText).run(pool)
    Op(lambda: (gate.wait(10), "after")[1]).on_success(done.append).run(pool)
    shiboken6.delete(label)  # the page holding it was closed while the op ran
    assert not shiboken6.isValid(label)
    gate.set()
    wait_until(qtbot, lambda: done == ["after"], 10, "the second op")  # no call into the deleted label
