"""Choosing what to download from a repo (``--quant``, ``--file`` or the recommended quant) and pulling it."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import HearthError, NotFoundError
from core.hub.download import DownloadCallback, DownloadManager, DownloadTask
from core.hub.files import DEFAULT_N_CTX, list_quants, recommend_quant
from core.hub.quants import QuantGroup, find_group, group_for_file
from core.library import ModelEntry


@dataclass
class PullPlan:
    """What ``pull`` will fetch and why."""

    repo_id: str
    revision: str | None
    group: QuantGroup
    reason: str


def plan_pull(
    repo_id: str,
    *,
    quant: str | None = None,
    filename: str | None = None,
    revision: str | None = None,
    n_ctx: int = DEFAULT_N_CTX,
) -> PullPlan:
    """The files to fetch: the named quant or file, else the quant recommended for this machine."""
    if quant and filename:
        raise HearthError("Give --quant or --file, not both.")
    groups = list_quants(repo_id, revision)
    names = ", ".join(g.name for g in groups)
    if filename:
        group = group_for_file(groups, filename)
        if group is None:
            raise NotFoundError(f"{repo_id} has no GGUF model file '{filename}': its quants are {names}.")
        reason = f"{filename} as asked"
    elif quant:
        group = find_group(groups, quant)
        if group is None:
            raise NotFoundError(f"{repo_id} has no {quant} file: its quants are {names}.")
        reason = f"{group.name} as asked"
    else:
        rq = recommend_quant(repo_id, groups, revision, n_ctx)
        group = rq.group(rq.recommended) if rq.recommended else None
        if group is None:
            raise HearthError(
                f"None of {repo_id}'s quants fits this machine ({rq.reason}): pick one with --quant ({names})."
            )
        reason = rq.reason
    if not group.complete:
        raise HearthError(
            f"{repo_id} lists only {len(group.files)} of the {group.parts_expected} parts of {group.name}: "
            "it cannot be downloaded; pick another quant."
        )
    return PullPlan(repo_id, revision, group, reason)


def start_pull(
    plan: PullPlan,
    *,
    name: str | None = None,
    manager: DownloadManager | None = None,
    on_progress: DownloadCallback | None = None,
) -> DownloadTask:
    """Queue the planned files for download; the task reports progress and can pause, resume, cancel."""
    manager = manager or DownloadManager()
    return manager.add(
        plan.repo_id, plan.group.files, revision=plan.revision, name=name, on_progress=on_progress
    )


def pull(
    repo_id: str,
    *,
    quant: str | None = None,
    filename: str | None = None,
    name: str | None = None,
    revision: str | None = None,
    manager: DownloadManager | None = None,
    on_progress: DownloadCallback | None = None,
) -> ModelEntry:
    """Download a model from the Hub into the library and return its entry (blocks until done)."""
    plan = plan_pull(repo_id, quant=quant, filename=filename, revision=revision)
    return start_pull(plan, name=name, manager=manager, on_progress=on_progress).wait()
