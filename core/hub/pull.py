"""Choosing what to download from a repo (``--quant``, ``--file`` or the recommended quant, and the vision
projector that comes with it) and pulling it."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import HearthError, NotFoundError
from core.hub.download import DownloadCallback, DownloadManager, DownloadTask
from core.hub.files import DEFAULT_N_CTX, list_repo_gguf, recommend_quant
from core.hub.quants import QuantGroup, RemoteFile, find_group, group_for_file, pick_projector
from core.library import ModelEntry


@dataclass
class PullPlan:
    """What ``pull`` will fetch and why."""

    repo_id: str
    revision: str | None
    group: QuantGroup
    reason: str
    mmproj: RemoteFile | None = None  # the vision projector fetched with the model and paired with it
    mmproj_reason: str = ""

    @property
    def total_bytes(self) -> int:
        return self.group.size + (self.mmproj.size if self.mmproj else 0)


def split_repo_quant(repo_id: str) -> tuple[str, str | None]:
    """``'org/repo:Q4_K_M'`` → ``('org/repo', 'Q4_K_M')`` (the ``REPO:QUANT`` form llama.cpp's ``-hf`` takes)."""
    if ":" in repo_id:
        repo, _, quant = repo_id.partition(":")
        return repo, quant.strip() or None
    return repo_id, None


def plan_pull(
    repo_id: str,
    *,
    quant: str | None = None,
    filename: str | None = None,
    revision: str | None = None,
    n_ctx: int = DEFAULT_N_CTX,
    mmproj: str | None = None,
    no_mmproj: bool = False,
) -> PullPlan:
    """The files to fetch: the named quant or file, else the quant recommended for this machine.

    When the repo has vision projectors, the one chosen by ``pick_projector``'s rule (or ``mmproj``, a file
    name or a precision) comes with the model; ``no_mmproj`` leaves it out.
    """
    repo_id, tag = split_repo_quant(repo_id)
    if tag and (quant or filename):
        raise HearthError(f"Give the quant once: '{repo_id}:{tag}' or --quant, not both.")
    quant = quant or tag
    if quant and filename:
        raise HearthError("Give --quant or --file, not both.")
    if mmproj and no_mmproj:
        raise HearthError("Give --mmproj NAME or --no-mmproj, not both.")
    groups, projectors = list_repo_gguf(repo_id, revision)
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
        rq = recommend_quant(repo_id, groups, revision, n_ctx, projectors)
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
    if mmproj and not projectors:
        raise NotFoundError(f"{repo_id} has no vision projector (mmproj) file: pull without --mmproj.")
    chosen, why = (None, "left out (--no-mmproj)") if no_mmproj else pick_projector(
        projectors, group.first_file.path, mmproj
    )
    return PullPlan(repo_id, revision, group, reason, chosen, why)


def start_pull(
    plan: PullPlan,
    *,
    name: str | None = None,
    manager: DownloadManager | None = None,
    on_progress: DownloadCallback | None = None,
) -> DownloadTask:
    """Queue the planned files for download; the task reports progress and can pause, resume, cancel.

    When the model is already in the library without its projector (an earlier pull stopped while the
    projector downloaded), only the projector is fetched, resuming what had arrived, and then paired.
    """
    manager = manager or DownloadManager()
    return manager.add(
        plan.repo_id,
        plan.group.files,
        revision=plan.revision,
        name=name,
        on_progress=on_progress,
        mmproj=plan.mmproj,
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
    mmproj: str | None = None,
    no_mmproj: bool = False,
) -> ModelEntry:
    """Download a model (and its vision projector) from the Hub into the library and return its entry."""
    plan = plan_pull(repo_id, quant=quant, filename=filename, revision=revision, mmproj=mmproj, no_mmproj=no_mmproj)
    return start_pull(plan, name=name, manager=manager, on_progress=on_progress).wait()
