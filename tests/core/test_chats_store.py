"""The SQLite chat store: conversations, messages, search, export, durability."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from core.chats import ChatStore, Message
from core.errors import HearthError, NotFoundError
from core.paths import get_paths


def test_conversation_round_trip_and_wal() -> None:
    store = ChatStore()
    conv = store.create(title="Bread", model="gemma", system_prompt="Be brief.", params={"temperature": 0.2})
    store.add_message(conv.id, Message(role="user", content="How do I bake bread?"))
    store.add_message(conv.id, Message(role="assistant", content="Flour, water, salt, yeast.", completion_tokens=7,
                                       tokens_per_second=42.0, finish_reason="stop"))
    store.close()
    again = ChatStore()
    got = again.get(conv.id)
    assert (got.title, got.model, got.system_prompt, got.params, got.message_count) == (
        "Bread", "gemma", "Be brief.", {"temperature": 0.2}, 2)
    msgs = again.messages(conv.id)
    assert [m.role for m in msgs] == ["user", "assistant"]
    assert msgs[1].completion_tokens == 7 and msgs[1].finish_reason == "stop"
    mode = sqlite3.connect(get_paths().chats_db).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_search_rename_delete_and_truncate() -> None:
    store = ChatStore()
    a = store.create(title="Sourdough")
    b = store.create(title="Taxes")
    store.add_message(b.id, Message(role="user", content="What about 100% rye?"))
    assert [c.id for c in store.list(search="sour")] == [a.id]
    assert [c.id for c in store.list(search="100%")] == [b.id]
    assert store.list(search="_") == []  # LIKE wildcards are matched literally
    store.rename(a.id, "Rye")
    assert store.get(a.id).title == "Rye"
    m1 = store.add_message(a.id, Message(role="user", content="one"))
    store.add_message(a.id, Message(role="assistant", content="two"))
    assert store.truncate_from(a.id, m1.id or 0) == 2
    assert store.messages(a.id) == []
    store.delete(b.id)
    with pytest.raises(NotFoundError):
        store.get(b.id)


def test_export_markdown_and_json() -> None:
    store = ChatStore()
    conv = store.create(title="T", model="m", system_prompt="sys")
    store.add_message(conv.id, Message(role="user", content="hi"))
    md = store.export(conv.id, "md")
    assert "# T" in md and "## System" in md and "## User\n\nhi" in md
    data = json.loads(store.export(conv.id, "json"))
    assert data["conversation"]["title"] == "T" and data["messages"][0]["content"] == "hi"
    with pytest.raises(HearthError, match="md or json"):
        store.export(conv.id, "pdf")


def test_a_killed_writer_loses_only_the_unfinished_message(tmp_path: Path) -> None:
    """A process killed after committing one message and before the next keeps the first."""
    store = ChatStore()
    conv = store.create(title="crash")
    script = (
        "import os, signal; from core.chats import ChatStore, Message; s = ChatStore(); "
        f"s.add_message({conv.id}, Message(role='user', content='kept')); os.kill(os.getpid(), signal.SIGKILL)"
    )
    subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert [m.content for m in ChatStore().messages(conv.id)] == ["kept"]


def test_damaged_database_gives_a_clear_error_and_is_left_alone() -> None:
    path = get_paths().ensure().chats_db
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(HearthError, match="damaged"):
        ChatStore()
    assert path.read_bytes().startswith(b"this is not a database")


OLD_SCHEMA = """
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    system_prompt TEXT NOT NULL DEFAULT '',
    params TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content TEXT NOT NULL,
    created_at REAL NOT NULL,
    completed_at REAL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    tokens_per_second REAL,
    finish_reason TEXT,
    model TEXT,
    meta TEXT NOT NULL DEFAULT '{}'
);
"""


def test_a_database_from_before_adapters_gains_the_adapter_columns_and_keeps_its_chats() -> None:
    path = get_paths().ensure().chats_db
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA)
    old.execute("INSERT INTO conversations (title, model, created_at, updated_at) VALUES ('Old chat', 'gemma', 1, 1)")
    old.execute("INSERT INTO messages (conversation_id, role, content, created_at) VALUES (1, 'user', 'hi', 1)")
    old.commit()
    old.close()

    store = ChatStore()
    conv = store.get(1)
    assert (conv.title, conv.model, conv.adapter, conv.adapter_scale, conv.message_count) == ("Old chat", "gemma", "", 1.0, 1)
    store.update(1, adapter="my-notes", adapter_scale=0.8)
    made = store.create(title="New", model="gemma", adapter="other", adapter_scale=1.5)
    store.close()

    again = ChatStore()  # opening a migrated database again changes nothing
    assert (again.get(1).adapter, again.get(1).adapter_scale) == ("my-notes", 0.8)
    assert (again.get(made.id).adapter, again.get(made.id).adapter_scale) == ("other", 1.5)
    assert [m.content for m in again.messages(1)] == ["hi"]
    assert "*Model: gemma + my-notes (×0.8)*" in again.export(1)
    columns = [row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(conversations)")]
    assert columns.count("adapter") == 1 and columns.count("adapter_scale") == 1
