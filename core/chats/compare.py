"""Compare: one prompt answered by two set-ups side by side, each side an ordinary saved conversation.

A comparison is two conversations in the ``ChatStore`` linked by ``compare_group`` (the left side's
id) and ``compare_side`` (0 left, 1 right). Each keeps its own set-up the way any chat does (model,
adapter and scale, documents, parameters), so either side opens alone in the normal chat too.
``CompareSession`` sends one prompt to both, one after the other, yielding ``CompareItem``s that say
which side each stream item belongs to; ``CompareEngines`` (``core.chats.compare_engines``) decides
whether the sides share one engine, keep two loaded, or reload between them, and says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.chats.compare_engines import PLAN_WORDS, CompareEngines, LoadKey
from core.chats.store import ChatStore, Conversation
from core.engine import Completion, LoadOptions, ModelStatus
from core.errors import HearthError, NotFoundError
from core.settings import ChatParameters

if TYPE_CHECKING:
    from core.docs import DocsLibrary, DocsTurn, Embedder
    from core.library import Library, ModelEntry

LEFT, RIGHT = 0, 1
SIDE_NAMES = ("A", "B")
__all__ = [
    "LEFT", "PLAN_WORDS", "RIGHT", "CompareEngines", "CompareItem", "CompareSession", "CompareSide", "SideCommitted",
    "SideFailed", "SideLoading", "SideReady", "compare_sides", "continue_side", "create_compare", "delete_compare",
    "one_row_per_comparison", "rename_compare", "title_from",
]


@dataclass
class CompareSide:
    """One column's set-up: a library model, an adapter (name or GGUF LoRA path) at a scale, documents, parameters.

    ``params`` holds ``core.settings.ChatParameters`` fields (sampling and load options), as a chat stores them.
    """

    model: str
    adapter: str = ""
    adapter_scale: float = 1.0
    docs: str = ""  # a document collection's name ('' = no documents)
    params: dict[str, Any] = field(default_factory=dict)

    def parameters(self) -> ChatParameters:
        return ChatParameters.from_dict(self.params)

    def label(self) -> str:
        """``model + adapter ×0.5 · documents`` for headings and the CLI."""
        text = self.model
        if self.adapter:
            text += f" + {Path(self.adapter).stem if self.adapter.endswith('.gguf') else self.adapter}" \
                    f" ×{self.adapter_scale:g}"
        return text + (f" · {self.docs}" if self.docs else "")

    @classmethod
    def from_conversation(cls, conv: Conversation) -> CompareSide:
        return cls(conv.model, conv.adapter, conv.adapter_scale, conv.docs, dict(conv.params))


# -- stream items --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SideLoading:
    """The side's model is being loaded (``name``: the library name)."""

    name: str


@dataclass(frozen=True)
class SideReady:
    """The side's model is loaded with its adapter; ``plan`` is how the engines run the comparison."""

    status: ModelStatus
    plan: str


@dataclass(frozen=True)
class SideCommitted:
    """The side's conversation now holds the user's message; its answer streams next."""


@dataclass(frozen=True)
class SideFailed:
    """The side could not answer (``message`` says why and what to do); the other side still does."""

    message: str


SideItem = object  # TextChunk, Completion, SideLoading, SideReady, SideCommitted, SideFailed or a DocsTurn


@dataclass(frozen=True)
class CompareItem:
    """One item of a comparison's stream: ``side`` 0 (left) or 1 (right), and what happened there."""

    side: int
    item: SideItem


# -- the group in the store ----------------------------------------------------------------------
def create_compare(store: ChatStore, left: CompareSide, right: CompareSide, *, system_prompt: str = "",
                   title: str = "") -> int:
    """Save a new comparison (two linked conversations); returns its group id (the left side's id)."""
    ids: list[int] = []
    for index, side in enumerate((left, right)):
        conv = store.create(title=title, model=side.model, system_prompt=system_prompt, params=dict(side.params),
                            adapter=side.adapter, adapter_scale=side.adapter_scale)
        group = ids[0] if ids else conv.id
        store.update(conv.id, docs=side.docs, compare_group=group, compare_side=index)
        ids.append(conv.id)
    return ids[0]


def compare_sides(store: ChatStore, group: int) -> tuple[Conversation, Conversation]:
    """The (left, right) conversations of comparison ``group``."""
    left = store.get(group)
    right: Conversation | None = None
    try:  # made right after the left side, so usually the next id (another process may have come between)
        right = store.get(group + 1)
    except NotFoundError:
        pass
    if right is None or right.compare_group != group or right.compare_side != RIGHT:
        right = next((c for c in store.list() if c.compare_group == group and c.compare_side == RIGHT), None)
    if left.compare_group != group or right is None:
        raise NotFoundError(f"No comparison with id {group}: it was deleted, or is an ordinary chat.")
    return left, right


