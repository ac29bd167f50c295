"""``ApiServer``: uvicorn serving the app on a background thread, started and stopped by its owner."""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from core.server.config import RequestRecord, ServerConfig, ServerStartError
from core.server.host import ModelHost

log = logging.getLogger("hearth.server")


class ApiServer:
    """The local API server over a ``ModelHost``. ``start()`` returns once it is listening."""

    def __init__(self, config: ServerConfig, host: ModelHost,
                 on_request: Callable[[RequestRecord], None] | None = None) -> None:
        self.config, self.host, self.on_request = config, host, on_request
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port = config.port
        self.error: str | None = None  # why the serving thread stopped, if it failed

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and bool(self._server and self._server.started)

    @property
    def base_url(self) -> str:
        host = self.config.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        if ":" in shown:
            shown = f"[{shown}]"
        return f"http://{shown}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL (``…/v1``); Ollama clients take ``base_url``."""
        return f"{self.base_url}/v1"

    def start(self, timeout: float = 15.0) -> None:
        """Listen and serve on a background thread; raises ``ServerStartError`` with what to do."""
        if self.running:
            return
        config = self.config
        if not config.loopback and not config.api_key:
            raise ServerStartError(
                f"Refusing to listen on {config.host} without an API key: other devices could use your models. "
                "Set an API key (Settings > Server, or --api-key) or listen on 127.0.0.1 only."
            )
        sock = self._bind()
        import uvicorn

        from core.server.app import create_app

        self.host.idle_unload_s = config.idle_unload_s
        app = create_app(config, self.host, self.on_request)
        uv_config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                   timeout_graceful_shutdown=3, timeout_keep_alive=30, ws="none")
        server = uvicorn.Server(uv_config)
        self._server, self._socket, self.error = server, sock, None

        def serve() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # reported through .error
                self.error = f"The server stopped: {exc}"
                log.exception("API server failed")

        self._thread = threading.Thread(target=serve, name="hearth-api-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(self.error or "The server did not start listening: see Hearth's log.")
            time.sleep(0.01)

    def _bind(self) -> socket.socket:
        host, port = self.config.host, self.config.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise ServerStartError(
                    f"Port {port} is in use by another program: pick another port in Settings > Server."
                ) from exc
            if exc.errno == errno.EACCES:
                raise ServerStartError(f"Not allowed to listen on port {port}: pick a port above 1024.") from exc
            raise ServerStartError(f"Cannot listen on {host}:{port} ({exc.strerror}): check the address.") from exc
        sock.listen(128)
        sock.set_inheritable(True)
        self.port = int(sock.getsockname()[1])
        return sock

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening, end open answers (their generation is cancelled) and wait for the thread."""
        server, thread = self._server, self._thread
        if server is not None:
            server.should_exit = True
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if self._socket is not None:
            try:
                self._socket.close()
            except OSError:
                pass
        self._server, self._thread, self._socket = None, None, None
