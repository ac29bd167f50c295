"""Which helps here? Retrieval, fine-tuning or both, measured on the user's own documents.

The probes are the fine-tune knowledge check's (``core.finetune.data.probes``): sentences of the
collection's documents with a salient span blanked, each scored by log-likelihood of every choice after
the sentence's text before the blank (``core.finetune.knowledge``'s rule, through ``Engine.score``). The
retrieval set-ups search the collection with the probe's sentence and put the passages before it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import CancelledError, HearthError

if TYPE_CHECKING:
    from core.docs.context import RetrievedContext
    from core.docs.store import Collection
    from core.docs.vectors import Embedder
    from core.engine import Engine
    from core.finetune.adapters import AdapterEntry
    from core.finetune.data.probes import Probe
    from core.library import ModelEntry

SETUPS = ("base", "base+retrieval", "tuned", "tuned+retrieval")
LABELS = {"base": "Base model", "base+retrieval": "Base + retrieval", "tuned": "Tuned adapter",
          "tuned+retrieval": "Tuned + retrieval"}
N_CTX = 2048  # the context the comparison loads a model with (less when the model's own is smaller)
BUDGET_TOKENS = 768  # passages' tokens before each probe, at most


@dataclass(frozen=True)
class SetupScore:
    """One set-up's result: how many of ``total`` probes it answered right."""

    label: str
    key: str  # one of SETUPS
    right: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.right / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "percent": round(self.percent, 1)}


@dataclass(frozen=True)
class UsedPassage:
    """A passage put before a probe in the retrieval set-ups."""

    file: str
    location: str
    text: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProbeItem:
    """One probe: the sentence with its blank (``stem``), the choices, the answer and who got it right."""

    stem: str
    choices: list[str]
    answer: str
    source: str
    right: list[str]  # keys of the set-ups that picked the answer
    picked: dict[str, str]  # set-up key -> the choice it preferred
    passages: list[UsedPassage] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passages"] = [p.to_dict() for p in self.passages]
        return data