def rename_compare(store: ChatStore, group: int, title: str) -> None:
    for conv in compare_sides(store, group):
        store.rename(conv.id, title)


def delete_compare(store: ChatStore, group: int) -> None:
    """Delete both sides of a comparison (the conversations continued from it are kept)."""
    for conv in compare_sides(store, group):
        store.delete(conv.id)


def one_row_per_comparison(store: ChatStore, conversations: Sequence[Conversation]) -> list[Conversation]:
    """A conversation list with each comparison once, as its left side (fetched when only the right matched)."""
    rows: list[Conversation] = []
    seen: set[int] = set()
    for conv in conversations:
        if not conv.compare_group:
            rows.append(conv)
        elif conv.compare_group not in seen:
            seen.add(conv.compare_group)
            try:
                rows.append(conv if conv.compare_side == LEFT else store.get(conv.compare_group))
            except NotFoundError:
                rows.append(conv)  # the left side was deleted alone: the right one stands for itself
    return rows


def continue_side(store: ChatStore, group: int, side: int) -> Conversation:
    """A new ordinary chat that goes on from one side: its set-up and a copy of its messages.

    A copy rather than the side itself, so the comparison stays as both sides answered it (and can
    be reopened and asked more) while the continued chat is listed, and grows, on its own.
    """
    source = compare_sides(store, group)[side]
    conv = store.create(title=source.title, model=source.model, system_prompt=source.system_prompt,
                        params=dict(source.params), adapter=source.adapter, adapter_scale=source.adapter_scale)
    store.update(conv.id, docs=source.docs)
    for message in store.messages(source.id):
        store.add_message(conv.id, dataclasses.replace(message, id=None, conversation_id=None))
    return store.get(conv.id)


# -- answering -----------------------------------------------------------------------------------
def resolve_adapter(adapter: str, entry: ModelEntry) -> str:
    """The GGUF LoRA for an adapter name (exported on first use) or a ``.gguf`` path."""
    path = Path(adapter).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise NotFoundError(f"The adapter file {path} does not exist: check the path.")
        return str(path)
    from core.finetune.adapters import ensure_lora_gguf, get_adapter

    return str(ensure_lora_gguf(get_adapter(adapter), entry.path))


def load_options(entry: ModelEntry, options: LoadOptions) -> LoadOptions:
    """The options a chat model loads with (``core.library.load_options_for`` adds its projector, where there is one)."""
    try:
        from core.library import load_options_for  # type: ignore[attr-defined,unused-ignore]
    except ImportError:  # an older library without projector pairing
        return options
    result: LoadOptions = load_options_for(entry, options)
    return result


@dataclass
class _Setup:
    conversation: Conversation
    side: CompareSide
    entry: ModelEntry
    key: LoadKey
    params: ChatParameters


