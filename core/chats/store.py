"""SQLite store of conversations.

A message is committed as soon as it is complete, so killing the process mid-answer loses at most
the answer being generated. WAL mode lets the GUI read while another process writes.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import HearthError, NotFoundError
from core.media.images import PreparedImage
from core.paths import get_paths

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    system_prompt TEXT NOT NULL DEFAULT '',
    params TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    adapter TEXT NOT NULL DEFAULT '',
    adapter_scale REAL NOT NULL DEFAULT 1.0
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
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
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id);
CREATE TABLE IF NOT EXISTS images (
    sha256 TEXT PRIMARY KEY,
    mime TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    data BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS message_images (
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    sha256 TEXT NOT NULL REFERENCES images(sha256),
    PRIMARY KEY (message_id, position)
);
CREATE INDEX IF NOT EXISTS message_images_by_image ON message_images(sha256);
"""
# Images attached to messages (core.media.PreparedImage: re-encoded, at most 1536 px a side) are kept
# once per content (sha256), linked to messages in order by ``message_images``; an image goes when no
# message links to it any more (``_drop_unused_images``). A database made before images simply gains
# the two empty tables (CREATE TABLE IF NOT EXISTS): its rows are untouched.

# Columns added after the first release: (table, column, declaration). A database made before one
# was added gets it with ``ALTER TABLE ... ADD COLUMN`` when it is opened; old rows take the default.
ADDED_COLUMNS = (
    ("conversations", "adapter", "TEXT NOT NULL DEFAULT ''"),
    ("conversations", "adapter_scale", "REAL NOT NULL DEFAULT 1.0"),
    ("conversations", "docs", "TEXT NOT NULL DEFAULT ''"),
    # Compare (core.chats.compare): the two sides of a comparison share ``compare_group`` (the left
    # side's id; 0 = an ordinary chat) and say which column they are (0 left, 1 right).
    ("conversations", "compare_group", "INTEGER NOT NULL DEFAULT 0"),
    ("conversations", "compare_side", "INTEGER NOT NULL DEFAULT 0"),
)


