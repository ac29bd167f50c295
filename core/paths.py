"""Where Hearth keeps its data.

platformdirs gives the per-OS folders; the environment variable ``HEARTH_HOME`` overrides all of
them with one folder (tests use it so they never touch the real home).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "Hearth"


@dataclass(frozen=True)
class Paths:
    data: Path
    config: Path
    cache: Path
    logs: Path

    @property
    def models(self) -> Path:
        return self.data / "models"

    @property
    def adapters(self) -> Path:
        return self.data / "adapters"

    @property
    def downloads(self) -> Path:
        return self.data / "downloads"

    @property
    def library_index(self) -> Path:
        return self.data / "library.json"

    @property
    def chats_db(self) -> Path:
        return self.data / "chats.sqlite3"

    @property
    def settings_file(self) -> Path:
        return self.config / "settings.json"

    def ensure(self) -> Paths:
        for folder in (self.data, self.config, self.cache, self.logs, self.models, self.adapters):
            folder.mkdir(parents=True, exist_ok=True)
        return self


def get_paths() -> Paths:
    """The folders for this user, or the ones under ``$HEARTH_HOME`` when it is set."""
    home = os.environ.get("HEARTH_HOME")
    if home:
        root = Path(home).expanduser().resolve()
        return Paths(data=root / "data", config=root / "config", cache=root / "cache", logs=root / "logs")
    import platformdirs

    return Paths(
        data=Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
        config=Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
        cache=Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)),
        logs=Path(platformdirs.user_log_dir(APP_NAME, appauthor=False)),
    )


def hf_hub_cache() -> Path:
    """The Hugging Face cache folder, as huggingface_hub resolves it (without importing it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "huggingface"
    )
    return Path(hf_home).expanduser() / "hub"


@contextmanager
def atomic_write(path: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[object]:
    """Open a temporary file beside ``path`` and rename it over ``path`` only once fully written.

    A crash or full disk mid-write leaves the old file untouched and no half-written file behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_write(path) as handle:
        handle.write(text)  # type: ignore[attr-defined]
