"""Trained adapters on disk: one folder each under the library's adapters folder, with a manifest.

A folder is complete when it has ``manifest.json``; work in progress lives in a hidden
``.NAME.partial`` folder beside it (kept after a cancel or a crash so ``--resume`` can continue) and is
renamed into place only when training, evaluation and saving have all finished. Removing an adapter
renames its folder to a hidden ``.NAME.trash-…`` name first, so it leaves the listing at once and a
deletion cut short never leaves a half-deleted adapter that still looks complete.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import AlreadyExistsError, HearthError, NotFoundError, TrainingError
from core.paths import get_paths

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class AdapterEntry:
    name: str
    path: Path
    manifest: dict[str, Any]

    @property
    def base(self) -> str:
        return str(self.manifest.get("base", {}).get("name", ""))

    @property
    def method(self) -> str:
        return str(self.manifest.get("method", {}).get("name", ""))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), **self.manifest}


def check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}", name):
        raise TrainingError(
            f"'{name}' cannot name an adapter: use letters, digits, '.', '_', '+' or '-' (up to 100 characters)."
        )
    return name


def adapter_folder(name: str) -> Path:
    return get_paths().adapters / check_name(name)


def partial_folder(name: str) -> Path:
    return get_paths().adapters / f".{check_name(name)}.partial"


def ensure_free(name: str) -> None:
    if (adapter_folder(name) / MANIFEST).exists() or adapter_folder(name).exists():
        raise AlreadyExistsError(f"An adapter called '{name}' already exists: pick another name with --out.")


def default_name(base_name: str, method: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._+-]+", "-", Path(base_name).stem).strip("-").lower() or "model"
    n = 1
    while True:
        name = f"{stem}-{method}" + (f"-{n}" if n > 1 else "")
        if not adapter_folder(name).exists() and not partial_folder(name).exists():
            return name
        n += 1


def list_adapters() -> list[AdapterEntry]:
    """Every complete adapter, newest first."""
    root = get_paths().adapters
    entries = []
    if root.is_dir():
        for folder in root.iterdir():
            manifest_path = folder / MANIFEST
            if folder.name.startswith(".") or not manifest_path.is_file():
                continue
            try:
                manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            entries.append(AdapterEntry(folder.name, folder, manifest))
    return sorted(entries, key=lambda e: -float(e.manifest.get("created_at", 0)))


def get_adapter(name: str) -> AdapterEntry:
    for entry in list_adapters():
        if entry.name == name:
            return entry
    names = ", ".join(e.name for e in list_adapters()) or "none yet"
    raise NotFoundError(f"No adapter called '{name}' (adapters: {names}). 'hearth adapters' lists them.")


def folder_size(path: Path) -> int:
    """Bytes of the files under ``path`` (links not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def running_jobs(name: str) -> list[int]:
    """Process ids of fine-tuning jobs of this library that are writing the adapter ``name``.

    A job is ``python -m core.jobs finetune SPEC.json`` (``core.jobs.JobProcess``, from the CLI and
    the window alike). Its record (``core.jobs``: ``<data>/jobs/NAME/job.json``) names the process when
    it is alive; otherwise processes are scanned: a job's spec file names the adapter and lives as long
    as the job. A job whose ``HEARTH_HOME`` differs works on another library; one whose environment
    cannot be read counts.
    """
    import psutil

    from core import jobs

    record = jobs.read_record(name)
    if record is not None and jobs.record_is_live(record):
        return [int(record["pid"])]
    ours = os.environ.get("HEARTH_HOME")
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info.get("cmdline") or []
        spec_path = _job_spec_argument(cmd)
        if spec_path is None or proc.info["pid"] == os.getpid():
            continue
        try:
            if not os.path.isabs(spec_path):
                spec_path = os.path.join(proc.cwd(), spec_path)
            spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
        except (OSError, ValueError, psutil.Error):
            continue  # the job has just ended (its spec is removed), or it is not ours to read
        if not isinstance(spec, dict) or spec.get("name") != name:
            continue
        try:
            if proc.environ().get("HEARTH_HOME") != ours:
                continue
        except psutil.Error:
            pass
        pids.append(int(proc.info["pid"]))
    return pids


def _job_spec_argument(cmd: list[str]) -> str | None:
    for i in range(len(cmd) - 3):
        if cmd[i] == "-m" and cmd[i + 1] == "core.jobs" and cmd[i + 2] == "finetune":
            return cmd[i + 3]
    return None


@dataclass(frozen=True)
class RemovedAdapter:
    """What ``remove_adapter`` deleted: the adapter and/or an interrupted run's work folder."""

    name: str
    folders: list[Path] = field(default_factory=list)
    bytes_freed: int = 0
    had_adapter: bool = False
    had_interrupted_run: bool = False


def remove_adapter(name: str) -> RemovedAdapter:
    """Delete the adapter ``name`` and the work folder of an interrupted run of that name.

    Refused (``TrainingError``) while a fine-tuning job is writing that name. Each folder is first
    renamed to a hidden trash name in the same folder (atomic on one file system), then deleted.
    """
    final, work = adapter_folder(name), partial_folder(name)
    targets = [folder for folder in (final, work) if folder.exists()]
    if not targets:
        names = ", ".join(e.name for e in list_adapters()) or "none yet"
        raise NotFoundError(f"No adapter called '{name}' (adapters: {names}). 'hearth adapters' lists them.")
    pids = running_jobs(name)
    if pids:
        raise TrainingError(
            f"A fine-tuning job (process {pids[0]}) is writing '{name}': stop it first (Ctrl-C where it runs, "
            "or Stop on the Fine-tune page), then remove it."
        )
    _sweep_trash()
    freed = 0
    for folder in targets:
        size = folder_size(folder)
        trash = folder.with_name(f".{name}.trash-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.rename(folder, trash)
        except OSError as exc:
            raise HearthError(
                f"Cannot remove {folder} ({exc.strerror or exc}): close what uses it (a chat with this adapter "
                "loaded, a file manager) and try again."
            ) from exc
        shutil.rmtree(trash, ignore_errors=True)  # what is left (a file held open) goes at the next removal
        freed += size
    return RemovedAdapter(name, targets, freed, had_adapter=final in targets, had_interrupted_run=work in targets)


def _sweep_trash() -> None:
    root = get_paths().adapters
    if root.is_dir():
        for folder in root.glob(".*.trash-*"):
            shutil.rmtree(folder, ignore_errors=True)
