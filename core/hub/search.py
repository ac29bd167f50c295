"""Searching the Hub for GGUF model repositories."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from core.errors import HearthError
from core.hub.client import api, ensure_online, hub_errors

SortKey = Literal["downloads", "likes", "modified"]
SORT_KEYS: tuple[str, ...] = ("downloads", "likes", "modified")
_HF_SORT = {"downloads": "downloads", "likes": "likes", "modified": "last_modified"}
# What the Hub is asked to return for each model (``expand``): enough for a listing in one request.
EXPAND = ["author", "downloads", "likes", "lastModified", "gguf", "safetensors", "tags", "config"]


@dataclass
class HubModel:
    """One GGUF model repository as the Hub describes it in a search."""

    id: str
    author: str | None = None
    downloads: int | None = None
    likes: int | None = None
    last_modified: str | None = None  # ISO 8601
    parameters: int | None = None
    architecture: str | None = None
    context_length: int | None = None
    tags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _architecture(gguf: dict[str, Any] | None, config: dict[str, Any] | None) -> str | None:
    if gguf and isinstance(gguf.get("architecture"), str):
        return str(gguf["architecture"])
    if config:
        if isinstance(config.get("model_type"), str):
            return str(config["model_type"])
        archs = config.get("architectures")
        if isinstance(archs, list) and archs and isinstance(archs[0], str):
            return archs[0]
    return None


def model_from_info(info: Any) -> HubModel:
    """A ``HubModel`` from a huggingface_hub ``ModelInfo``."""
    gguf = info.gguf if isinstance(getattr(info, "gguf", None), dict) else None
    config = info.config if isinstance(getattr(info, "config", None), dict) else None
    parameters: int | None = None
    if gguf and isinstance(gguf.get("total"), int):
        parameters = int(gguf["total"])
    elif getattr(info, "safetensors", None) is not None:
        parameters = int(info.safetensors.total)
    modified = info.last_modified
    context = gguf.get("context_length") if gguf else None
    return HubModel(
        id=info.id,
        author=info.author or (info.id.split("/")[0] if "/" in info.id else None),
        downloads=info.downloads,
        likes=info.likes,
        last_modified=modified.isoformat() if isinstance(modified, datetime) else None,
        parameters=parameters,
        architecture=_architecture(gguf, config),
        context_length=int(context) if isinstance(context, int) else None,
        tags=list(info.tags or []),
    )


def search_models(query: str = "", *, sort: SortKey = "downloads", limit: int = 20) -> list[HubModel]:
    """GGUF model repos whose id contains ``query``, most downloaded (or liked, or recent) first."""
    if sort not in _HF_SORT:
        raise HearthError(f"Cannot sort by '{sort}': use one of {', '.join(SORT_KEYS)}.")
    if limit < 1:
        raise HearthError("--limit must be at least 1.")
    ensure_online("search the Hub")
    with hub_errors("search the Hub"):
        infos = api().list_models(
            search=query or None,
            filter="gguf",
            sort=_HF_SORT[sort],  # type: ignore[arg-type]
            limit=limit,
            expand=EXPAND,  # type: ignore[arg-type]
        )
        models = [model_from_info(i) for i in infos]
    # The Hub sorts descending already; sorting again keeps the order right for any server.
    key = {"downloads": "downloads", "likes": "likes", "modified": "last_modified"}[sort]
    models.sort(key=lambda m: (getattr(m, key) is not None, getattr(m, key) or 0), reverse=True)
    return models[:limit]
