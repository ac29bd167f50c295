""""Teach it my documents" = tune + index: a documents job also builds a Knowledge collection of them, and
the tuned adapter is compared with retrieval on the job's own held-out questions.

The collection is the one ``hearth docs add`` makes (``core.docs.store``), named after the adapter
(``collection_name_for``) and marked ``made_by`` it, so a later run of the same name updates it instead of
touching a collection the user made by hand. The adapter's manifest names it (top-level ``"collection"``).

The four-way comparison (base, base + retrieval, tuned, tuned + retrieval) is
``core.docs.compare.compare_collection`` run on the probes the job measured (the knowledge check's
held-out half asked in other words, ``metrics.knowledge.restated.items``; the first half when there is none),
and is kept beside the manifest (``comparison.json``) so it is shown again without running it again.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import HearthError

if TYPE_CHECKING:
    from core.docs.compare import Comparison
    from core.finetune.adapters import AdapterEntry
    from core.finetune.data.probes import Probe

COMPARISON_FILE = "comparison.json"
MADE_BY = "made_by"  # the collection's note naming the adapter whose job built it
_MAX_NAME = 64  # core.docs.store's collection names: [A-Za-z0-9][A-Za-z0-9._-]{0,63}

Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class IndexResult:
    """What indexing a job's documents made: the collection, its indexed files and its chunks."""

    collection: str
    documents: int
    chunks: int
    created: bool


# -- naming ------------------------------------------------------------------------------------------


