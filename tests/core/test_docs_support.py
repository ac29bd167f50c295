"""Helpers for the retrieval tests (no tests here): the labelled handbook, PDFs, the tiny bert embedder."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.docs import EngineEmbedder
from tests.fixtures.tiny_embed import write_tiny_bert

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def labelled_set() -> dict[str, Any]:
    return dict(json.loads((FIXTURES / "docs_queries.json").read_text(encoding="utf-8")))


def write_handbook(folder: Path) -> Path:
    """The labelled set's documents as files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in labelled_set()["documents"].items():
        (folder / name).write_text(text + "\n", encoding="utf-8")
    return folder


def pdf_bytes(pages: list[str]) -> bytes:
    """A PDF with one text line per page (PDF 1.4 object syntax, xref offsets computed; "" = an image-only page)."""
    n = len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode()]
    font = 3 + 2 * n
    for i, text in enumerate(pages):
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
                       f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode())
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode() if text else b""
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return out


def encrypted_pdf_bytes() -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes(["A secret page about budgets."]))))
    writer.encrypt("secret", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@contextmanager
def tiny_bert_embedder(
    folder: Path, *, n_embd: int = 32, seed: int = 0, name: str = "tiny-bert", n_ctx: int = 1024
) -> Iterator[EngineEmbedder]:
    """A real llama.cpp embedding model (random tiny bert) behind the retrieval ``Embedder`` interface."""
    from core.engine import Engine, LoadOptions

    path = write_tiny_bert(folder / f"{name}-{n_embd}-{n_ctx}.gguf", n_embd=n_embd, n_ctx=n_ctx, seed=seed, name=name)
    with Engine() as engine:
        engine.load(path, LoadOptions(embedding=True, n_ctx=0))
        yield EngineEmbedder(engine, name)
