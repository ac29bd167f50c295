"""Images in saved chats: the store keeps them with their messages, the session sends them to the model."""

from __future__ import annotations

import io
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from core.chats import ChatStore, Message
from core.chats.session import ChatSession
from core.engine import Completion, Engine, LoadOptions, SamplingParams
from core.errors import HearthError, NotFoundError, NoVisionError
from core.media import PreparedImage, prepare_image
from core.paths import get_paths


def _image(seed: int = 0, size: tuple[int, int] = (64, 48), fmt: str = "PNG") -> PreparedImage:
    """A distinct picture per seed, prepared as a chat would."""
    base = Image.linear_gradient("L").rotate(seed * 41).resize(size)
    rgb = Image.merge("RGB", (base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT), Image.new("L", size, seed * 60)))
    out = io.BytesIO()
    rgb.save(out, fmt)
    return prepare_image(out.getvalue(), name=f"pic{seed}.{fmt.lower()}")


def _image_rows() -> int:
    return int(sqlite3.connect(get_paths().chats_db).execute("SELECT COUNT(*) FROM images").fetchone()[0])


# -- store ----------------------------------------------------------------------------------------

def test_images_round_trip_in_order_and_survive_reopening() -> None:
    store = ChatStore()
    conv = store.create(title="pictures")
    a, b = _image(1), _image(2, fmt="JPEG")
    user = store.add_message(conv.id, Message(role="user", content="Compare these."), images=[b, a])
    assert user.images == [b.sha256, a.sha256]
    store.add_message(conv.id, Message(role="assistant", content="The first is darker."))
    store.close()

    again = ChatStore()
    messages = again.messages(conv.id)
    assert [m.images for m in messages] == [[b.sha256, a.sha256], []]
    assert again.image(a.sha256) == a and again.image(b.sha256) == b  # bytes, mime, size and hash as stored
    assert again.image(b.sha256).mime == "image/jpeg"


def test_one_image_is_stored_once_however_often_it_is_attached() -> None:
    store = ChatStore()
    conv = store.create()
    img = _image(3)
    store.add_message(conv.id, Message(role="user", content="one"), images=[img])
    store.add_message(conv.id, Message(role="user", content="again"), images=[img, img])
    assert [m.images for m in store.messages(conv.id)] == [[img.sha256], [img.sha256, img.sha256]]
    assert _image_rows() == 1


def test_a_message_cannot_link_an_image_the_store_lacks() -> None:
    store = ChatStore()
    conv = store.create()
    with pytest.raises(NotFoundError, match="attach the image again"):
        store.add_message(conv.id, Message(role="user", content="x", images=["0" * 64]))
    assert store.messages(conv.id) == []  # nothing half-written
    sha = store.add_image(_image(4))
    assert store.add_message(conv.id, Message(role="user", content="x", images=[sha])).images == [sha]
    with pytest.raises(NotFoundError):
        store.image("f" * 64)


def test_deleting_a_conversation_removes_only_images_nobody_else_uses() -> None:
    store = ChatStore()
    shared, own = _image(5), _image(6)
    first = store.create(title="first")
    second = store.create(title="second")
    store.add_message(first.id, Message(role="user", content="a"), images=[shared, own])
    store.add_message(second.id, Message(role="user", content="b"), images=[shared])
    store.delete(first.id)
    assert store.image(shared.sha256) == shared
    with pytest.raises(NotFoundError):
        store.image(own.sha256)
    store.delete(second.id)
    assert _image_rows() == 0


def test_truncating_frees_the_images_of_the_dropped_messages() -> None:
    store = ChatStore()
    conv = store.create()
    kept, dropped = _image(7), _image(8)
    store.add_message(conv.id, Message(role="user", content="keep"), images=[kept])
    later = store.add_message(conv.id, Message(role="user", content="drop"), images=[dropped])
    store.truncate_from(conv.id, later.id or 0)
    assert [m.images for m in store.messages(conv.id)] == [[kept.sha256]]
    assert _image_rows() == 1


