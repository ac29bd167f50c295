"""Settings > Other machines with a real ``hearth rpc-worker`` on 127.0.0.1: the empty state, a worker added by
its address showing what it reports, one that does not answer (refused, then added anyway), switched off, removed;
and the chat's load line naming the split."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWidget

from core.engine.rpc import WorkerInfo
from core.settings import load_settings
from desktop.views.main_window import MainWindow
from desktop.views.workers_section import WorkersSection, describe_worker
from tests.core.test_workers import free_port, worker  # noqa: F401  (the real worker fixture)
from tests.desktop.conftest import use_model, wait_until

ASK = 240  # seconds a probe may take on a busy machine (it starts a child process; a bound, not a measurement)


def _section(window: MainWindow) -> WorkersSection:
    window.show_page("settings")
    return window.settings_page.workers


def _visible(widget: QWidget, section: WorkersSection) -> bool:
    return widget.isVisibleTo(section)


def test_empty_state_says_how_to_start_a_worker_and_the_security_note(window: MainWindow) -> None:
    section = _section(window)
    assert _visible(section.empty, section) and "hearth rpc-worker" in section.empty.text()
    assert _visible(section.security, section) and "SSH tunnel" in section.security.text()
    assert not section.rows and not _visible(section.check_button, section)
    section.address.setText("not an address:x")
    section.add_button.click()  # refused on the spot, nothing asked
    assert _visible(section.add_error, section) and "not a worker address" in section.add_error.text()
    assert not section.rows and load_settings().workers == []


def _add_studio_pc(window: MainWindow, qtbot: object, address: str) -> WorkersSection:
    """Settings > Other machines with the real worker at ``address`` added under the name studio-pc."""
    section = _section(window)
    section.address.setText(address)
    section.name.setText("studio-pc")
    section.add_button.click()
    wait_until(qtbot, lambda: address in section.rows, ASK, "the worker to answer and be added")
    return section


def test_a_real_worker_added_shows_its_memory_then_is_switched_off_and_removed(
    window: MainWindow, qtbot: object, worker: str  # noqa: F811
) -> None:
    section = _add_studio_pc(window, qtbot, worker)
    row = section.rows[worker]
    assert row.title.text() == "studio-pc" and row.address.text() == worker
    assert row.status.text().startswith("Answers · 1 device · ") and " free of " in row.status.text()
    assert not _visible(section.empty, section) and section.address.text() == ""
    saved = load_settings().workers
    assert [(w.endpoint, w.name, w.enabled) for w in saved] == [(worker, "studio-pc", True)]

    # Check asks again, off the GUI thread: the row says so, then shows the answer.
    section.check_button.click()
    assert section.rows[worker].status.text() == "Asking…"
    wait_until(qtbot, lambda: not section.checking, ASK, "the check")
    assert section.rows[worker].status.text().startswith("Answers · ")

    section.rows[worker].switch.setChecked(False)
    assert load_settings().workers[0].enabled is False
    section.rows[worker].remove_button.click()
    assert not section.rows and _visible(section.empty, section) and load_settings().workers == []


def test_a_machine_that_does_not_answer_is_refused_then_added_anyway(window: MainWindow, qtbot: object) -> None:
    section = _section(window)
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    section.address.setText(dead)
    section.add_button.click()
    wait_until(qtbot, lambda: section.add_anyway.isVisibleTo(section), ASK, "the refusal")
    assert "does not answer" in section.add_error.text() and not section.rows
    section.add_anyway.click()
    row = section.rows[dead]
    assert row.title.text() == dead and row.status.text().startswith("Does not answer")
    assert [w.endpoint for w in load_settings().workers] == [dead]


def test_the_chat_loads_split_across_a_worker_added_here_and_says_so(
    window: MainWindow, qtbot: object, worker: str  # noqa: F811
) -> None:
    section = _add_studio_pc(window, qtbot, worker)
    # The starter model fits here: it is split only when the user asks for every model to use the machines.
    section.use.setCurrentIndex(section.use.findData("always"))
    assert load_settings().workers_use == "always"
    window.show_page("chat")
    page = window.chat
    use_model(page, window.library_model.entry(0).name, max_tokens=4, n_ctx=512)
    page.composer.edit.setPlainText("Name a colour.")
    qtbot.keyClick(page.composer.edit, Qt.Key.Key_Return)  # type: ignore[attr-defined]
    wait_until(qtbot, lambda: page.load_label.text().startswith("Ready") and not page.controller.streaming, ASK,
               "the split load and the answer")
    assert not page.banner.text, page.banner.text
    status = page.controller.engine.status
    assert status is not None and [place for place, _n in status.split] == ["this computer", worker]
    layers = dict(status.split)
    assert sum(layers.values()) == status.n_layer and min(layers.values()) > 0
    assert (f"split: this computer {layers['this computer']} layers + studio-pc {layers[worker]} layers"
            in page.load_label.text())
    assert page.transcript.bubbles[1].text.toPlainText().strip()


def test_the_words_for_a_worker() -> None:
    assert describe_worker(None) == "Asking…"
    assert describe_worker(WorkerInfo("10.0.0.2:50052", False, [], "Nothing listens on 10.0.0.2:50052.")) == (
        "Does not answer: nothing listens on 10.0.0.2:50052.")
