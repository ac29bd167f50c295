"""Listing a repo's GGUF files with sizes and SHA-256, grouped by quant, with a fit verdict for each."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import HearthError
from core.hub.client import api, check_repo_id, ensure_online, hub_errors
from core.hub.quants import (
    QuantGroup,
    RemoteFile,
    fallback_choice,
    group_gguf_files,
    pick_projector,
    projector_files,
)

if TYPE_CHECKING:
    from core.workers import WorkerProbe

DEFAULT_N_CTX = 4096


def list_repo_files(repo_id: str, revision: str | None = None) -> list[RemoteFile]:
    """Every file of a model repo with its size and, for LFS files, the SHA-256 the Hub lists."""
    repo_id = check_repo_id(repo_id)
    ensure_online(f"list the files of {repo_id}")
    from huggingface_hub.hf_api import RepoFile as HfRepoFile

    with hub_errors(f"list the files of {repo_id}", repo_id):
        entries = api().list_repo_tree(repo_id, recursive=True, revision=revision)
        files = [
            RemoteFile(
                path=e.path, size=int(e.lfs.size if e.lfs else e.size), sha256=e.lfs.sha256 if e.lfs else None
            )
            for e in entries
            if isinstance(e, HfRepoFile)
        ]
    return files


def list_quants(repo_id: str, revision: str | None = None) -> list[QuantGroup]:
    """The repo's GGUF models, one per quant (split parts together), smallest first.

    Each group's ``mmproj`` is the vision projector that comes with it, when the repo has one.
    """
    return list_repo_gguf(repo_id, revision)[0]


def list_repo_gguf(repo_id: str, revision: str | None = None) -> tuple[list[QuantGroup], list[RemoteFile]]:
    """The repo's GGUF models (as ``list_quants``) and its vision projector files, smallest first."""
    files = list_repo_files(repo_id, revision)
    groups = group_gguf_files(files)
    if not groups:
        raise HearthError(
            f"{repo_id} has no GGUF model files: Hearth runs GGUF models; find one with 'hearth search NAME'."
        )
    projectors = projector_files(files)
    for g in groups:
        g.mmproj = pick_projector(projectors, g.first_file.path)[0]
    return groups, projectors


@dataclass
class RepoQuants:
    """A repo's quants with a fit verdict for each on this machine and the one to download."""

    repo_id: str
    revision: str | None
    groups: list[QuantGroup]
    recommended: str | None
    reason: str
    fit_error: str | None = None  # why there are no verdicts, when there are none
    shape: Any = field(default=None, repr=False)
    projectors: list[RemoteFile] = field(default_factory=list)  # vision projector files (mmproj), never quants

    @property
    def mmproj(self) -> RemoteFile | None:
        """The projector that comes with the recommended quant (or any quant), when there is one."""
        chosen = self.group(self.recommended) if self.recommended else None
        return chosen.mmproj if chosen else next((g.mmproj for g in self.groups if g.mmproj), None)

    @property
    def mmproj_reason(self) -> str:
        chosen = self.mmproj
        if chosen is None:
            return "no vision projector"
        chosen_group = self.group(self.recommended) if self.recommended else None
        model = (chosen_group or self.groups[0]).first_file.path if self.groups else None
        return pick_projector(self.projectors, model)[1]

    def group(self, name: str) -> QuantGroup | None:
        return next((g for g in self.groups if g.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for g in self.groups:
            verdict = g.fit
            rows.append(
                {
                    "name": g.name,
                    "quant": g.quant,
                    "size_bytes": g.size,
                    "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in g.files],
                    "complete": g.complete,
                    "recommended": g.name == self.recommended,
                    "mmproj": g.mmproj.path if g.mmproj else None,
                    "fit": None
                    if verdict is None
                    else {
                        "kind": getattr(verdict, "kind", None),
                        "gpu_layers": getattr(verdict, "gpu_layers", None),
                        "total_bytes": getattr(verdict, "total_bytes", None),
                        "reason": getattr(verdict, "reason", None),
                    },
                }
            )
        return {
            "repo": self.repo_id,
            "revision": self.revision,
            "recommended": self.recommended,
            "reason": self.reason,
            "fit_error": self.fit_error,
            "quants": rows,
            "projectors": [
                {"path": f.path, "size": f.size, "sha256": f.sha256, "chosen": f == self.mmproj}
                for f in self.projectors
            ],
        }


def recommend_quant(
    repo_id: str,
    groups: list[QuantGroup],
    revision: str | None = None,
    n_ctx: int = DEFAULT_N_CTX,
    projectors: list[RemoteFile] | None = None,
    workers: WorkerProbe | None = None,
) -> RepoQuants:
    """Fit verdicts for each quant and the recommended one, reading the GGUF header of one file only.

    ``workers``: a ``core.workers.WorkerProbe`` whose answering workers count in the verdicts (Discover).

    All quants of a repo share the architecture, so one header gives the shape; each quant's own
    weight size comes from the listing. A vision projector that comes with the quants is counted
    (its header is read too). When the header cannot be read, the quants are returned without
    verdicts, ``fit_error`` says why, and Q4_K_M (or the nearest quant) is recommended.
    """
    projectors = list(projectors or [])
    complete = [g for g in groups if g.complete]
    fit_error: str | None = None
    shape: Any = None
    if complete:
        try:
            from core.fit import read_remote_shape, recommend

            # The smallest complete quant: its header is as informative as any and cheapest to serve.
            sample = min(complete, key=lambda g: g.size)
            shape = read_remote_shape(repo_id, sample.first_file.path, revision=revision)
            if sample.mmproj is not None:  # pulled with the model and loaded beside it: count its memory
                from core.fit import read_remote_projector_shape

                try:
                    projector = read_remote_projector_shape(repo_id, sample.mmproj.path, revision=revision)
                except HearthError:
                    projector = None  # an unreadable projector header: judge the model alone
                shape = shape.with_projector(projector)
            machines: dict[str, Any] = {} if workers is None else {
                "workers": workers.answering, "worker_names": workers.names}  # the user's other machines
            rec = recommend([(g.name, g.size) for g in complete], shape, n_ctx=n_ctx, **machines)
        except ImportError:
            fit_error = "fit estimates are not available in this build"
        except HearthError as exc:
            fit_error = f"could not read the model's header ({exc})"
        except Exception as exc:  # a server answering garbage must not stop the listing
            fit_error = f"could not read the model's header ({type(exc).__name__}: {exc})"
        else:
            for g in complete:
                g.fit = rec.verdicts.get(g.name)
            chosen = rec.quant if rec.quant in {g.name for g in complete} else None
            return RepoQuants(repo_id, revision, groups, chosen, rec.reason, None, shape, projectors)
    else:
        fit_error = "no complete GGUF model in the listing"
    fallback = fallback_choice(groups)
    reason = (
        f"{fallback.name} is the usual balance of size and quality; there is no fit estimate"
        if fallback
        else f"nothing to recommend: {fit_error}"
    )
    return RepoQuants(
        repo_id, revision, groups, fallback.name if fallback else None, reason, fit_error, shape, projectors
    )


def repo_quants(repo_id: str, revision: str | None = None, n_ctx: int = DEFAULT_N_CTX,
                workers: WorkerProbe | None = None) -> RepoQuants:
    """List a repo's quants (and vision projectors) and judge each for this machine (``hearth files``);
    ``workers`` (``core.workers.probe_enabled()``) counts the user's other machines too."""
    groups, projectors = list_repo_gguf(repo_id, revision)
    return recommend_quant(repo_id, groups, revision, n_ctx, projectors, workers)
