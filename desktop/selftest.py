"""``hearth --self-test``: open the window, chat a few tokens with the starter model, take a screenshot, quit.

The installers' smoke test runs it on the installed app (packaging/package_test.sh), and a user can run
it to check an install. It exits 0 when the window opened, the starter model loaded and answered; any
failure prints one line saying what went wrong and exits 1.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

PROMPT = "Once upon a time"
TIMEOUT_S = 300
MODEL_WAIT_S = 60  # the first run unpacks the starter model (a few seconds)


class SelfTest:
    def __init__(self, app: QApplication, window: object, screenshot: Path) -> None:
        from desktop.views.main_window import MainWindow

        assert isinstance(window, MainWindow)
        self.app, self.window, self.screenshot = app, window, screenshot
        self.started = time.monotonic()
        self.code = 1
        self.text = ""
        page = window.chat
        page.controller.chunk_arrived.connect(self._chunk)
        page.controller.stream_finished.connect(self._finished)
        page.controller.stream_failed.connect(lambda message: self._fail(f"the answer failed: {message}"))
        page.controller.model_failed.connect(lambda message: self._fail(f"the model did not load: {message}"))
        window.first_shown.connect(self._shown)
        self._deadline = QTimer(window)
        self._deadline.setSingleShot(True)
        self._deadline.timeout.connect(lambda: self._fail(f"no answer within {TIMEOUT_S} s"))
        self._deadline.start(TIMEOUT_S * 1000)

    def _say(self, text: str) -> None:
        print(f"self-test [{time.monotonic() - self.started:5.1f} s] {text}", flush=True)

    def _shown(self) -> None:
        self._say("window shown")
        self._wait_for_model()

    def _wait_for_model(self) -> None:
        page = self.window.chat
        entry = page.current_entry()
        if entry is None:
            if time.monotonic() - self.started > MODEL_WAIT_S:
                self._fail(f"no model in the library after {MODEL_WAIT_S} s: the starter model is missing")
                return
            QTimer.singleShot(200, self.window, self._wait_for_model)
            return
        self._say(f"model {entry.name}; asking it to go on from {PROMPT!r}")
        page.new_chat()  # not the conversation the window reopened
        page.params.form.editors["max_tokens"].setValue(16)  # a few tokens are proof enough
        page.composer.edit.setPlainText(PROMPT)
        page.send()

    def _chunk(self, text: str) -> None:
        self.text += text

    def _finished(self, _completion: object) -> None:
        if not self.text.strip():
            self._fail("the model answered nothing")
            return
        self._say(f"answered {self.text.strip()[:80]!r}")
        QTimer.singleShot(1500, self.window, self._grab)  # let the last chunk paint

    def _grab(self) -> None:
        self.screenshot.parent.mkdir(parents=True, exist_ok=True)
        if not self.window.grab().save(str(self.screenshot)):
            self._fail(f"the screenshot could not be written to {self.screenshot}")
            return
        self._say(f"screenshot {self.screenshot}")
        self.code = 0
        self._deadline.stop()
        self.app.quit()

    def _fail(self, message: str) -> None:
        if self.code == 0:
            return
        print(f"self-test failed: {message}", file=sys.stderr, flush=True)
        self.code = 1
        self.app.quit()
