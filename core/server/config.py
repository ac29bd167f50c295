"""The server's settings, its request log entries and the error it raises when it cannot start."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from core.errors import HearthError
from core.settings import ServerSettings

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
CLIP_CHARS = 200  # the most of a client-chosen text (model name, path, method) that a log entry keeps


def clip(text: str, limit: int = CLIP_CHARS) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis: a client must not be able to flood the log."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ServerStartError(HearthError):
    """The API server could not start listening (port in use, network access without a key)."""


@dataclass
class ServerConfig:
    """Where the server listens and what it lets in."""

    host: str = "127.0.0.1"
    port: int = 8765  # 0: a free port (tests)
    api_key: str = ""  # "" = no key (only allowed on loopback)
    cors_origins: list[str] = field(default_factory=list)  # browser origins allowed to call the server
    idle_unload_s: float = 600.0  # unload a model the server loaded after this long unused (0: never)
    # Room for a few photos: a phone's 3-5 MB JPEG is 4-7 MB as base64 (OpenAI allows 20 MB per image).
    max_body_bytes: int = 32 * 2**20

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> ServerConfig:
        return cls(
            host="0.0.0.0" if settings.allow_network else "127.0.0.1",
            port=settings.port,
            api_key=settings.api_key,
            cors_origins=list(settings.cors_origins),
            idle_unload_s=float(settings.idle_minutes) * 60.0,
        )

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class RequestRecord:
    """One answered request, for the live log (Settings > Server) and the terminal."""

    time: float  # when it arrived (time.time())
    client: str  # the caller's address
    method: str
    path: str
    model: str | None
    status: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # arrival to last byte sent

    def __post_init__(self) -> None:
        # Every text here can be chosen by the client: each is cut to CLIP_CHARS wherever the record is made,
        # so the terminal log, the window's live log and its tooltips stay readable.
        for name in ("client", "method", "path"):
            object.__setattr__(self, name, clip(str(getattr(self, name))))
        if self.model is not None:
            object.__setattr__(self, "model", clip(str(self.model)))

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 and self.completion_tokens else 0.0
