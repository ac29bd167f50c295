"""Documents to training text: extract, clean and chunk .txt, .md, .pdf, .docx and .html files.

Files that cannot be used are reported with the reason instead of stopping the whole set.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.errors import DatasetError

SUFFIXES = (".txt", ".md", ".markdown", ".pdf", ".docx", ".html", ".htm")
# Documents shorter than this after cleaning carry too little to learn from.
MIN_CHARS = 20


@dataclass(frozen=True)
class Document:
    path: str
    text: str


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class Chunk:
    source: str
    text: str
    ids: tuple[int, ...]


def find_files(inputs: Sequence[str | Path]) -> list[Path]:
    """The document files named by ``inputs`` (files, or folders searched recursively)."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found.extend(
                p for p in sorted(path.rglob("*"))
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.is_file():
            found.append(path)
        else:
            raise DatasetError(f"{path} does not exist: give a folder or files of documents.")
    return found


def load_documents(inputs: Sequence[str | Path]) -> tuple[list[Document], list[Skipped]]:
    """The usable documents among ``inputs`` and the skipped files with reasons.

    Raises ``DatasetError`` when no file is usable.
    """
    docs: list[Document] = []
    skipped: list[Skipped] = []
    for path in find_files(inputs):
        if path.suffix.lower() not in SUFFIXES:
            skipped.append(Skipped(str(path), f"unsupported type '{path.suffix or 'none'}' (use {', '.join(SUFFIXES)})"))
            continue
        try:
            text = clean_text(extract_text(path))
        except DatasetError as exc:
            skipped.append(Skipped(str(path), str(exc)))
            continue
        if len(text) < MIN_CHARS:
            skipped.append(Skipped(str(path), "no text (empty, or a scanned image without a text layer)"))
            continue
        docs.append(Document(str(path), text))
    if not docs:
        detail = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in skipped[:5]) or "the folder is empty"
        raise DatasetError(f"No usable documents ({detail}). Add .txt, .md, .pdf, .docx or .html files with text.")
    return docs, skipped


def extract_text(path: Path) -> str:
    """The text of one document; ``DatasetError`` with the reason when it cannot be read."""
    return "\n\n".join(extract_pages(path))


def extract_pages(path: Path) -> list[str]:
    """The text of one document page by page (a PDF's pages; one "page" for other types).

    ``DatasetError`` with the reason when it cannot be read. Retrieval cites pages, training joins them.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".pdf":
            return _pdf_pages(path)
        if suffix == ".docx":
            return [_docx_text(path)]
        raw = path.read_bytes()
    except DatasetError:
        raise
    except Exception as exc:  # parsers raise many types for damaged files
        raise DatasetError(f"cannot be read ({type(exc).__name__}: {exc})") from exc
    text = _decode(raw)
    if suffix in (".html", ".htm"):
        return [_html_text(text)]
    return [text]


def _decode(raw: bytes) -> str:
    for encoding in ("utf-8-sig", "utf-16"):
        try:
            text = raw.decode(encoding)
            if encoding == "utf-16" and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
                continue
            return text
        except UnicodeDecodeError:
            continue
    if b"\x00" in raw[:4096]:
        raise DatasetError("is a binary file, not text")
    return raw.decode("latin-1")


def _pdf_pages(path: Path) -> list[str]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")  # owner-password-only PDFs open with an empty user password
            except Exception as exc:
                raise DatasetError("is a password-protected PDF") from exc
            if not opened:  # pypdf's PasswordType.NOT_DECRYPTED
                raise DatasetError("is a password-protected PDF")
        return [(page.extract_text() or "") for page in reader.pages]
    except PdfReadError as exc:
        raise DatasetError(f"is not a readable PDF ({exc})") from exc


def _docx_text(path: Path) -> str:
    import zipfile

    import docx

    try:
        document = docx.Document(str(path))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise DatasetError(f"is not a readable .docx file ({exc})") from exc
    parts = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            parts.append(" | ".join(cell.text for cell in row.cells))
    return "\n".join(parts)


def _html_text(html: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "nav", "header", "footer", "svg"]):
        tag.decompose()
    return str(soup.get_text("\n"))


_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANKS = re.compile(r"\n{3,}")
_HYPHEN_BREAK = re.compile(r"(\w)-\n(\w)")


def clean_text(text: str) -> str:
    """Normalised text: NFC, no control characters, words re-joined across line-end hyphens, tidy spacing."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    text = _HYPHEN_BREAK.sub(r"\1\2", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def chunk_documents(
    docs: Iterable[Document],
    encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str],
    *,
    size: int,
    overlap: int,
) -> list[Chunk]:
    """Token windows of ``size`` over each document, consecutive windows sharing ``overlap`` tokens."""
    if size < 8:
        raise DatasetError("Chunks must be at least 8 tokens long: raise --seq-len.")
    overlap = max(0, min(overlap, size // 2))
    chunks: list[Chunk] = []
    for doc in docs:
        ids = encode(doc.text)
        start = 0
        while start < len(ids):
            window = ids[start : start + size]
            chunks.append(Chunk(doc.path, decode(window), tuple(window)))
            if start + size >= len(ids):
                break
            start += size - overlap
    return chunks
