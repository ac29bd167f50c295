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
from typing import TYPE_CHECKING, Any

from core.errors import AlreadyExistsError, HearthError, NotFoundError, TrainingError
from core.paths import get_paths

if TYPE_CHECKING:
    from core.library import ModelEntry

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


WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors")


def import_adapter(source: str | Path, name: str | None = None) -> AdapterEntry:
    """Copy an adapter folder trained elsewhere (e.g. on a GPU box) into the library as ``name``.

    The folder is what a fine-tune saves: ``manifest.json`` and the weights. It is copied under a
    hidden name and renamed into place once complete, so a cut-short copy never lists as an adapter.
    """
    folder = Path(source).expanduser()
    if folder.is_file() and folder.name == MANIFEST:
        folder = folder.parent
    if not folder.is_dir():
        raise NotFoundError(f"{folder} is not a folder: give the adapter's folder (the one holding manifest.json).")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"{folder} has no manifest.json: give the folder a Hearth fine-tune saved.") from None
    except (OSError, ValueError):
        raise HearthError(f"{folder / MANIFEST} cannot be read as JSON: copy the adapter folder again.") from None
    if not isinstance(manifest, dict) or not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise HearthError(f"{folder} holds no adapter weights ({WEIGHT_FILES[0]}): copy the whole folder again.")
    name = check_name(name or folder.name)
    ensure_free(name)
    size = folder_size(folder)
    root = get_paths().adapters
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if size > free:
        from core.errors import DiskFullError

        raise DiskFullError(f"Importing {name} needs {size / 1e9:.2f} GB but {free / 1e9:.2f} GB is free in {root}: "
                            "free some space first.")
    work = root / f".{name}.import-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        shutil.copytree(folder, work, ignore=shutil.ignore_patterns(".*"))
        import time

        manifest["imported"] = {"from": str(folder.resolve()), "at": time.time()}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str), encoding="utf-8")
        ensure_free(name)
        os.rename(work, adapter_folder(name))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return AdapterEntry(name, adapter_folder(name), manifest)


def _sweep_trash() -> None:
    root = get_paths().adapters
    if root.is_dir():
        for folder in root.glob(".*.trash-*"):
            shutil.rmtree(folder, ignore_errors=True)


# -- the adapter and its base model in the library ---------------------------------------------


def find_base(entry: AdapterEntry, models: list[ModelEntry]) -> ModelEntry | None:
    """The library model this adapter was trained on, or None when it is not in the library.

    Matched by the manifest's base sha256 where the library knows a model's hash, else by the same
    file (path), else by name with the same size: hashing every model on each listing would read
    gigabytes.
    """
    base = entry.manifest.get("base") or {}
    sha, path, name = base.get("sha256"), base.get("path"), base.get("name")
    size = base.get("size_bytes")
    if sha:
        for model in models:
            if model.sha256 and model.sha256 == sha:
                return model
    if path:
        for model in models:
            if _same_file(model.path, str(path)) and (not sha or not model.sha256):
                return model
    if name:
        for model in models:
            if model.name == name and (not sha or not model.sha256) and (size is None or model.size_bytes == size):
                return model
    return None


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def check_base_file(entry: AdapterEntry, path: str | Path) -> str:
    """Check that ``path`` is this adapter's base model by its SHA-256; returns the hash.

    Raises ``HearthError`` saying which file is expected when it is another model.
    """
    from core.finetune.base_model import sha256_of

    wanted = str((entry.manifest.get("base") or {}).get("sha256") or "")
    got = sha256_of(Path(path))
    if wanted and got != wanted:
        base = entry.manifest.get("base") or {}
        raise HearthError(
            f"{Path(path).name} is not the model '{entry.name}' was trained on (its SHA-256 differs): pick the "
            f"file of {base.get('name') or 'the base model'}"
            + (f" ({Path(str(base['path'])).name})." if base.get("path") else ".")
        )
    return got


def lora_gguf_files(entry: AdapterEntry) -> list[Path]:
    """GGUF LoRA exports already in the adapter's folder (``NAME-lora-TYPE.gguf``), newest first."""
    files = [p for p in entry.path.glob("*-lora-*.gguf") if p.is_file()]
    return sorted(files, key=lambda p: -p.stat().st_mtime)


def ensure_lora_gguf(entry: AdapterEntry, base: str | Path | None = None) -> Path:
    """A GGUF LoRA of this adapter llama.cpp can apply: the existing export, else a new one (f32)."""
    existing = lora_gguf_files(entry)
    if existing:
        return existing[0]
    from core.gguf_export.lora import export_lora_gguf

    return export_lora_gguf(entry.path, base=base).path


def combine_adapters(names: list[str], weights: list[float], new_name: str, *, combination: str = "cat",
                     base: str | Path | None = None) -> AdapterEntry:
    """A new adapter ``new_name``: the weighted combination of adapters trained on one base model.

    Uses peft's ``add_weighted_adapter`` (``core.gguf_export.adapter_merge``; torch, so run it in a
    job or child process). The new folder gets a manifest naming its parts and their weights, and
    appears in ``list_adapters`` only once it is complete.
    """
    import time

    from core.gguf_export.adapter_merge import merge_adapters

    check_name(new_name)
    ensure_free(new_name)
    parts = [get_adapter(n) for n in names]
    hashes = {str((p.manifest.get("base") or {}).get("sha256") or p.base) for p in parts}
    if len(hashes) > 1:
        raise TrainingError(
            f"{' and '.join(names)} were trained on different base models: only adapters of one base combine."
        )
    first = parts[0].manifest
    base_path = base or (first.get("base") or {}).get("path")
    work = partial_folder(new_name)
    shutil.rmtree(work, ignore_errors=True)
    merge_adapters([p.path for p in parts], work, weights=weights, combination=combination,
                   base=str(base_path) if base_path else None)
    documents = [d for p in parts for d in (p.manifest.get("data") or {}).get("documents") or []]
    objectives = {str(p.manifest.get("objective") or "") for p in parts}
    manifest = {
        "format": 1,
        "kind": "adapter",
        "created_at": time.time(),
        "base": first.get("base") or {},
        "method": {"name": "combined", "options": {"combination": combination}},
        "objective": objectives.pop() if len(objectives) == 1 else "mixed",
        "data": {"documents": list(dict.fromkeys(documents))} if documents else {},
        "combined_from": [{"name": p.name, "weight": float(w)} for p, w in zip(parts, weights, strict=True)],
        "metrics": {},
    }
    (work / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    final = adapter_folder(new_name)
    os.rename(work, final)
    return AdapterEntry(new_name, final, manifest)
