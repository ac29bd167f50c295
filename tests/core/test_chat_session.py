"""Chat sessions: messages committed as they complete; cancel, regenerate, edit, crash."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.chats import ChatStore
from core.chats.session import ChatSession
from core.engine import Completion, Engine, LoadOptions, SamplingParams, TextChunk
from core.errors import EngineCrashedError, HearthError

SHORT = SamplingParams(temperature=0, max_tokens=12, repeat_penalty=1.0)


@pytest.fixture(scope="module")
def engine(starter_model: Path) -> Iterator[Engine]:
    with Engine() as eng:
        eng.load(starter_model, LoadOptions(n_ctx=1024, n_threads=2))
        yield eng


def _run(stream: Iterator[TextChunk | Completion]) -> Completion:
    done = None
    for item in stream:
        if isinstance(item, Completion):
            done = item
    assert done is not None
    return done


def test_send_commits_both_messages_and_titles_the_chat(engine: Engine) -> None:
    store = ChatStore()
    session = ChatSession.start(store, engine, model="starter", system_prompt="Be brief.")
    done = _run(session.send("What is bread made of?", SHORT))
    msgs = store.messages(session.conversation_id)
    assert [m.role for m in msgs] == ["user", "assistant"]
    assert msgs[1].content == done.text and msgs[1].completion_tokens == done.stats.completion_tokens
    assert msgs[1].tokens_per_second and msgs[1].meta["n_ctx"] == 1024
    assert store.get(session.conversation_id).title == "What is bread made of?"
    with pytest.raises(HearthError, match="empty"):
        session.send("   ")


def test_cancelled_answer_is_kept_and_marked(engine: Engine) -> None:
    store = ChatStore()
    session = ChatSession.start(store, engine, model="starter")
    stream = session.send("Tell me a long story.", SamplingParams(max_tokens=2000, ignore_eos=True))
    for item in stream:
        if isinstance(item, TextChunk):
            engine.cancel()
    last = store.messages(session.conversation_id)[-1]
    assert last.role == "assistant" and last.finish_reason == "cancelled" and last.content


def test_regenerate_replaces_the_last_answer(engine: Engine) -> None:
    store = ChatStore()
    session = ChatSession.start(store, engine, model="starter")
    _run(session.send("Name a fruit.", SamplingParams(temperature=1.0, seed=1, max_tokens=8)))
    first_ids = [m.id for m in store.messages(session.conversation_id)]
    _run(session.regenerate(SamplingParams(temperature=1.0, seed=2, max_tokens=8)))
    msgs = store.messages(session.conversation_id)
    assert len(msgs) == 2 and msgs[0].id == first_ids[0] and msgs[1].id != first_ids[1]


def test_edit_and_rerun_drops_later_messages(engine: Engine) -> None:
    store = ChatStore()
    session = ChatSession.start(store, engine, model="starter")
    _run(session.send("First question", SHORT))
    _run(session.send("Second question", SHORT))
    first_user = store.messages(session.conversation_id)[0]
    _run(session.edit_and_rerun(first_user.id or 0, "Edited question", SHORT))
    msgs = store.messages(session.conversation_id)
    assert [m.content for m in msgs if m.role == "user"] == ["Edited question"] and len(msgs) == 2


def test_engine_crash_keeps_the_history(starter_model: Path) -> None:
    store = ChatStore()
    with Engine() as eng:
        eng.load(starter_model, LoadOptions(n_ctx=512, n_threads=2))
        session = ChatSession.start(store, eng, model="starter")
        _run(session.send("Hello", SHORT))
        with pytest.raises(EngineCrashedError):
            for item in session.send("Tell me a story", SamplingParams(max_tokens=3000, ignore_eos=True)):
                if isinstance(item, TextChunk) and eng.pid:
                    os.kill(eng.pid, signal.SIGKILL)
    msgs = ChatStore().messages(session.conversation_id)
    assert [m.role for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[-1].finish_reason == "interrupted" and msgs[-1].content