class CompareSession:
    """Send one prompt to both sides of a saved comparison, one side after the other."""

    def __init__(self, store: ChatStore, engines: CompareEngines, group: int, *, library: Library | None = None,
                 docs: DocsLibrary | None = None) -> None:
        self.store = store
        self.engines = engines
        self.group = group
        self._library = library
        self._docs = docs
        self._stopped = False
        self._embedders: dict[str, Embedder | None] = {}  # by model name; None: that model is not usable
        self._stack = contextlib.ExitStack()
        compare_sides(store, group)  # a clear error now for a group that is not there

    @classmethod
    def start(cls, store: ChatStore, engines: CompareEngines, left: CompareSide, right: CompareSide, *,
              system_prompt: str = "", title: str = "", library: Library | None = None,
              docs: DocsLibrary | None = None) -> CompareSession:
        group = create_compare(store, left, right, system_prompt=system_prompt, title=title)
        return cls(store, engines, group, library=library, docs=docs)

    # -- set-up --------------------------------------------------------------------------------
    @property
    def conversations(self) -> tuple[Conversation, Conversation]:
        return compare_sides(self.store, self.group)

    @property
    def sides(self) -> tuple[CompareSide, CompareSide]:
        left, right = self.conversations
        return CompareSide.from_conversation(left), CompareSide.from_conversation(right)

    def set_side(self, index: int, side: CompareSide) -> None:
        """Change one column's set-up (its next answers use it; what it said stays)."""
        conv = self.conversations[index]
        self.store.update(conv.id, model=side.model, adapter=side.adapter, adapter_scale=side.adapter_scale,
                          docs=side.docs, params=dict(side.params))

    def set_system_prompt(self, text: str) -> None:
        for conv in self.conversations:
            if conv.system_prompt != text:
                self.store.update(conv.id, system_prompt=text)

    @property
    def library(self) -> Library:
        if self._library is None:
            from core.library import Library

            self._library = Library()
        return self._library

    def _setup(self, conv: Conversation) -> _Setup:
        side = CompareSide.from_conversation(conv)
        if not side.model:
            raise HearthError("This side has no model: pick one above its column.")
        entry = self.library.get(side.model)
        params = side.parameters()
        options = load_options(entry, params.load_options())
        return _Setup(conv, side, entry, LoadKey(str(entry.path), dataclasses.replace(options, loras=[])), params)

    # -- sending -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the answer being written and do not start the other side's (safe from any thread)."""
        self._stopped = True
        self.engines.cancel()

    def send(self, text: str, progress: Callable[[int, float], None] | None = None) -> Iterator[CompareItem]:
        """Ask both sides ``text``: left first, then right. Each side's messages are committed as a chat's are.

        A side that cannot answer (a model or adapter gone, a context overflow...) yields ``SideFailed``
        and the other side still answers. ``progress(side, fraction)`` gets a loading model's progress.
        """
        if not text.strip():
            raise HearthError("The message is empty: type something to send.")
        self._stopped = False
        convs = self.conversations
        if not convs[LEFT].title:
            rename_compare(self.store, self.group, title_from(text))
        setups: list[_Setup | HearthError] = []
        for conv in convs:
            try:
                setups.append(self._setup(conv))
            except HearthError as exc:
                setups.append(exc)
        self.engines.plan_for([s.key for s in setups if isinstance(s, _Setup)])
        return self._send(text, setups, progress)

    def _send(self, text: str, setups: list[_Setup | HearthError],
              progress: Callable[[int, float], None] | None) -> Iterator[CompareItem]:
        for index, setup in enumerate(setups):
            if self._stopped:
                return
            if isinstance(setup, HearthError):
                yield CompareItem(index, SideFailed(str(setup)))
                continue
            other = setups[1 - index]
            other_key = other.key if isinstance(other, _Setup) else None
            try:
                yield from self._answer(index, setup, text, other_key, progress)
            except HearthError as exc:
                yield CompareItem(index, SideFailed(str(exc)))

    def _answer(self, index: int, setup: _Setup, text: str, other: LoadKey | None,
                progress: Callable[[int, float], None] | None) -> Iterator[CompareItem]:
        from core.chats.session import ChatSession

        if self.engines.needs_load(setup.key):
            yield CompareItem(index, SideLoading(setup.entry.name))
        loras = [(resolve_adapter(setup.side.adapter, setup.entry), setup.side.adapter_scale)] \
            if setup.side.adapter else []
        engine, status = self.engines.engine_for(
            setup.key, loras, other, progress=(lambda f: progress(index, f)) if progress else None)
        yield CompareItem(index, SideReady(status, self.engines.plan))
        message = text
        if setup.side.docs:
            turn = self._docs_turn(setup, text, engine, status)
            message = turn.message
            yield CompareItem(index, turn)
        session = ChatSession(self.store, engine, setup.conversation.id)
        stream = session.send(message, setup.params.sampling())
        yield CompareItem(index, SideCommitted())
        for item in stream:
            if self._stopped and not isinstance(item, Completion):
                engine.cancel()  # asked between two chunks of a stream that had already begun
            yield CompareItem(index, item)

    def _docs_turn(self, setup: _Setup, text: str, engine: Any, status: ModelStatus) -> DocsTurn:
        """The question with the side's collection's passages, as the chat asks it (``core.docs.prepare_question``)."""
        from core.docs import DocsLibrary, prepare_question

        if self._docs is None:
            self._docs = DocsLibrary()
        with self._docs.open(setup.side.docs) as collection:
            embedder, note = self._embedder(collection.embed_model)
            turn = prepare_question(collection, text, count_tokens=lambda t: len(engine.tokenize(t)),
                                    n_ctx=status.n_ctx, answer_tokens=setup.params.max_tokens, embedder=embedder)
        if note:
            turn.notes.append(note)
        return turn

    def _embedder(self, model: str) -> tuple[Embedder | None, str]:
        """The collection's embedding model, loaded once per session; keywords only when it is not usable."""
        if not model:
            return None, ""
        if model not in self._embedders:
            from core.docs import load_embedder

            try:
                self._embedders[model] = self._stack.enter_context(load_embedder(model))
            except HearthError as exc:
                self._embedders[model] = None
                return None, f"searched by keywords only: the embedding model {model} is not usable ({exc})"
        found = self._embedders[model]
        return found, "" if found is not None else f"searched by keywords only: {model} is not usable"

    def continue_side(self, side: int) -> Conversation:
        """A new ordinary chat going on from one side (see ``continue_side``)."""
        return continue_side(self.store, self.group, side)

    def close(self) -> None:
        """Stop the documents' embedding engines (the answering engines are ``engines``' to close)."""
        self._stack.close()
        self._embedders.clear()


def title_from(text: str, limit: int = 60) -> str:
    """A comparison's title from its first prompt (its first 60 characters on one line), as a chat's."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
