"""The inbox's store without HTTP: the SQLite file (schema version, WAL, reopening),
pruning, raw slices, search terms, and the store's events."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from smtpwire.server.inbox import MessageStore, StoreError
from smtpwire.server.inbox._database import SCHEMA_VERSION
from smtpwire.server.inbox._search import SearchError, compile_query


def raw_message(number: int, *, to: str = "bob@example.com", body: str = "hello") -> bytes:
    return (
        f"From: Ann <ann@example.com>\r\nTo: {to}\r\nSubject: Message {number}\r\n\r\n{body}\r\n"
    ).encode()


async def test_file_store_is_versioned_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite"
    store = MessageStore(path)
    try:
        summary = await store.add(raw_message(1), ["bob@example.com"], {"Peer": None})
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reopened = MessageStore(path)
    try:
        messages, *_ = await reopened.listing(0, 10)
        assert [m["ID"] for m in messages] == [summary["ID"]]
    finally:
        reopened.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        MessageStore(path)


HTML_ONLY = (
    b"From: news@shop.example\r\nTo: bob@example.com\r\nSubject: News\r\n"
    b"Message-ID: <n1@shop.example>\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b"<p>The <b>spring</b> sale</p>\r\n"
)
WITH_FILE = (
    b"From: ann@example.com\r\nTo: bob@example.com\r\nSubject: Figures\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/plain\r\n\r\nSee the file, n1@shop.example.\r\n"
    b"--b\r\nContent-Type: text/csv\r\nContent-Disposition: attachment;"
    b' filename="Quarterly.csv"\r\n\r\n1,2\r\n--b--\r\n'
)


@pytest.mark.skipif(sqlite3.sqlite_version_info < (3, 35), reason="DROP COLUMN: SQLite 3.35")
async def test_a_version_1_file_is_migrated(tmp_path: Path) -> None:
    """Version 1 kept neither HTML bodies nor file names in its search text, and no
    column of Message-IDs: opening such a file re-indexes what it holds, once."""
    path = tmp_path / "old.sqlite"
    store = MessageStore(path)
    try:
        for raw in (HTML_ONLY, WITH_FILE):
            await store.add(raw, ["bob@example.com"], {"Peer": None})
    finally:
        store.close()
    # Turned into a version 1 file: no Message-ID column, and a search text without
    # what version 2 adds (here, cut down to the subject).
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE messages SET search_all = search_subject")
        db.execute("ALTER TABLE messages DROP COLUMN search_message_id")
        db.execute("PRAGMA user_version = 1")
        db.commit()
    reopened = MessageStore(path)
    try:
        for query, subjects in (
            ("spring", ["News"]),
            ("quarterly.csv", ["Figures"]),
            ("message-id:n1@shop", ["News"]),
            ("n1@shop.example", ["Figures", "News"]),
            ("-message-id:n1@shop", ["Figures"]),
        ):
            messages, *_ = await reopened.listing(0, 10, query)
            assert [m["Subject"] for m in messages] == subjects, query
        await reopened.add(HTML_ONLY, ["bob@example.com"], {})
    finally:
        reopened.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "text.sqlite"
    path.write_bytes(b"this is not a database, just some text " * 100)
    with pytest.raises(StoreError):
        MessageStore(path)


async def test_max_messages_prunes_the_oldest() -> None:
    store = MessageStore(max_messages=3)
    try:
        listener = store.events.subscribe()
        ids = [(await store.add(raw_message(n), ["bob@example.com"], {}))["ID"] for n in range(5)]
        messages, matched, _, total, _ = await store.listing(0, 10)
        assert [m["ID"] for m in messages] == ids[:1:-1]
        assert matched == total == 3
        seen = []
        while len(seen) < 7:
            event = await listener.next(5)
            assert event is not None
            seen.append((event.name, event.data["ID"] if event.name == "new" else event.data))
        assert ("deleted", {"IDs": [ids[0]]}) in seen
        assert ("deleted", {"IDs": [ids[1]]}) in seen
        listener.close()
    finally:
        store.close()


async def test_raw_is_read_in_slices() -> None:
    store = MessageStore()
    try:
        raw = raw_message(1, body="x" * 1_000_000)
        summary = await store.add(raw, ["bob@example.com"], {})
        location = await store.raw_location(summary["ID"])
        assert location is not None
        seq, size = location
        assert size == len(raw)
        pieces = [await store.raw_slice(seq, offset, 300_000) for offset in range(0, size, 300_000)]
        assert [len(piece) for piece in pieces[:-1]] == [300_000] * (len(pieces) - 1)
        assert b"".join(pieces) == raw
        assert await store.raw_location("unknown") is None
    finally:
        store.close()


async def test_count_matches_whole_recipients() -> None:
    store = MessageStore()
    try:
        await store.add(raw_message(1), ["ann@example.com"], {})
        await store.add(raw_message(2), ["Joann@example.com", "bob@example.com"], {})
        assert await store.count() == 2
        assert await store.count("ANN@example.com") == 1
        assert await store.count("joann@example.com") == 1
        assert await store.count("nobody@example.com") == 0
    finally:
        store.close()


async def test_closed_store_wakes_its_listeners() -> None:
    store = MessageStore()
    listener = store.events.subscribe()
    await asyncio.to_thread(store.close)
    event = await listener.next(5)
    assert event is not None
    assert event.name == "closed"
    store.close()  # twice is harmless


@pytest.mark.parametrize(
    ("query", "condition", "parameters"),
    [
        ("from:ann", "instr(search_from, ?) > 0", ["ann"]),
        ("To:Bob@Example.com", "instr(search_to, ?) > 0", ["bob@example.com"]),
        ('subject:"two words"', "instr(search_subject, ?) > 0", ["two words"]),
        ("-hello", "NOT (instr(search_all, ?) > 0)", ["hello"]),
        ("message-id:<Abc@X.example>", "instr(search_message_id, ?) > 0", ["abc@x.example"]),
        ("!Message-ID:abc", "NOT (instr(search_message_id, ?) > 0)", ["abc"]),
        ("is:unread has:attachment", "read = 0 AND attachments > 0", []),
        ("tag:x", "instr(search_all, ?) > 0", ["tag:x"]),
        ("'; DROP TABLE messages; --", "instr(search_all, ?) > 0", ["';"]),
    ],
)
def test_search_terms(query: str, condition: str, parameters: list[str]) -> None:
    where, values = compile_query(query)
    assert where.startswith(condition)
    assert values[: len(parameters)] == parameters


@pytest.mark.parametrize("query", ["", "   "])
def test_empty_searches_are_refused(query: str) -> None:
    with pytest.raises(SearchError):
        compile_query(query)


def test_max_messages_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_messages"):
        MessageStore(max_messages=0)


def test_an_inbox_never_closed_leaves_no_database_to_the_collector() -> None:
    """Regression (CI on Python 3.13): an Inbox used as a handler and dropped without
    close() left its SQLite connection to the garbage collector, which warns."""
    import gc
    import warnings

    from smtpwire.server.inbox import Inbox

    inbox = Inbox()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        del inbox
        gc.collect()