def base_collection_name(adapter: str) -> str:
    """The adapter's name as a collection name: '+' (allowed in adapter names) becomes '-', cut to 64."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", adapter)[:_MAX_NAME].rstrip("._-")
    return name if name and name[0].isalnum() else f"docs-{name}".rstrip("._-")[:_MAX_NAME]


def collection_name_for(adapter: str, root: Path | None = None) -> str:
    """The collection a job named ``adapter`` indexes into: the adapter's name, unless a collection the
    user made (not this adapter's job) has it; then the first free ``NAME-docs``, ``NAME-docs-2``…"""
    from core.docs.store import DocsLibrary

    library = DocsLibrary(root)
    first = base_collection_name(adapter)
    candidates = [first] + [_suffixed(first, "-docs" if n == 1 else f"-docs-{n}") for n in range(1, 100)]
    for name in candidates:
        if not library.exists(name) or _made_by(library, name) == adapter:
            return name
    raise HearthError(f"No free collection name for '{adapter}': remove some collections with 'hearth docs rm'.")


def _suffixed(name: str, suffix: str) -> str:
    return name[: _MAX_NAME - len(suffix)].rstrip("._-") + suffix


def _made_by(library: Any, name: str) -> str:
    try:
        with library.open(name) as collection:
            return str(collection.meta(MADE_BY))
    except HearthError:
        return ""


# -- indexing ----------------------------------------------------------------------------------------


def index_documents(adapter: str, docs: Sequence[str | Path], *, root: Path | None = None,
                    cancel: threading.Event | None = None) -> IndexResult:
    """Index ``docs`` (files and folders) into the adapter's collection: created, or brought up to date
    when an earlier run of the same name made it (files no longer among ``docs`` are taken out)."""
    from core.docs.store import DocsLibrary
    from core.finetune.data.documents import find_files

    library = DocsLibrary(root)
    name = collection_name_for(adapter, root)
    created = not library.exists(name)
    collection = library.create(name) if created else library.open(name)
    try:
        wanted = {str(p.resolve()) for p in find_files(list(docs))}
        stale = [f.path for f in collection.files() if f.path not in wanted]
        if stale:
            collection.remove(stale)
        collection.add(list(docs), cancel=cancel)
        collection.set_note(MADE_BY, adapter)
        info = collection.info()
    except BaseException:
        collection.close()
        if created:
            library.delete(name)  # a collection this job made and could not fill is not kept
        raise
    collection.close()
    return IndexResult(name, info.indexed, info.chunks, created)


def index_for_job(adapter: str, docs: Sequence[str], emit: Emit) -> str | None:
    """The job's indexing step: the collection's name, with an ``indexed`` event; a failure is a warning
    (the adapter is saved either way), and None."""
    emit({"event": "stage", "stage": "index", "message": "indexing the documents for retrieval"})
    try:
        result = index_documents(adapter, docs)
    except Exception as exc:  # never fails the job: the adapter is what it is for
        reason = str(exc).rstrip(".") or type(exc).__name__
        emit({"event": "warning", "message": f"The documents could not be indexed for retrieval ({reason}); the "
              f"adapter is saved. Index them yourself with 'hearth docs add {base_collection_name(adapter)} "
              f"{' '.join(str(d) for d in docs)}'."})
        return None
    emit({"event": "indexed", "collection": result.collection, "documents": result.documents,
          "chunks": result.chunks})
    return result.collection


def adapter_collection(entry: AdapterEntry | dict[str, Any]) -> str | None:
    """The collection the adapter's manifest names, when it still exists; else None."""
    from core.docs.names import DB_NAME, docs_root

    manifest = entry if isinstance(entry, dict) else entry.manifest
    name = manifest.get("collection")
    if not isinstance(name, str) or not name:
        return None
    return name if (docs_root() / name / DB_NAME).is_file() else None


# -- the four-way comparison ---------------------------------------------------------------------------


def job_probes(manifest: dict[str, Any]) -> tuple[list[Probe], str]:
    """The job's held-out questions as probes, and which half they are: ``restated`` (asked in other
    words) when the manifest has it, else ``sentences`` (the documents' own sentences)."""
    knowledge = (manifest.get("metrics") or {}).get("knowledge") or {}
    restated = knowledge.get("restated") or {}
    if restated.get("items"):
        return [p for p in map(probe_from_item, restated["items"]) if p is not None], "restated"
    return [p for p in map(probe_from_item, knowledge.get("items") or []) if p is not None], "sentences"


def probe_from_item(item: dict[str, Any]) -> Probe | None:
    """A knowledge-check item of the manifest as a ``Probe`` (None when it lacks what scoring needs).

    Items carry ``prefix``/``suffix``/``answer_index`` (restated ones: the stem as prefix, suffix "");
    older manifests only the ``question`` with its ``____`` blank, which is split back.
    """
    from core.finetune.data.probes import Probe

    choices = [str(c) for c in item.get("choices") or []]
    answer = str(item.get("answer") or "")
    if "prefix" in item:
        prefix, suffix = str(item["prefix"]), str(item.get("suffix") or "")
    else:
        question = str(item.get("question") or "")
        if "____" not in question:
            return None
        prefix, _, suffix = question.partition("____")
    index = item.get("answer_index")
    if not isinstance(index, int):
        index = choices.index(answer) if answer in choices else -1
    if len(choices) < 2 or not 0 <= index < len(choices) or not prefix.strip():
        return None
    return Probe(source=str(item.get("source") or ""), sentence=f"{prefix}{choices[index]}{suffix}", prefix=prefix,
                 answer=choices[index], suffix=suffix, choices=tuple(choices), answer_index=index,
                 kind=str(item.get("kind") or ""))


def saved_comparison(entry: AdapterEntry) -> Comparison | None:
    """The comparison kept in the adapter's folder, if one was made for its current collection."""
    from core.docs.compare import Comparison

    path = entry.path / COMPARISON_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        comparison = Comparison.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return comparison if comparison.collection == entry.manifest.get("collection") else None


def comparison_base(entry: AdapterEntry) -> str:
    """The GGUF base model to compare on: the library model the adapter was trained on, else its file."""
    from core.finetune.adapters import find_base
    from core.library import Library

    base = entry.manifest.get("base") or {}
    found = find_base(entry, [m for m in Library().models() if m.exists])
    if found is not None:
        return found.path
    path = str(base.get("path") or "")
    if base.get("kind") != "gguf" or not Path(path).is_file():
        raise HearthError(f"The four-way comparison runs in llama.cpp and needs {entry.name}'s base model as a GGUF "
                          "file: import it with 'hearth import MODEL.gguf', then compare with "
                          f"'hearth docs compare {entry.manifest.get('collection')} --model MODEL --adapter {entry.name}'.")
    return path


def adapter_comparison(name: str, *, progress: Callable[[str, float], None] | None = None,
                       cancel: threading.Event | None = None, recompute: bool = False) -> Comparison:
    """The four-way comparison of adapter ``name`` with retrieval on the job's held-out questions.

    Kept in the adapter's folder (``comparison.json``) and read from there unless ``recompute``.
    ``HearthError`` says why when the adapter has no collection or no questions to ask.
    """
    from core.docs.compare import compare_collection
    from core.finetune.adapters import get_adapter

    entry = get_adapter(name)
    if not recompute:
        saved = saved_comparison(entry)
        if saved is not None:
            return saved
    collection = adapter_collection(entry)
    if collection is None:
        raise HearthError(f"Adapter '{name}' has no document collection to compare with retrieval: train on "
                          "documents without --no-index, or compare with 'hearth docs compare'.")
    probes, half = job_probes(entry.manifest)
    if not probes:
        raise HearthError(f"Adapter '{name}' has no knowledge-check questions in its manifest to compare on.")
    comparison = compare_collection(collection, comparison_base(entry), adapter=name, probes=probes,
                                    progress=progress, cancel=cancel)
    what = ("the job's held-out questions, asked in other words" if half == "restated"
            else "the job's knowledge-check questions, from your documents' sentences")
    comparison.notes.insert(0, f"{len(probes)} questions: {what}")
    _write_json(entry.path / COMPARISON_FILE, comparison.to_dict())
    return comparison


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Written atomically: a half-written comparison never looks finished (DESIGN.md, data on disk)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def comparison_rows(comparison: Comparison) -> list[tuple[str, str, str]]:
    """The table's rows: (set-up, "right of total", share) for each set-up, as the CLI and the window show it."""
    return [(s.label, f"{s.right} of {s.total}", f"{s.percent:.0f}%") for s in comparison.setups]


def knowledge_halves(knowledge: dict[str, Any] | None) -> str:
    """The knowledge check's two halves in a user's words, from a manifest's ``metrics.knowledge``:
    "From your sentences: 20 of 24 (7 before) · Asked in other words: 15 of 24 (5 before)" ('' without a check;
    the first half alone when there is no restated half)."""
    if not isinstance(knowledge, dict) or not knowledge.get("total"):
        return ""
    parts = [f"From your sentences: {knowledge.get('after', 0)} of {knowledge['total']} "
             f"({knowledge.get('before', 0)} before)"]
    restated = knowledge.get("restated")
    if isinstance(restated, dict) and restated.get("total"):
        parts.append(f"Asked in other words: {restated.get('after', 0)} of {restated['total']} "
                     f"({restated.get('before', 0)} before)")
    return " · ".join(parts)
