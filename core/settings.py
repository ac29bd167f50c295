"""The user's settings: theme, default chat parameters, per-model presets.

Kept as JSON in ``Paths.settings_file`` and written atomically. A damaged file is moved aside
(``settings.corrupt-<time>.json``) and the defaults are used, so nothing the user wrote is lost.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from core.engine.params import DRAFT_MODES, GPU_LAYERS_AUTO, LoadOptions, SamplingParams
from core.errors import HearthError
from core.paths import Paths, get_paths, write_text_atomic
from core.workers import WORKER_USES, WorkerEntry, workers_from_json

Theme = Literal["system", "light", "dark"]
THEMES: tuple[str, ...] = ("system", "light", "dark")


SETTINGS_VERSION = 2  # 2: GPU layers default to Auto, and the GPU switch (Settings.gpu)
GPU_USES = ("auto", "off")
_GPU_ENV = "HEARTH_GPU"  # read by the engine's processes (core.engine.backends.gpu_disabled)
_GPU_ENV_MINE = "HEARTH_GPU_FROM_SETTINGS"  # set beside it when the settings, not the user's shell, turned it off


def apply_gpu(settings: Settings) -> None:
    """Make Settings.gpu hold for the engine processes this process starts (they read ``HEARTH_GPU``): "off" sets
    it; "auto" clears it only where these settings set it (a ``HEARTH_GPU=off`` from the user's shell stays)."""
    if settings.gpu == "off":
        if os.environ.get(_GPU_ENV, "").lower() != "off":
            os.environ[_GPU_ENV] = "off"
            os.environ[_GPU_ENV_MINE] = "1"
    elif os.environ.pop(_GPU_ENV_MINE, None):
        os.environ.pop(_GPU_ENV, None)


@dataclass
class ChatParameters:
    """Everything the chat's parameters panel sets: sampling plus the load options it exposes."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    seed: int = -1
    max_tokens: int = 512
    n_ctx: int = 4096
    n_gpu_layers: int = GPU_LAYERS_AUTO  # as many as fit; -1 all, 0 none
    n_threads: int = 0  # 0 = llama.cpp's choice (the physical cores)
    draft: str = "off"  # speculative decoding: "off", "lookup" or "model" (SamplingParams.draft)
    draft_model: str = ""  # the draft model's GGUF path, loaded beside the model when draft is "model"
    draft_max: int = 8  # most tokens per draft

    def sampling(self) -> SamplingParams:
        draft = self.draft if self.draft != "model" or self.draft_model else "off"
        return SamplingParams(
            temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, min_p=self.min_p,
            repeat_penalty=self.repeat_penalty, seed=self.seed, max_tokens=self.max_tokens,
            draft=draft, draft_max=self.draft_max,
        )

    def load_options(self) -> LoadOptions:
        draft_model = self.draft_model if self.draft == "model" and self.draft_model else None
        return LoadOptions(n_ctx=self.n_ctx, n_gpu_layers=self.n_gpu_layers, n_threads=self.n_threads or None,
                           draft_model=draft_model)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, *, version: int = SETTINGS_VERSION) -> ChatParameters:
        """Known keys of ``data`` with the right types; anything else falls back to the default.

        Files before version 2 saved GPU layers 0 as the default (the GPU was off unless set): read as Auto."""
        if data is not None and version < 2 and data.get("n_gpu_layers") == 0:
            data = {k: v for k, v in data.items() if k != "n_gpu_layers"}
        result = cls()
        for f in fields(cls):
            if data is None or f.name not in data:
                continue
            default = getattr(result, f.name)
            try:
                setattr(result, f.name, type(default)(data[f.name]))
            except (TypeError, ValueError):
                continue
        if result.draft not in DRAFT_MODES:
            result.draft = cls.draft
        result.draft_max = min(max(result.draft_max, 1), 64)
        result.n_gpu_layers = max(result.n_gpu_layers, GPU_LAYERS_AUTO)
        return result


@dataclass
class ServerSettings:
    """The local API server (Settings > Server; ``hearth serve`` reads the same defaults)."""

    enabled: bool = False
    port: int = 8765
    allow_network: bool = False  # listen on every interface (0.0.0.0); needs an API key
    api_key: str = ""  # "" = none (only allowed on loopback)
    cors_origins: list[str] = field(default_factory=list)  # browser apps allowed to call the server
    idle_minutes: int = 10  # a model loaded for the server is unloaded after this long unused (0 = never)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ServerSettings:
        result = cls()
        if not isinstance(data, dict):
            return result
        for f in fields(cls):
            if f.name not in data:
                continue
            default = getattr(result, f.name)
            value = data[f.name]
            if isinstance(default, list):
                if isinstance(value, list):
                    setattr(result, f.name, [str(v) for v in value])
            elif isinstance(default, bool):
                if isinstance(value, bool):
                    setattr(result, f.name, value)
            else:
                try:
                    setattr(result, f.name, type(default)(value))
                except (TypeError, ValueError):
                    continue
        if not 1 <= result.port <= 65535:
            result.port = cls.port
        return result


@dataclass
class Settings:
    theme: str = "system"
    defaults: ChatParameters = field(default_factory=ChatParameters)
    presets: dict[str, ChatParameters] = field(default_factory=dict)  # by library model name
    system_prompt: str = ""
    last_model: str | None = None
    server: ServerSettings = field(default_factory=ServerSettings)
    tool_timeout: float = 60.0  # seconds a tool call (MCP, Settings > Tools) may take
    workers: list[WorkerEntry] = field(default_factory=list)  # other machines (core.workers, Settings > Other machines)
    workers_use: str = "needed"  # core.workers.WORKER_USES: split only models too large for here, or every model
    gpu: str = "auto"  # GPU_USES: "auto" runs models on the GPU where one is found, "off" never loads a GPU backend

    def parameters_for(self, model: str | None) -> ChatParameters:
        """The model's preset when it has one, else the default parameters."""
        preset = self.presets.get(model or "")
        return ChatParameters.from_dict((preset or self.defaults).to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SETTINGS_VERSION,
            "theme": self.theme,
            "defaults": self.defaults.to_dict(),
            "presets": {name: p.to_dict() for name, p in self.presets.items()},
            "system_prompt": self.system_prompt,
            "last_model": self.last_model,
            "server": self.server.to_dict(),
            "tool_timeout": self.tool_timeout,
            "workers": [w.to_dict() for w in self.workers],
            "workers_use": self.workers_use,
            "gpu": self.gpu,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        theme = data.get("theme") if data.get("theme") in THEMES else "system"
        raw = data.get("presets")
        presets: dict[str, Any] = raw if isinstance(raw, dict) else {}
        last = data.get("last_model")
        raw_version = data.get("version")
        version = raw_version if isinstance(raw_version, int) else 1
        return cls(
            theme=str(theme),
            defaults=ChatParameters.from_dict(data.get("defaults") if isinstance(data.get("defaults"), dict) else None,
                                              version=version),
            presets={str(k): ChatParameters.from_dict(v, version=version) for k, v in presets.items()
                     if isinstance(v, dict)},
            system_prompt=str(data.get("system_prompt") or ""),
            last_model=str(last) if isinstance(last, str) else None,
            server=ServerSettings.from_dict(data.get("server")),
            tool_timeout=_timeout(data.get("tool_timeout")),
            workers=workers_from_json(data.get("workers")),
            workers_use=data["workers_use"] if data.get("workers_use") in WORKER_USES else "needed",
            gpu=data["gpu"] if data.get("gpu") in GPU_USES else "auto",
        )


def _timeout(value: Any) -> float:
    """A tool-call timeout read from the file: a number from 1 to 3600 seconds, else the default."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return 60.0
    return min(3600.0, max(1.0, seconds)) if seconds == seconds else 60.0


def load_settings(paths: Paths | None = None) -> Settings:
    """The saved settings, or the defaults when there are none (a damaged file is kept aside)."""
    path = (paths or get_paths()).settings_file
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Settings()
    except OSError as exc:
        raise HearthError(f"Cannot read the settings file {path} ({exc}): check its permissions.") from exc
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except ValueError:
        try:
            os.replace(path, path.with_name(f"settings.corrupt-{int(time.time())}.json"))
        except OSError:
            pass
        return Settings()
    settings = Settings.from_dict(data)
    apply_gpu(settings)
    return settings


def save_settings(settings: Settings, paths: Paths | None = None) -> None:
    """Write the settings atomically (a crash mid-write keeps the previous file)."""
    path = (paths or get_paths()).settings_file
    write_text_atomic(path, json.dumps(settings.to_dict(), indent=1))
    apply_gpu(settings)