@dataclass(frozen=True)
class Comparison:
    """The set-ups' scores (base and base + retrieval; with an adapter also tuned and tuned + retrieval), the
    probes and the recommendation in one sentence."""

    collection: str
    base: str
    adapter: str | None
    setups: list[SetupScore]
    items: list[ProbeItem]
    recommendation: str
    notes: list[str] = field(default_factory=list)

    def score(self, key: str) -> SetupScore | None:
        return next((s for s in self.setups if s.key == key), None)

    def to_dict(self) -> dict[str, Any]:
        return {"collection": self.collection, "base": self.base, "adapter": self.adapter,
                "setups": [s.to_dict() for s in self.setups], "items": [i.to_dict() for i in self.items],
                "recommendation": self.recommendation, "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        """A comparison ``to_dict`` wrote (e.g. kept beside an adapter's manifest)."""
        setups = [SetupScore(str(s["label"]), str(s["key"]), int(s["right"]), int(s["total"])) for s in data["setups"]]
        items = [ProbeItem(stem=str(i["stem"]), choices=list(i["choices"]), answer=str(i["answer"]),
                           source=str(i.get("source") or ""), right=list(i.get("right") or []),
                           picked=dict(i.get("picked") or {}),
                           passages=[UsedPassage(str(p["file"]), str(p["location"]), str(p["text"]), float(p["score"]))
                                     for p in i.get("passages") or []])
                 for i in data.get("items") or []]
        return cls(str(data["collection"]), str(data["base"]), data.get("adapter"), setups, items,
                   str(data["recommendation"]), [str(n) for n in data.get("notes") or []])


# -- the recommendation --------------------------------------------------------------------------------


def _of(right: int, total: int) -> str:
    return f"{right} of {total}"


def recommendation(setups: Sequence[SetupScore]) -> str:
    """The comparison in one plain sentence, for every ordering of the set-ups' scores (ties included)."""
    by = {s.key: s.right for s in setups}
    total = max((s.total for s in setups), default=0)
    if total == 0:
        return "No questions could be made from these documents, so nothing was compared."
    b, r = by.get("base", 0), by.get("base+retrieval", 0)
    if "tuned" not in by:
        if r > b:
            return (f"For these documents retrieval answers {_of(r, total)}, the model alone {_of(b, total)}: "
                    "use retrieval (fine-tune an adapter on the same files to compare it too).")
        if r == b:
            return (f"For these documents retrieval answers {_of(r, total)}, the same as the model alone: "
                    "retrieval does not help on these questions (fine-tune an adapter to compare it too).")
        return (f"For these documents retrieval answers {_of(r, total)}, fewer than the model alone "
                f"({_of(b, total)}): the passages do not help this model here (fine-tune an adapter to compare it too).")
    t, both = by["tuned"], by.get("tuned+retrieval", 0)
    figures = f"retrieval answers {_of(r, total)}, fine-tuning {_of(t, total)}, both {_of(both, total)}"
    if max(r, t, both) <= b:
        worse = "and the model alone answers as many" if max(r, t, both) == b else "fewer than the model alone"
        return (f"For these documents {figures}, {worse} ({_of(b, total)}): neither helps on these questions, "
                "so keep the plain model or try a larger one.")
    if both > max(r, t):
        return f"For these documents {figures}: use both, the tuned adapter with retrieval."
    if r > t:
        tail = "or both for the tone of your notes" if both == r else f"on its own (both together answer {both})"
        return (f"For these documents retrieval answers {_of(r, total)}, fine-tuning {_of(t, total)}: "
                f"use retrieval, {tail}.")
    if t > r:
        tail = ("or both, which answer as many" if both == t
                else f"on its own (with retrieval it answers {both})")
        return (f"For these documents fine-tuning answers {_of(t, total)}, retrieval {_of(r, total)}: "
                f"use the tuned adapter, {tail}.")
    # r == t, and both is no better than either.
    return (f"For these documents retrieval and fine-tuning each answer {_of(r, total)} (both {_of(both, total)}): "
            "use retrieval, which needs no training and follows changes to the files, and the adapter for tone.")


# -- running it ----------------------------------------------------------------------------------------


def collection_documents(collection: Collection) -> list[tuple[str, str]]:
    """(path, text) of the collection's indexed files, read again with the fine-tune data path's readers."""
    from core.finetune.data.documents import load_documents

    paths = [f.path for f in collection.files() if f.status == "indexed" and Path(f.path).is_file()]
    if not paths:
        raise HearthError(f"Collection '{collection.name}' has no readable files: add documents with "
                          f"'hearth docs add {collection.name} PATH'.")
    try:
        docs, _skipped = load_documents(paths)
    except HearthError as exc:
        raise HearthError(f"Collection '{collection.name}': {exc}") from exc
    return [(d.path, d.text) for d in docs]


def build_collection_probes(collection: Collection, *, seed: int = 0) -> list[Probe]:
    """The knowledge check's fill-in-the-blank probes, built from the collection's documents."""
    from core.finetune.data.probes import build_probes
    from core.finetune.dataset import KNOWLEDGE_PROBES

    return build_probes(collection_documents(collection), max_probes=KNOWLEDGE_PROBES, seed=seed)


def probe_query(probe: Probe) -> str:
    """The search for a probe: its sentence without the blank."""
    return f"{probe.prefix.rstrip()} {probe.suffix.strip()}".strip()


def score_probe(engine: Engine, probe: Probe, passages: str = "") -> int:
    """The index of the choice the loaded model prefers, after ``passages`` (if any) and the probe's prefix."""
    from core.finetune.knowledge import _short, split_text

    pairs = [split_text(probe.prefix, choice, _short(probe.suffix)) for choice in probe.choices]
    context = pairs[0][0]
    if passages:
        context = f"{passages}\n\n{context}"
    scores = engine.score(context, [continuation for _, continuation in pairs])
    values = [float(s["logprob"]) for s in scores]
    return max(range(len(values)), key=lambda i: values[i])


def _retrieve(collection: Collection, engine: Engine, probe: Probe, k: int, budget_tokens: int,
              embedder: Embedder | None) -> RetrievedContext:
    from core.docs.context import build_context, retrieval_budget
    from core.docs.search import search

    status = engine.status
    n_ctx = status.n_ctx if status is not None else N_CTX

    def count(text: str) -> int:
        return len(engine.tokenize(text))

    longest = max(count(c) for c in probe.choices)
    reserve = count(probe.prefix) + longest + count(probe.suffix) + 32
    budget, _note = retrieval_budget(n_ctx, budget_tokens, reserve)
    passages = search(collection, probe_query(probe), k, embedder=embedder)
    return build_context(passages, budget, count)


def compare_collection(
    name: str,
    base: str,
    *,
    adapter: str | None = None,
    k: int = 3,
    progress: Callable[[str, float], None] | None = None,
    cancel: threading.Event | None = None,
    engine: Engine | None = None,
    embedder: Embedder | None = None,
    budget_tokens: int = BUDGET_TOKENS,
    probes: Sequence[Probe] | None = None,
) -> Comparison:
    """Score base, base + retrieval and, with ``adapter``, tuned and tuned + retrieval on collection ``name``.

    ``base`` is a library model name or a .gguf path; ``adapter`` an adapter's name, trained on ``base``
    (its GGUF LoRA is exported on first use). The probes come from the collection's own documents, so
    retrieval can find the very sentence a probe blanks: that is what it measures (the facts are in the
    documents; does the model get them from the passages, from the adapter's weights, or both?).

    ``progress(message, fraction)`` reports the stage; ``cancel`` set stops it with ``CancelledError``.
    With ``engine`` the comparison uses it (loading ``base`` if another model is loaded, and taking the
    adapter off again at the end); otherwise it starts and closes its own.

    ``probes``: ask these instead of probes built from the collection's documents (a fine-tune job's
    held-out questions, ``core.finetune.indexing.job_probes``); retrieval still searches the collection.
    """
    from core.docs.store import DocsLibrary
    from core.engine import Engine
    from core.library import Library

    def report(message: str, fraction: float) -> None:
        if progress is not None:
            progress(message, max(0.0, min(1.0, fraction)))
        if cancel is not None and cancel.is_set():
            raise CancelledError("The comparison was cancelled.")

    if k < 1:
        raise HearthError("Ask for at least one passage (k ≥ 1).")
    report("reading the documents", 0.0)
    model = Library().get(base)
    entry = None
    if adapter:
        from core.finetune.adapters import find_base, get_adapter

        entry = get_adapter(adapter)
        if find_base(entry, [model]) is None:
            trained_on = entry.base or "another model"
            raise HearthError(f"Adapter '{entry.name}' was trained on {trained_on}, not {model.name}: compare it "
                              f"with the model it was trained on (--model {trained_on}).")
    with DocsLibrary().open(name) as collection:
        collection.refresh(cancel=cancel)
        probes = list(probes) if probes is not None else build_collection_probes(collection)
        if not probes:
            raise HearthError(f"No fill-in-the-blank questions could be made from '{name}': its documents need "
                              "more sentences with names, numbers, dates or terms.")
        own = engine is None
        eng = Engine() if engine is None else engine
        try:
            return _run(collection, model, entry, probes, eng, k=k, budget_tokens=budget_tokens,
                        embedder=embedder, report=report, load=lambda: _load(eng, model))
        finally:
            if own:
                eng.close()


def _load(engine: Engine, model: ModelEntry) -> None:
    from core.engine import LoadOptions

    status = engine.status
    if status is not None and engine.alive and _same(status.path, model.path):
        return
    engine.load(model.path, LoadOptions(n_ctx=min(N_CTX, model.context_length or N_CTX)))


def _same(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _run(collection: Collection, model: ModelEntry, entry: AdapterEntry | None, probes: list[Probe], engine: Engine, *, k: int,
         budget_tokens: int, embedder: Embedder | None, report: Callable[[str, float], None],
         load: Callable[[], None]) -> Comparison:
    from core.finetune.adapters import ensure_lora_gguf

    keys = list(SETUPS) if entry is not None else list(SETUPS[:2])
    steps = len(probes) * len(keys) + 1
    done = 0
    report(f"loading {model.name}", 0.02)
    load()
    previous = list(engine.status.loras) if engine.status is not None else []
    contexts: list[RetrievedContext] = []
    for probe in probes:
        report("searching the collection", 0.05)
        contexts.append(_retrieve(collection, engine, probe, k, budget_tokens, embedder))
    trimmed = sum(bool(c.note) for c in contexts)
    notes = [f"passages were trimmed to fit the {engine.status.n_ctx if engine.status else N_CTX}-token context "
             f"for {trimmed} of {len(probes)} questions"] if trimmed else []
    picked: dict[str, list[int]] = {}
    try:
        for key in keys:
            if key == "tuned" and entry is not None:
                report(f"preparing adapter {entry.name}", 0.05 + 0.95 * done / steps)
                lora = ensure_lora_gguf(entry, model.path)
                engine.set_loras([(str(lora), 1.0)])
            elif key == "base" and previous:
                engine.set_loras([])
            picked[key] = []
            for n, (probe, context) in enumerate(zip(probes, contexts, strict=True), start=1):
                report(f"{LABELS[key]}: question {n} of {len(probes)}", 0.05 + 0.95 * done / steps)
                passages = context.text if key.endswith("+retrieval") else ""
                picked[key].append(score_probe(engine, probe, passages))
                done += 1
    finally:
        if engine.alive and engine.status is not None and list(engine.status.loras) != previous:
            engine.set_loras(previous)
    total = len(probes)
    setups = []
    for key in keys:
        label = f"{LABELS[key]} ({entry.name})" if key == "tuned" and entry is not None else LABELS[key]
        right = sum(int(p == probe.answer_index) for p, probe in zip(picked[key], probes, strict=True))
        setups.append(SetupScore(label, key, right, total))
    items = [
        ProbeItem(stem=probe.question, choices=list(probe.choices), answer=probe.answer, source=probe.source,
                  right=[key for key in keys if picked[key][i] == probe.answer_index],
                  picked={key: probe.choices[picked[key][i]] for key in keys},
                  passages=[UsedPassage(p.file, p.location, p.text, p.score) for p in contexts[i].passages])
        for i, probe in enumerate(probes)
    ]
    report("done", 1.0)
    return Comparison(collection.name, model.name, entry.name if entry is not None else None, setups, items,
                      recommendation(setups), notes)