def test_export_mentions_the_images() -> None:
    store = ChatStore()
    conv = store.create(title="Photo")
    img = _image(9, size=(640, 480))
    store.add_message(conv.id, Message(role="user", content="What is this?"), images=[img])
    md = store.export(conv.id, "md")
    assert "## User\n\n[image: 640x480]\n\nWhat is this?" in md
    data = json.loads(store.export(conv.id, "json"))
    assert data["messages"][0]["images"] == [img.sha256]
    assert data["images"] == {img.sha256: {"mime": "image/png", "width": 640, "height": 480}}


def test_an_old_database_without_images_migrates_in_place() -> None:
    """A chats.sqlite3 from before images (and before tool messages) opens with its rows, and takes images."""
    path = get_paths().ensure().chats_db
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE conversations (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL DEFAULT '',
            model TEXT NOT NULL DEFAULT '', system_prompt TEXT NOT NULL DEFAULT '', params TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL, updated_at REAL NOT NULL);
        CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')), content TEXT NOT NULL,
            created_at REAL NOT NULL, completed_at REAL, prompt_tokens INTEGER, completion_tokens INTEGER,
            tokens_per_second REAL, finish_reason TEXT, model TEXT, meta TEXT NOT NULL DEFAULT '{}');
    """)
    now = time.time()
    db.execute("INSERT INTO conversations (title, created_at, updated_at) VALUES ('old chat', ?, ?)", (now, now))
    db.execute("INSERT INTO messages (conversation_id, role, content, created_at) VALUES (1, 'user', 'hello', ?)", (now,))
    db.execute("INSERT INTO messages (conversation_id, role, content, created_at) VALUES (1, 'assistant', 'hi', ?)",
               (now,))
    db.commit()
    db.close()

    store = ChatStore()
    assert [(m.role, m.content, m.images) for m in store.messages(1)] == [("user", "hello", []), ("assistant", "hi", [])]
    img = _image(10)
    store.add_message(1, Message(role="user", content="and this?"), images=[img])
    store.close()
    reopened = ChatStore()
    assert [m.images for m in reopened.messages(1)] == [[], [], [img.sha256]]
    assert reopened.get(1).title == "old chat"
    reopened.delete(1)  # the cascade reaches the links through the rebuilt messages table
    assert _image_rows() == 0


# -- session (tiny model without a projector) -------------------------------------------------------

@pytest.fixture(scope="module")
def text_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    from tests.fixtures.tiny_vision import write_tiny_vision_model

    model, _ = write_tiny_vision_model(tmp_path_factory.mktemp("text-only"))
    with Engine() as engine:
        engine.load(model, LoadOptions(n_ctx=512))  # the model alone: no projector
        yield engine


GREEDY = SamplingParams(temperature=0, max_tokens=6, seed=1)


def _run(stream: Iterator[Any]) -> Completion:
    return [item for item in stream if isinstance(item, Completion)][-1]


def test_prompt_messages_carry_image_parts_in_order() -> None:
    store = ChatStore()
    session = ChatSession(store, Engine(), store.create(system_prompt="Describe.").id)  # never started: no model
    a, b = _image(11), _image(12)
    store.add_message(session.conversation_id, Message(role="user", content="Two pictures"), images=[a, b])
    store.add_message(session.conversation_id, Message(role="assistant", content="Seen."))
    store.add_message(session.conversation_id, Message(role="user", content="", images=[a.sha256]))
    assert session.prompt_messages() == [
        {"role": "system", "content": "Describe."},
        {"role": "user", "content": [{"type": "image", "data": a.data}, {"type": "image", "data": b.data},
                                     {"type": "text", "text": "Two pictures"}]},
        {"role": "assistant", "content": "Seen."},
        {"role": "user", "content": [{"type": "image", "data": a.data}]},
    ]


def test_prompt_messages_with_tool_calls_keep_the_images_on_the_right_message() -> None:
    store = ChatStore()
    conv = store.create()
    session = ChatSession(store, Engine(), conv.id)
    img = _image(13)
    store.add_message(conv.id, Message(role="user", content="plain"))
    store.add_message(conv.id, Message(role="assistant", content="", finish_reason="tool_calls",
                                       meta={"tool_calls": [{"id": "c1", "tool": "look", "arguments": "{}"}]}))
    store.add_message(conv.id, Message(role="tool", content="result", meta={"tool_call_id": "c1", "tool": "look"}))
    store.add_message(conv.id, Message(role="assistant", content="done"))
    store.add_message(conv.id, Message(role="user", content="and this"), images=[img])
    users = [m for m in session.prompt_messages() if m["role"] == "user"]
    assert users == [{"role": "user", "content": "plain"},
                     {"role": "user", "content": [{"type": "image", "data": img.data},
                                                  {"type": "text", "text": "and this"}]}]


def test_an_image_to_a_model_without_projector_loses_nothing(text_engine: Engine) -> None:
    store = ChatStore()
    session = ChatSession.start(store, text_engine, model="tiny")
    img = _image(14)
    with pytest.raises(NoVisionError, match="cannot read images"):
        _run(session.send("What is in the picture?", GREEDY, images=[img]))
    messages = store.messages(session.conversation_id)
    assert [(m.role, m.content, m.images) for m in messages] == [("user", "What is in the picture?", [img.sha256])]
    assert store.image(img.sha256) == img
    # The engine is unharmed and the chat goes on: the picture the model cannot see becomes a line saying so.
    answer = _run(session.send("Never mind.", GREEDY))
    assert answer.finish_reason in ("stop", "length")
    assert [m["content"] for m in session.prompt_messages()][:2] == ["[image]\nWhat is in the picture?", "Never mind."]
    assert store.messages(session.conversation_id)[0].images == [img.sha256]  # still saved for a model that sees


def test_an_empty_message_needs_an_image(text_engine: Engine) -> None:
    session = ChatSession.start(ChatStore(), text_engine, model="tiny")
    with pytest.raises(HearthError, match="The message is empty"):
        session.send("  ", GREEDY)


# -- session on the tiny vision model (model + projector from the ENGINE fixtures) -------------------

PROBE = SamplingParams(temperature=0, max_tokens=3, seed=1, logprobs=True, top_logprobs=5)


@pytest.fixture(scope="module")
def vision_engine(tiny_vision: Any) -> Iterator[Engine]:
    with Engine() as engine:
        status = engine.load(tiny_vision.model, LoadOptions(n_ctx=512, mmproj=str(tiny_vision.mmproj)))
        assert status.vision
        yield engine


def _first_token_view(completion: Completion) -> list[tuple[str, float]]:
    """The first answer token's top alternatives with their log-probabilities (what the model saw, in numbers)."""
    assert completion.logprobs
    return [(t["token"], round(t["logprob"], 4)) for t in completion.logprobs[0]["top_logprobs"]]


