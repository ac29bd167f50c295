"""The local API server: Hearth's models for other apps, OpenAI-compatible (/v1) and Ollama-compatible (/api).

Built on FastAPI + uvicorn. FastAPI because the request bodies are pydantic models: every field is
validated (wrong types and ranges become 400s that name the field), the shapes live in one place
per API (``openai_types``, ``ollama_routes``) and ``/docs`` shows them; its cost over plain
Starlette (which it is built on) is one small package. uvicorn runs it on a background thread so
the window (or ``hearth serve``) owns its lifetime.

The server shares one ``Engine`` with the window through ``ModelHost`` and a first-come-first-served
``FairLock``; each request's generation runs on its own thread and is cancelled when its client goes.
"""

from __future__ import annotations

from core.server.config import RequestRecord, ServerConfig, ServerStartError
from core.server.errors import ModelNotFound
from core.server.host import ModelHost, ServedModel
from core.server.server import ApiServer

__all__ = ["ApiServer", "ModelHost", "ModelNotFound", "RequestRecord", "ServedModel", "ServerConfig",
           "ServerStartError"]
