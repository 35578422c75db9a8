"""The inbox's SQLite database: the schema and every statement, called only from
the store's one worker thread (see :mod:`._store`), so a connection is never
shared between threads and no statement ever runs inside an event loop.

Each message is a row of prepared columns (summary JSON for listing, message JSON
for reading, lower-cased text for searching) and its bytes in a table of their
own, read back in slices, so listing pages through small rows only and no
request has to hold a whole big message in memory.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Final

from ._parse import Parsed, parse

#: 2: search_all holds mailpit's search text (the HTML body's text and the
#: attachments' file names too), and search_message_id the Message-ID alone.  A
#: version 1 file is brought up to date when opened (see _migrate).
SCHEMA_VERSION: Final = 2
# mailpit's IDs are 22 characters of this alphabet (shortuuid's): opaque to clients.
_ID_ALPHABET: Final = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

_SCHEMA: Final = """
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL,
    read INTEGER NOT NULL DEFAULT 0,
    attachments INTEGER NOT NULL,
    rcpts TEXT NOT NULL,
    summary TEXT NOT NULL,
    detail TEXT NOT NULL,
    headers TEXT NOT NULL,
    session TEXT NOT NULL,
    search_from TEXT NOT NULL,
    search_to TEXT NOT NULL,
    search_subject TEXT NOT NULL,
    search_all TEXT NOT NULL,
    search_message_id TEXT NOT NULL DEFAULT ''
);
CREATE TABLE raw (seq INTEGER PRIMARY KEY, data BLOB NOT NULL);
"""

_SUMMARY_ORDER: Final = (
    "ID", "MessageID", "Read", "From", "To", "Cc", "Bcc", "ReplyTo", "Subject", "Created",
    "Username", "Tags", "Size", "Attachments", "Snippet",
)  # fmt: skip


class StoreError(Exception):
    """The database cannot be used (made by a newer version, not a database)."""


def new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))


def created_text(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Database:
    def __init__(self, path: str, max_messages: int | None) -> None:
        self.max_messages = max_messages
        # Used from the store's one worker thread only; not checked per thread so that
        # __del__ may close it from whichever thread collects it.
        self.connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._prepare(path != ":memory:")
        except sqlite3.DatabaseError as error:
            self.connection.close()
            raise StoreError(f"{path}: {error}") from error

    def _prepare(self, on_disk: bool) -> None:
        db = self.connection
        if on_disk:
            # WAL: readers (a second process, sqlite3's shell) never block the writer.
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            db.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        elif version == 1:
            self._migrate()
        elif version != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {version}, this smtpwire reads version {SCHEMA_VERSION}"
            )

    def _migrate(self) -> None:
        """Version 1 to 2: the new column, and the search text of every stored
        message made anew from its bytes (one message in memory at a time), in one
        transaction: a failure leaves the file as it was."""
        db = self.connection
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("ALTER TABLE messages ADD COLUMN search_message_id TEXT NOT NULL DEFAULT ''")
            seqs = [row[0] for row in db.execute("SELECT seq FROM messages ORDER BY seq")]
            for seq in seqs:
                row = db.execute(
                    "SELECT messages.rcpts, raw.data FROM messages JOIN raw USING (seq)"
                    " WHERE seq = ?",
                    (seq,),
                ).fetchone()
                if row is None:
                    continue
                parsed = parse(bytes(row[1]), row[0].split("\n") if row[0] else [], None,
                               datetime.now(timezone.utc))  # fmt: skip
                db.execute(
                    "UPDATE messages SET search_from = ?, search_to = ?, search_subject = ?,"
                    " search_all = ?, search_message_id = ? WHERE seq = ?",
                    (
                        parsed.search_from, parsed.search_to, parsed.search_subject,
                        parsed.search_all, parsed.search_message_id, seq,
                    ),
                )  # fmt: skip
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.connection.close()

    def __del__(self) -> None:
        # An Inbox used as a handler is often never closed: the connection is closed
        # here rather than left to the collector (Python 3.13 warns of that).
        connection = getattr(self, "connection", None)
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    # -- writing ------------------------------------------------------------------

    def add(
        self, raw: bytes, parsed: Parsed, rcpt_tos: Sequence[str], session: dict[str, Any]
    ) -> tuple[dict[str, Any], list[str]]:
        """Store a message; its summary, and the IDs pruned to stay under the limit."""
        message_id = new_id()
        created = session["Received"]
        db = self.connection
        db.execute("BEGIN IMMEDIATE")
        try:
            cursor = db.execute(
                "INSERT INTO messages (id, created, attachments, rcpts, summary, detail, headers,"
                " session, search_from, search_to, search_subject, search_all,"
                " search_message_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    message_id, created, parsed.attachment_count,
                    "\n".join(rcpt.lower() for rcpt in rcpt_tos),
                    json.dumps(parsed.summary), json.dumps(parsed.detail),
                    json.dumps(parsed.headers), json.dumps({"ID": message_id, **session}),
                    parsed.search_from, parsed.search_to, parsed.search_subject,
                    parsed.search_all, parsed.search_message_id,
                ),
            )  # fmt: skip
            db.execute("INSERT INTO raw (seq, data) VALUES (?, ?)", (cursor.lastrowid, raw))
            pruned = self._prune()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return _summary(message_id, 0, created, parsed.summary), pruned

    def _prune(self) -> list[str]:
        if self.max_messages is None:
            return []
        rows = self.connection.execute(
            "SELECT seq, id FROM messages ORDER BY seq DESC LIMIT -1 OFFSET ?",
            (self.max_messages,),
        ).fetchall()
        self._delete_rows(rows)
        return [row[1] for row in rows]

    def _delete_rows(self, rows: Sequence[tuple[int, str]]) -> None:
        seqs = [(row[0],) for row in rows]
        self.connection.executemany("DELETE FROM messages WHERE seq = ?", seqs)
        self.connection.executemany("DELETE FROM raw WHERE seq = ?", seqs)

    def delete(
        self, ids: Sequence[str] | None, where: str = "", parameters: Sequence[str] = ()
    ) -> list[str]:
        """Delete the messages named (all when ``ids`` is None and no condition)."""
        db = self.connection
        db.execute("BEGIN IMMEDIATE")
        try:
            if ids is None and not where:
                deleted = [row[0] for row in db.execute("SELECT id FROM messages")]
                db.execute("DELETE FROM messages")
                db.execute("DELETE FROM raw")
            else:
                rows = self._rows(ids, where, parameters)
                self._delete_rows(rows)
                deleted = [row[1] for row in rows]
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return deleted

    def set_read(
        self, ids: Sequence[str] | None, read: bool, where: str = "", parameters: Sequence[str] = ()
    ) -> list[str]:
        db = self.connection
        db.execute("BEGIN IMMEDIATE")
        try:
            if ids is None and not where:
                changed = [
                    row[0] for row in db.execute("SELECT id FROM messages WHERE read != ?", (read,))
                ]
                db.execute("UPDATE messages SET read = ?", (int(read),))
            else:
                rows = self._rows(ids, where, parameters)
                db.executemany(
                    "UPDATE messages SET read = ? WHERE seq = ?",
                    [(int(read), row[0]) for row in rows],
                )
                changed = [row[1] for row in rows]
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return changed

    def _rows(
        self, ids: Sequence[str] | None, where: str, parameters: Sequence[str]
    ) -> list[tuple[int, str]]:
        if ids is not None:
            found = []
            for message_id in ids:
                row = self.connection.execute(
                    "SELECT seq, id FROM messages WHERE id = ?", (message_id,)
                ).fetchone()
                if row is not None:
                    found.append((row[0], row[1]))
            return found
        return [
            (row[0], row[1])
            # where is made of fixed fragments (_search.py); values are parameters.
            for row in self.connection.execute(
                f"SELECT seq, id FROM messages WHERE {where}",  # noqa: S608
                parameters,
            )
        ]

    # -- reading ------------------------------------------------------------------

    def stats(self) -> tuple[int, int]:
        total, unread = self.connection.execute(
            "SELECT count(*), coalesce(sum(read = 0), 0) FROM messages"
        ).fetchone()
        return int(total), int(unread)

    def listing(
        self, start: int, limit: int, where: str = "", parameters: Sequence[str] = ()
    ) -> tuple[list[dict[str, Any]], int, int]:
        """A page of summaries, newest first, and how many match (all, unread)."""
        condition = f" WHERE {where}" if where else ""
        rows = self.connection.execute(
            f"SELECT id, read, created, summary FROM messages{condition}"  # noqa: S608 - fixed fragments
            " ORDER BY seq DESC LIMIT ? OFFSET ?",
            (*parameters, limit, start),
        ).fetchall()
        matched, unread = self.connection.execute(
            f"SELECT count(*), coalesce(sum(read = 0), 0) FROM messages{condition}",  # noqa: S608
            parameters,
        ).fetchone()
        summaries = [_summary(row[0], row[1], row[2], json.loads(row[3])) for row in rows]
        return summaries, int(matched), int(unread)

    def resolve(self, message_id: str) -> str | None:
        """``latest`` (as mailpit allows) or an ID, if such a message is stored."""
        if message_id == "latest":
            row = self.connection.execute(
                "SELECT id FROM messages ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        else:
            row = self.connection.execute(
                "SELECT id FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
        return None if row is None else str(row[0])

    def detail(self, message_id: str, mark_read: bool) -> dict[str, Any] | None:
        row = self.connection.execute(
            "SELECT seq, detail FROM messages WHERE id = ?", (message_id,)
        ).fetchone()
        if row is None:
            return None
        if mark_read:
            self.connection.execute("UPDATE messages SET read = 1 WHERE seq = ?", (row[0],))
        return {"ID": message_id, "Read": True, **json.loads(row[1])}

    def column(self, message_id: str, name: str) -> Any:
        """The JSON column ``name`` (headers, session, detail) of a message, decoded."""
        assert name in ("headers", "session", "detail")  # noqa: S101 - never user input
        row = self.connection.execute(
            f"SELECT {name} FROM messages WHERE id = ?",  # noqa: S608
            (message_id,),
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def raw_location(self, message_id: str) -> tuple[int, int] | None:
        """The raw bytes' row and length."""
        row = self.connection.execute(
            "SELECT raw.seq, length(raw.data) FROM messages JOIN raw USING (seq) WHERE id = ?",
            (message_id,),
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def raw_slice(self, seq: int, offset: int, size: int) -> bytes:
        if sys.version_info >= (3, 11):
            # Incremental BLOB I/O reads only the pages of this slice.
            try:
                with self.connection.blobopen("raw", "data", seq, readonly=True) as blob:
                    blob.seek(offset)
                    return blob.read(size)
            except sqlite3.OperationalError:  # the message was deleted meanwhile
                return b""
        row = self.connection.execute(
            "SELECT substr(data, ?, ?) FROM raw WHERE seq = ?", (offset + 1, size, seq)
        ).fetchone()
        return b"" if row is None else bytes(row[0])

    def count(self, to: str | None) -> int:
        if to is None:
            return self.stats()[0]
        wanted = to.lower()
        # Exact recipients: rcpts holds one lower-cased address per line.
        row = self.connection.execute(
            "SELECT count(*) FROM messages WHERE instr(char(10) || rcpts || char(10), ?) > 0",
            (f"\n{wanted}\n",),
        ).fetchone()
        return int(row[0])

    def size_in_bytes(self) -> int:
        pages = self.connection.execute("PRAGMA page_count").fetchone()[0]
        page_size = self.connection.execute("PRAGMA page_size").fetchone()[0]
        return int(pages) * int(page_size)


def _summary(message_id: str, read: int, created: str, summary: dict[str, Any]) -> dict[str, Any]:
    merged = {**summary, "ID": message_id, "Read": bool(read), "Created": created}
    return {key: merged.get(key) for key in _SUMMARY_ORDER}
