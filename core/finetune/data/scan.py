"""What a set of documents holds for training, file by file, before anything trains.

``scan_documents`` uses the readers training uses (``core.finetune.data.documents``), extracting text
only, so a file is skipped here exactly when training would skip it. The Fine-tune page shows the scan,
and ``core.finetune.cost`` sizes its estimate from it. Nothing here imports torch or Qt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import DatasetError
from core.finetune.data.documents import MIN_CHARS, SUFFIXES, clean_text, extract_text, find_files
from core.finetune.planner import estimate_tokens

__all__ = ["DocumentFile", "DocumentScan", "scan_documents"]


@dataclass(frozen=True)
class DocumentFile:
    """One file of a document set: usable (``tokens`` set) or skipped (``reason`` set)."""

    path: str
    type: str  # the suffix without its dot, lower case ("pdf"); "" when the file has none
    size: int  # bytes on disk
    chars: int = 0  # characters of cleaned text
    tokens: int | None = None  # estimated: characters / 4 (core.finetune.planner.estimate_tokens)
    reason: str | None = None  # why it is skipped

    @property
    def skipped(self) -> bool:
        return self.reason is not None


@dataclass(frozen=True)
class DocumentScan:
    """What a set of documents holds for training, file by file."""

    files: list[DocumentFile] = field(default_factory=list)
    usable: bool = False
    why_not: str | None = None  # when not usable: what to do, in words

    @property
    def usable_files(self) -> list[DocumentFile]:
        return [f for f in self.files if not f.skipped]

    @property
    def skipped_files(self) -> list[DocumentFile]:
        return [f for f in self.files if f.skipped]

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def total_chars(self) -> int:
        return sum(f.chars for f in self.files)

    @property
    def total_tokens(self) -> int:
        return sum(f.tokens or 0 for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"files": [dataclasses.asdict(f) for f in self.files], "usable": self.usable, "why_not": self.why_not,
                "total_size": self.total_size, "total_chars": self.total_chars, "total_tokens": self.total_tokens}


def scan_documents(paths: Sequence[str]) -> DocumentScan:
    """Each document file under ``paths`` (files, or folders searched as training searches them).

    Uses the readers training uses (``core.finetune.data.documents``), extracting text only: a file
    is skipped here exactly when training would skip it. A path that does not exist is listed as skipped.
    """
    files: list[DocumentFile] = []
    for item in paths:
        try:
            found = find_files([item])
        except DatasetError:
            files.append(DocumentFile(str(Path(item).expanduser()), _kind(Path(item)), 0, reason="does not exist"))
            continue
        files.extend(_scan_file(path) for path in found)
    usable = any(not f.skipped for f in files)
    return DocumentScan(files, usable, None if usable else _why_not(files))


def _kind(path: Path) -> str:
    return path.suffix.lower().lstrip(".")


def _scan_file(path: Path) -> DocumentFile:
    try:
        size = path.stat().st_size
    except OSError as exc:
        return DocumentFile(str(path), _kind(path), 0, reason=f"cannot be read ({exc.strerror or exc})")
    if path.suffix.lower() not in SUFFIXES:
        return DocumentFile(str(path), _kind(path), size,
                            reason=f"unsupported type '{path.suffix or 'none'}' (use {', '.join(SUFFIXES)})")
    try:
        text = clean_text(extract_text(path))
    except DatasetError as exc:
        return DocumentFile(str(path), _kind(path), size, reason=str(exc))
    if len(text) < MIN_CHARS:
        return DocumentFile(str(path), _kind(path), size, len(text),
                            reason="no text (empty, or a scanned image without a text layer)")
    return DocumentFile(str(path), _kind(path), size, len(text), estimate_tokens(len(text)))


def _why_not(files: list[DocumentFile]) -> str:
    if not files:
        return "No files found: add .txt, .md, .pdf, .docx or .html files with text."
    if all(f.reason == "does not exist" for f in files):
        return "None of these files or folders exists any more: add them again."
    readable = [f for f in files if f.type in {s.lstrip(".") for s in SUFFIXES}]
    if readable and all(f.reason and f.reason.startswith("no text") for f in readable):
        if any(f.type == "pdf" for f in readable):
            return "None of these files has text: scanned PDFs need OCR first (a PDF reader's 'recognise text')."
        return "None of these files has text: they are empty."
    if not readable:
        return "None of these files is a document Hearth reads: use .txt, .md, .pdf, .docx or .html files."
    first = next(f for f in files if f.reason)
    return f"None of these files can be used ({Path(first.path).name}: {first.reason})."