def _vision_image(tiny_vision: Any, seed: int) -> PreparedImage:
    from core.media import load_image_file
    from tests.fixtures.tiny_vision import write_test_image

    return load_image_file(write_test_image(tiny_vision.images / f"chat-{seed}.png", "png", seed=seed))


def test_the_image_reaches_the_model_through_the_chat(vision_engine: Engine, tiny_vision: Any) -> None:
    store = ChatStore()
    red, blue = _vision_image(tiny_vision, 1), _vision_image(tiny_vision, 2)
    answers = {}
    for key, images in (("none", []), ("red", [red]), ("blue", [blue])):
        session = ChatSession.start(store, vision_engine, model="tiny-vision")
        answers[key] = _run(session.send("What is in the picture?", PROBE, images=images))
    assert answers["red"].stats.image_tokens > 0 and answers["none"].stats.image_tokens == 0
    views = {key: _first_token_view(c) for key, c in answers.items()}
    assert views["red"] != views["none"]  # the image changes what the model predicts
    assert views["red"] != views["blue"]  # and which image it is matters


def test_regenerate_edit_and_a_reopened_chat_still_see_the_image(vision_engine: Engine, tiny_vision: Any) -> None:
    store = ChatStore()
    img = _vision_image(tiny_vision, 3)
    session = ChatSession.start(store, vision_engine, model="tiny-vision")
    first = _run(session.send("Describe it.", PROBE, images=[img]))
    again = _run(session.regenerate(PROBE))
    assert again.stats.image_tokens == first.stats.image_tokens > 0
    assert _first_token_view(again) == _first_token_view(first)  # greedy, same prompt: the image is still there
    [user, _answer] = store.messages(session.conversation_id)
    assert user.images == [img.sha256]

    reopened = ChatSession(ChatStore(), vision_engine, session.conversation_id)
    assert _first_token_view(_run(reopened.regenerate(PROBE))) == _first_token_view(first)

    edited = _run(reopened.edit_and_rerun(user.id or 0, "Describe it.", PROBE))
    assert _first_token_view(edited) == _first_token_view(first)
    assert [m.images for m in store.messages(session.conversation_id)] == [[img.sha256], []]
    removed = _run(reopened.edit_and_rerun(store.messages(session.conversation_id)[0].id or 0, "Describe it.", PROBE,
                                           images=[]))
    assert removed.stats.image_tokens == 0 and _rows_for(session.conversation_id, store) == [[], []]
    assert _image_rows() == 0  # the image no message uses any more is gone