@dataclass
class Message:
    role: str
    content: str
    id: int | None = None
    conversation_id: int | None = None
    created_at: float = field(default_factory=time.time)
    completed_at: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_per_second: float | None = None
    finish_reason: str | None = None
    model: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)  # sha256s of the attached images, in order (ChatStore.image)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Conversation:
    id: int
    title: str
    model: str
    system_prompt: str
    params: dict[str, Any]
    created_at: float
    updated_at: float
    message_count: int = 0
    adapter: str = ""  # name of the fine-tuned adapter applied to ``model`` ('' = none)
    adapter_scale: float = 1.0
    docs: str = ""  # the document collection attached to the chat ('' = none)
    compare_group: int = 0  # a side of a comparison (core.chats.compare): the group's id; 0 = an ordinary chat
    compare_side: int = 0  # which column of the comparison: 0 left, 1 right

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ChatStore:
    """Conversations and messages in ``chats.sqlite3``. One instance may be shared by threads."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or get_paths().ensure().chats_db
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise HearthError(
                f"The chat history database {self.path} is damaged ({exc}): move it aside to start a new "
                "one; the old file is left untouched."
            ) from exc

    def _migrate(self) -> None:
        for table, column, declaration in ADDED_COLUMNS:
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        if "'tool'" not in self._table_sql("messages"):
            self._allow_tool_messages()

    def _table_sql(self, table: str) -> str:
        row = self._db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
        return str(row[0]) if row else ""

    def _allow_tool_messages(self) -> None:
        """Widen a database made before tool calls: its CHECK on ``messages.role`` lacks 'tool'.

        SQLite cannot alter a CHECK constraint; this is its documented 12-step table rebuild
        (https://www.sqlite.org/lang_altertable.html#otheralter): a new table, the rows copied, the old
        one dropped, the new one renamed, the index made again, all in one transaction.
        """
        start = SCHEMA.index("CREATE TABLE IF NOT EXISTS messages")
        create = SCHEMA[start:SCHEMA.index(";", start)].replace(
            "CREATE TABLE IF NOT EXISTS messages", "CREATE TABLE messages_with_tools")
        self._db.execute("PRAGMA foreign_keys=OFF")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if "'tool'" not in self._table_sql("messages"):  # another process may have done it meanwhile
                    columns = ", ".join(row[1] for row in self._db.execute("PRAGMA table_info(messages)"))
                    self._db.execute(create)
                    self._db.execute(f"INSERT INTO messages_with_tools ({columns}) SELECT {columns} FROM messages")
                    self._db.execute("DROP TABLE messages")
                    self._db.execute("ALTER TABLE messages_with_tools RENAME TO messages")
                    self._db.execute("CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id)")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        finally:
            self._db.execute("PRAGMA foreign_keys=ON")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    # -- conversations -------------------------------------------------------------------------
    def create(
        self, *, title: str = "", model: str = "", system_prompt: str = "", params: dict[str, Any] | None = None,
        adapter: str = "", adapter_scale: float = 1.0,
    ) -> Conversation:
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO conversations (title, model, system_prompt, params, created_at, updated_at, adapter, "
                "adapter_scale) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (title, model, system_prompt, json.dumps(params or {}), now, now, adapter, float(adapter_scale)),
            )
            conv_id = int(cur.lastrowid or 0)
        return self.get(conv_id)

    def get(self, conversation_id: int) -> Conversation:
        with self._lock:
            row = self._db.execute(
                "SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS n "
                "FROM conversations c WHERE c.id = ?",
                (conversation_id,),
            ).fetchone()
        if row is None:
            raise NotFoundError(f"No conversation with id {conversation_id}: see 'hearth chats'.")
        return self._conversation(row)

    def list(self, *, search: str = "", limit: int | None = None) -> list[Conversation]:
        """Conversations, most recently updated first; ``search`` matches titles and message text."""
        sql = (
            "SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS n "
            "FROM conversations c"
        )
        args: list[Any] = []
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            like = f"%{escaped}%"
            sql += (
                " WHERE c.title LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM messages m WHERE "
                "m.conversation_id = c.id AND m.content LIKE ? ESCAPE '\\')"
            )
            args += [like, like]
        sql += " ORDER BY c.updated_at DESC, c.id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [self._conversation(r) for r in rows]

    def update(self, conversation_id: int, **changes: Any) -> Conversation:
        allowed = {"title", "model", "system_prompt", "params", "adapter", "adapter_scale", "docs", "compare_group",
                   "compare_side"}
        bad = set(changes) - allowed
        if bad:
            raise ValueError(f"cannot update {bad}")
        if "params" in changes:
            changes["params"] = json.dumps(changes["params"])
        self.get(conversation_id)
        sets = ", ".join(f"{k} = ?" for k in changes)
        with self._tx() as db:
            db.execute(
                f"UPDATE conversations SET {sets}, updated_at = ? WHERE id = ?",
                (*changes.values(), time.time(), conversation_id),
            )
        return self.get(conversation_id)

    def rename(self, conversation_id: int, title: str) -> Conversation:
        return self.update(conversation_id, title=title)

    def delete(self, conversation_id: int) -> None:
        """Delete a conversation, its messages, and the images no other conversation's message uses."""
        self.get(conversation_id)
        with self._tx() as db:
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            self._drop_unused_images(db)

    # -- images --------------------------------------------------------------------------------
    def add_image(self, image: PreparedImage) -> str:
        """Keep a prepared image (once per content) and return its sha256, the key messages link by.

        An image no message links to is removed by the next delete or truncate: link it with
        ``add_message`` (or pass it there as ``images``) right away.
        """
        with self._tx() as db:
            self._insert_image(db, image)
        return image.sha256

    def image(self, sha256: str) -> PreparedImage:
        """An image a message links to, as it was stored."""
        with self._lock:
            row = self._db.execute(
                "SELECT mime, width, height, data FROM images WHERE sha256 = ?", (sha256,)).fetchone()
        if row is None:
            raise NotFoundError(f"No image {sha256[:12]} in the chat history: it was deleted with its conversation.")
        return PreparedImage(bytes(row["data"]), row["mime"], int(row["width"]), int(row["height"]), sha256)

    @staticmethod
    def _insert_image(db: sqlite3.Connection, image: PreparedImage) -> None:
        db.execute(
            "INSERT OR IGNORE INTO images (sha256, mime, width, height, data, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (image.sha256, image.mime, image.width, image.height, sqlite3.Binary(image.data), time.time()),
        )

    @staticmethod
    def _drop_unused_images(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM images WHERE NOT EXISTS "
                   "(SELECT 1 FROM message_images mi WHERE mi.sha256 = images.sha256)")

    # -- messages ------------------------------------------------------------------------------
    def add_message(
        self, conversation_id: int, message: Message, images: Sequence[PreparedImage] = (),
    ) -> Message:
        """Commit one complete message (and bump the conversation's ``updated_at``).

        ``images`` are stored with it and appended to ``message.images``; sha256s already in
        ``message.images`` must name images the store holds (``add_image``).
        """
        self.get(conversation_id)
        with self._tx() as db:
            for image in images:
                self._insert_image(db, image)
            shas = [*message.images, *(image.sha256 for image in images)]
            known = {row[0] for row in db.execute(
                f"SELECT sha256 FROM images WHERE sha256 IN ({', '.join('?' * len(shas))})", shas)} if shas else set()
            missing = [sha for sha in shas if sha not in known]
            if missing:
                raise NotFoundError(f"No image {missing[0][:12]} in the chat history: attach the image again.")
            cur = db.execute(
                "INSERT INTO messages (conversation_id, role, content, created_at, completed_at, prompt_tokens, "
                "completion_tokens, tokens_per_second, finish_reason, model, meta) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation_id,
                    message.role,
                    message.content,
                    message.created_at,
                    message.completed_at or time.time(),
                    message.prompt_tokens,
                    message.completion_tokens,
                    message.tokens_per_second,
                    message.finish_reason,
                    message.model,
                    json.dumps(message.meta),
                ),
            )
            db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (time.time(), conversation_id))
            message.id = int(cur.lastrowid or 0)
            db.executemany("INSERT INTO message_images (message_id, position, sha256) VALUES (?, ?, ?)",
                           [(message.id, position, sha) for position, sha in enumerate(shas)])
            message.conversation_id = conversation_id
            message.images = shas
        return message

    def messages(self, conversation_id: int) -> builtins.list[Message]:
        self.get(conversation_id)
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
            ).fetchall()
            links = self._db.execute(
                "SELECT mi.message_id, mi.sha256 FROM message_images mi JOIN messages m ON m.id = mi.message_id "
                "WHERE m.conversation_id = ? ORDER BY mi.message_id, mi.position", (conversation_id,)
            ).fetchall()
        images: dict[int, builtins.list[str]] = {}
        for link in links:
            images.setdefault(int(link[0]), []).append(str(link[1]))
        messages = [self._message(r) for r in rows]
        for m in messages:
            m.images = images.get(m.id or 0, [])
        return messages

    def truncate_from(self, conversation_id: int, message_id: int) -> int:
        """Delete ``message_id`` and every later message (edit-and-rerun, regenerate)."""
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND id >= ?", (conversation_id, message_id)
            )
            removed = cur.rowcount
            db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (time.time(), conversation_id))
            self._drop_unused_images(db)
        return removed

    # -- export --------------------------------------------------------------------------------
    def export(self, conversation_id: int, fmt: str = "md") -> str:
        conv = self.get(conversation_id)
        messages = self.messages(conversation_id)
        shas = list(dict.fromkeys(sha for m in messages for sha in m.images))
        sizes = self._image_sizes(shas)
        if fmt == "json":
            # Images by sha256 (their bytes stay in the database: a JSON export is for reading and tools).
            images = {sha: {"mime": mime, "width": w, "height": h} for sha, (mime, w, h) in sizes.items()}
            return json.dumps(
                {"conversation": conv.to_dict(), "messages": [m.to_dict() for m in messages], "images": images},
                indent=2,
            )
        if fmt != "md":
            raise HearthError(f"Unknown export format '{fmt}': use md or json.")
        model = conv.model or "unknown"
        if conv.adapter:
            model += f" + {conv.adapter} (×{conv.adapter_scale:g})"
        lines = [f"# {conv.title or 'Untitled chat'}", "", f"*Model: {model}*", ""]
        if conv.system_prompt:
            lines += ["## System", "", conv.system_prompt, ""]
        for m in messages:
            lines += [f"## {m.role.capitalize()}", ""]
            for sha in m.images:
                _, w, h = sizes.get(sha, ("", 0, 0))
                lines += [f"[image: {w}x{h}]", ""]
            lines += [m.content, ""]
        return "\n".join(lines)

    def _image_sizes(self, shas: builtins.list[str]) -> dict[str, tuple[str, int, int]]:
        """sha256 -> (mime, width, height) of stored images, without reading their bytes."""
        if not shas:
            return {}
        with self._lock:
            rows = self._db.execute(
                f"SELECT sha256, mime, width, height FROM images WHERE sha256 IN ({', '.join('?' * len(shas))})",
                shas).fetchall()
        return {str(r[0]): (str(r[1]), int(r[2]), int(r[3])) for r in rows}

    @staticmethod
    def _conversation(row: sqlite3.Row) -> Conversation:
        try:
            params = json.loads(row["params"] or "{}")
        except ValueError:
            params = {}
        return Conversation(
            id=row["id"],
            title=row["title"],
            model=row["model"],
            system_prompt=row["system_prompt"],
            params=params,
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            message_count=row["n"],
            adapter=row["adapter"] or "",
            adapter_scale=float(row["adapter_scale"] if row["adapter_scale"] is not None else 1.0),
            docs=row["docs"] or "",
            compare_group=int(row["compare_group"] or 0),
            compare_side=int(row["compare_side"] or 0),
        )

    @staticmethod
    def _message(row: sqlite3.Row) -> Message:
        try:
            meta = json.loads(row["meta"] or "{}")
        except ValueError:
            meta = {}
        return Message(
            id=row["id"],
            conversation_id=row["conversation_id"],
            role=row["role"],
            content=row["content"],
            created_at=row["created_at"],
            completed_at=row["completed_at"],
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            tokens_per_second=row["tokens_per_second"],
            finish_reason=row["finish_reason"],
            model=row["model"],
            meta=meta,
        )
