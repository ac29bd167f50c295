"""The Hugging Face Hub: searching GGUF repos, listing their quants with fit verdicts, downloading.

huggingface_hub is imported inside the functions that talk to the Hub, so importing this package
stays cheap for the desktop app's start.
"""

from __future__ import annotations

from core.hub.download import DownloadManager, DownloadProgress, DownloadTask
from core.hub.files import (
    RepoQuants,
    list_quants,
    list_repo_files,
    list_repo_gguf,
    recommend_quant,
    repo_quants,
)
from core.hub.pull import PullPlan, plan_pull, pull, start_pull
from core.hub.quants import (
    QuantGroup,
    RemoteFile,
    group_gguf_files,
    parse_quant,
    pick_projector,
    projector_files,
)
from core.hub.search import HubModel, search_models
from core.hub.transfer import RetryPolicy
from core.library.projector import is_projector_file

__all__ = [
    "DownloadManager",
    "DownloadProgress",
    "DownloadTask",
    "HubModel",
    "PullPlan",
    "QuantGroup",
    "RemoteFile",
    "RepoQuants",
    "RetryPolicy",
    "group_gguf_files",
    "is_projector_file",
    "list_quants",
    "list_repo_files",
    "list_repo_gguf",
    "parse_quant",
    "pick_projector",
    "plan_pull",
    "projector_files",
    "pull",
    "recommend_quant",
    "repo_quants",
    "search_models",
    "start_pull",
]