def _rows_for(conversation_id: int, store: ChatStore) -> list[list[str]]:
    return [m.images for m in store.messages(conversation_id)]


def test_an_image_only_message_is_answered(vision_engine: Engine, tiny_vision: Any) -> None:
    store = ChatStore()
    session = ChatSession.start(store, vision_engine, model="tiny-vision")
    answer = _run(session.send("", PROBE, images=[_vision_image(tiny_vision, 4)]))
    assert answer.stats.image_tokens > 0
    assert session.conversation.title == "Image"


def test_the_tool_loop_still_works_with_images(tiny_vision: Any, tmp_path: Path) -> None:
    """The scripted tool-calling model with the tiny projector: the call, its result and the answer, image kept."""
    from core.chats.session import ToolCallResult
    from core.tools import McpServerConfig, ToolRegistry
    from tests.fixtures.mcp_servers import stdio_entry
    from tests.fixtures.tool_chat_model import ANSWER_TEXT, write_tool_chat_llama

    model = write_tool_chat_llama(tmp_path / "tool-chat.gguf", n_embd=64)  # the projector's output width
    store = ChatStore()
    img = _vision_image(tiny_vision, 5)
    with Engine() as engine, ToolRegistry([McpServerConfig(name="fixture", **stdio_entry())]) as registry:
        registry.start()
        status = engine.load(model, LoadOptions(n_ctx=4096, mmproj=str(tiny_vision.mmproj)))
        assert status.vision and status.supports_tools
        session = ChatSession.start(store, engine, model="tool-chat")
        items = list(session.send("What is 2 + 3?", SamplingParams(temperature=0, max_tokens=40, repeat_penalty=1.0),
                                  images=[img], tools=registry, approve=lambda _request: "once"))
    [result] = [i for i in items if isinstance(i, ToolCallResult)]
    assert result.status == "ok" and result.text.strip() == "5"
    final = [i for i in items if isinstance(i, Completion)][-1]
    assert final.text == ANSWER_TEXT and final.stats.image_tokens > 0  # the last round's prompt still had the image
    assert [(m.role, m.images) for m in store.messages(session.conversation_id)] == [
        ("user", [img.sha256]), ("assistant", []), ("tool", []), ("assistant", [])]
