"""The window's local API server: started, stopped and restarted off the GUI thread, its requests logged.

The server (``core.server.ApiServer``) shares the window's engine through a ``ModelHost`` built on
the chat controller's ``Engine`` and ``FairLock``, so a chat in the window and a request from another
app take turns, first come first served. Starting and stopping run on a one-thread executor of their
own (binding a port and shutting uvicorn down take a moment, and must happen in the order asked);
the server reports each finished request from its own threads, so ``request_done`` is a signal,
delivered queued to the GUI thread.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import replace
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal

from core.engine import Engine
from core.engine.gate import FairLock
from core.settings import ServerSettings
from desktop.models.request_log import RequestLogModel
from desktop.ops import Executor, Op, error_text

if TYPE_CHECKING:  # core.server pulls in FastAPI and uvicorn: imported on the first start
    from core.server import ApiServer, ModelHost, RequestRecord

log = logging.getLogger(__name__)

NEEDS_KEY = ("Other devices can only connect with an API key: generate one (or turn off "
             "“Allow other devices on my network”).")


def lan_address() -> str | None:
    """This computer's address on the local network, for the URL other devices use (None if offline).

    Connecting a UDP socket sends nothing; it only makes the system pick the outgoing interface.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            address = str(s.getsockname()[0])
    except OSError:
        return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


class ServerControl(QObject):
    """Owns the ApiServer for the window. ``state`` is stopped, starting, serving, stopping or error."""

    changed = Signal()  # state, message or urls changed
    request_done = Signal(object)  # RequestRecord, emitted on a server thread (queued to the GUI)

    def __init__(self, engine: Engine, lock: FairLock) -> None:
        super().__init__()
        self.engine = engine
        self.lock = lock
        self.state = "stopped"
        self.message = ""  # the error, when state is "error"
        self.url = ""  # for OpenAI apps: http://127.0.0.1:8765/v1
        self.base_url = ""  # for Ollama apps: http://127.0.0.1:8765
        self.network_url = ""  # what other devices use, when allowed on the network
        self.served: ServerSettings | None = None  # the settings the running server was started with
        self.log = RequestLogModel()
        self.request_done.connect(self.log.add)
        self._executor = Executor(1, "hearth-server")
        self._server: ApiServer | None = None
        self._host: ModelHost | None = None
        self._closed = False
        self._ticket = 0  # the latest start or stop asked for; older ones' results are not shown

    @property
    def serving(self) -> bool:
        return self.state == "serving"

    # -- asked from the GUI --------------------------------------------------------------------
    def apply(self, settings: ServerSettings) -> None:
        """Serve with ``settings`` when enabled (restarting if something changed), else stop."""
        wanted = replace(settings, cors_origins=list(settings.cors_origins))
        if not wanted.enabled:
            self.stop()
            return
        if self.serving and self.served == wanted:
            return
        if wanted.allow_network and not wanted.api_key:
            self.stop(then_state="error", message=NEEDS_KEY)
            return
        ticket = self._set("starting")
        Op(lambda: self._start_blocking(wanted)).on_success(lambda _none: self._started(ticket, wanted)).on_failure(
            lambda exc: self._start_failed(ticket, exc)
        ).run(self._executor)

    def stop(self, then_state: str = "stopped", message: str = "") -> None:
        if self._server is None and self.state in ("stopped", "error"):
            self._set(then_state, message)
            return
        ticket = self._set("stopping")
        Op(self._stop_blocking).on_success(lambda _none: self._stopped(ticket, then_state, message)).on_failure(
            lambda exc: self._stopped(ticket, "error", error_text(exc))
        ).run(self._executor)

    def shutdown(self) -> None:
        """Stop serving and wait for it (the app is quitting)."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        try:
            self._stop_blocking()
            if self._host is not None and hasattr(self._host, "close"):
                self._host.close()
        except Exception:  # quitting: nothing left to tell the user
            log.exception("stopping the API server")

    # -- on the server executor ----------------------------------------------------------------
    def _start_blocking(self, settings: ServerSettings) -> None:
        from core.server import ApiServer, ModelHost, ServerConfig

        self._stop_blocking()
        if self._host is None:
            self._host = ModelHost(engine=self.engine, lock=self.lock)
        server = ApiServer(ServerConfig.from_settings(settings), self._host, on_request=self._on_request)
        server.start()
        self._server = server

    def _stop_blocking(self) -> None:
        server, self._server = self._server, None
        if server is not None and server.running:
            server.stop()

    def _on_request(self, record: RequestRecord) -> None:
        self.request_done.emit(record)  # a server thread: Qt queues it to the GUI thread

    # -- back on the GUI thread ----------------------------------------------------------------
    def _started(self, ticket: int, settings: ServerSettings) -> None:
        server = self._server
        if server is None or ticket != self._ticket:
            return
        self.served = settings
        self.url, self.base_url = server.url, server.base_url
        self.network_url = ""
        if settings.allow_network:
            lan = lan_address()
            if lan:
                self.network_url = f"http://{lan}:{settings.port}/v1"
        self._set("serving", "", ticket)

    def _stopped(self, ticket: int, state: str, message: str) -> None:
        self._set(state, message, ticket)

    def _start_failed(self, ticket: int, exc: BaseException) -> None:
        self._set("error", error_text(exc), ticket)

    def _set(self, state: str, message: str = "", ticket: int | None = None) -> int:
        """Show ``state``; an op's result (``ticket``) only if nothing was asked after it. Returns the ticket."""
        if ticket is None:
            self._ticket += 1
        elif ticket != self._ticket:
            return ticket
        self.state, self.message = state, message
        if state != "serving":
            self.served = None
            self.url = self.base_url = self.network_url = ""
        self.changed.emit()
        return self._ticket

    def describe(self) -> str:
        """The status line: what the server is doing, in a sentence."""
        if self.state == "serving":
            text = f"Serving at {self.url}"
            if self.network_url:
                text += f" · other devices: {self.network_url}"
            return text
        return {
            "starting": "Starting…",
            "stopping": "Stopping…",
            "error": self.message,
        }.get(self.state, "Stopped. Turn it on to use your models from other apps.")
