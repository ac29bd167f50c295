"""Documents to retrieval chunks: word windows with overlap that remember where they came from.

The text comes from the fine-tune path's readers (``core.finetune.data.documents``), page by page, so a
chunk can cite its page (PDF), its section (Markdown heading) and its lines. Lines are cleaned one by
one rather than as a whole so that line numbers still match the file (txt, md) or the extracted text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from core.finetune.data.documents import clean_text, extract_pages

# ~250 words ≈ 300–350 tokens for English with common tokenizers; 50 words of overlap keep a sentence
# cut at a window's edge whole in one of the two windows.
CHUNK_WORDS = 250
OVERLAP_WORDS = 50

_MD_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$")


@dataclass(frozen=True)
class TextChunk:
    """One retrieval unit of a file: its text and where it is (page, section, lines; 1-based)."""

    ordinal: int
    text: str
    page: int | None
    section: str
    line_start: int
    line_end: int
    n_words: int

    def location(self, pages: int = 1) -> str:
        """Where this chunk is, for people: "page 3, lines 10–24" or "§ Setup, lines 4–40"."""
        parts = []
        if self.page is not None and pages > 1:
            parts.append(f"page {self.page}")
        if self.section:
            parts.append(f"§ {self.section}")
        if self.line_start == self.line_end:
            parts.append(f"line {self.line_start}")
        else:
            parts.append(f"lines {self.line_start}–{self.line_end}")
        return ", ".join(parts)


@dataclass(frozen=True)
class _Word:
    text: str
    line: int


def read_pages(path: Path) -> list[str]:
    """The file's text page by page through the shared readers; ``DatasetError`` when unreadable."""
    return extract_pages(path)


def chunk_pages(
    pages: list[str], *, markdown: bool = False, size: int = CHUNK_WORDS, overlap: int = OVERLAP_WORDS
) -> list[TextChunk]:
    """Word windows of ``size`` with ``overlap`` over each page (and each Markdown section)."""
    if size < 8:
        raise ValueError("chunks must be at least 8 words")
    overlap = max(0, min(overlap, size // 2))
    chunks: list[TextChunk] = []
    for page_no, page in enumerate(pages, start=1):
        for section, words in _sections(page, markdown):
            start = 0
            while start < len(words):
                window = words[start : start + size]
                chunks.append(TextChunk(
                    ordinal=len(chunks), text=" ".join(w.text for w in window),
                    page=page_no if len(pages) > 1 else None, section=section,
                    line_start=window[0].line, line_end=window[-1].line, n_words=len(window),
                ))
                if start + size >= len(words):
                    break
                start += size - overlap
    return chunks


def _sections(page: str, markdown: bool) -> list[tuple[str, list[_Word]]]:
    """The page's words grouped by Markdown heading (one group for other text), with line numbers."""
    sections: list[tuple[str, list[_Word]]] = [("", [])]
    for line_no, raw in enumerate(page.splitlines(), start=1):
        line = clean_text(raw)
        if not line:
            continue
        heading = _MD_HEADING.match(line) if markdown else None
        if heading:
            sections.append((heading.group(2).strip(), []))
        # The heading's own words stay in the text: they are often what a query names.
        sections[-1][1].extend(_Word(w, line_no) for w in line.split())
    return [(title, words) for title, words in sections if words]
