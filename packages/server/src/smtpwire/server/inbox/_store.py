"""The message store: the database behind one worker thread, with an async face
for the event loops (the SMTP server's, the web server's) and a plain one for
other threads (a test reading the inbox).

One thread owns the SQLite connection and runs every call in turn, so calls
never overlap, need no lock of their own, and none of them runs inside an
event loop: a loop only awaits the thread's answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final, TypeVar

from ._database import Database, StoreError, created_text
from ._events import EventHub
from ._parse import Part, extract_part, parse
from ._search import compile_query

__all__ = ["MessageStore", "StoreError"]

log = logging.getLogger("mail.log")

#: The raw source is read (and sent) in slices of this size.
RAW_SLICE: Final = 256 * 1024

T = TypeVar("T")


class MessageStore:
    """Messages in SQLite: in memory by default, or in the database file ``path``
    (made if absent).  With ``max_messages``, the oldest are dropped as new ones
    arrive.  :meth:`close` when done (the worker thread ends)."""

    def __init__(self, path: str | Path | None = None, *, max_messages: int | None = None) -> None:
        if max_messages is not None and max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self.path = None if path is None else Path(path)
        self.events = EventHub()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="smtpwire-inbox", initializer=_leave_signals
        )
        self._db: Database | None = None
        location = ":memory:" if path is None else str(path)
        # Opened now, in the worker thread, so a bad path fails here and not on
        # the first message.
        try:
            self._db = self._executor.submit(Database, location, max_messages).result()
        except BaseException:
            self._executor.shutdown(wait=True)
            raise

    # -- plumbing ---------------------------------------------------------------------

    def _database(self) -> Database:
        if self._db is None:
            raise StoreError("the store is closed")
        return self._db

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(database, *args)`` in the worker thread, awaited."""
        return await asyncio.wrap_future(self._executor.submit(self._call, function, *args))

    def run_sync(self, function: Callable[..., T], *args: Any) -> T:
        """The same, for a thread that is not running an event loop."""
        return self._executor.submit(self._call, function, *args).result()

    def _call(self, function: Callable[..., T], *args: Any) -> T:
        return function(self._database(), *args)

    def close(self) -> None:
        if self._db is None:
            return
        self.events.close()
        db, self._db = self._db, None
        self._executor.submit(db.close).result()
        self._executor.shutdown(wait=True)

    # -- what the inbox and the API ask ------------------------------------------------

    async def add(
        self,
        raw: bytes,
        rcpt_tos: Sequence[str],
        session: dict[str, Any],
        username: str | None = None,
    ) -> dict[str, Any]:
        """Store a message and announce it; its summary (with ``ID``)."""
        summary, pruned = await self.run(_add, raw, list(rcpt_tos), session, username)
        if pruned:
            self.events.publish("deleted", {"IDs": pruned})
        self.events.publish("new", summary)
        return summary

    async def listing(
        self, start: int, limit: int, query: str | None = None
    ) -> tuple[list[dict[str, Any]], int, int, int, int]:
        """Summaries newest first; matched, matched unread, total, total unread."""
        where, parameters = ("", []) if query is None else compile_query(query)
        return await self.run(_listing, start, limit, where, parameters)

    async def delete(self, ids: Sequence[str] | None = None, query: str | None = None) -> list[str]:
        where, parameters = ("", []) if query is None else compile_query(query)
        deleted = await self.run(Database.delete, ids, where, parameters)
        if deleted or (ids is None and query is None):
            self.events.publish(
                "deleted", {"IDs": None if ids is None and query is None else deleted}
            )
        return deleted

    async def set_read(
        self, ids: Sequence[str] | None, read: bool, query: str | None = None
    ) -> list[str]:
        where, parameters = ("", []) if query is None else compile_query(query)
        changed = await self.run(Database.set_read, ids, read, where, parameters)
        if changed:
            self.events.publish("read" if read else "unread", {"IDs": changed})
        return changed

    async def resolve(self, message_id: str) -> str | None:
        return await self.run(Database.resolve, message_id)

    async def detail(self, message_id: str, *, mark_read: bool = True) -> dict[str, Any] | None:
        found = await self.run(Database.detail, message_id, mark_read)
        if found is not None and mark_read:
            self.events.publish("read", {"IDs": [message_id]})
        return found

    async def column(self, message_id: str, name: str) -> Any:
        return await self.run(Database.column, message_id, name)

    async def raw_location(self, message_id: str) -> tuple[int, int] | None:
        return await self.run(Database.raw_location, message_id)

    async def raw_slice(self, seq: int, offset: int, size: int = RAW_SLICE) -> bytes:
        return await self.run(Database.raw_slice, seq, offset, size)

    async def part(self, message_id: str, part_id: str) -> Part | None:
        return await self.run(_part, message_id, part_id)

    async def count(self, to: str | None = None) -> int:
        return await self.run(Database.count, to)

    def size_in_bytes(self) -> int:
        return self.run_sync(Database.size_in_bytes)


# -- run in the worker thread ------------------------------------------------------------


def _leave_signals() -> None:
    """Block SIGINT and SIGTERM in the store's thread, so that the kernel hands
    them to the main thread: uvloop misses a signal another thread receives, and
    the server would not stop on Ctrl-C."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def _add(
    db: Database, raw: bytes, rcpt_tos: list[str], session: dict[str, Any], username: str | None
) -> tuple[dict[str, Any], list[str]]:
    received = datetime.now(timezone.utc)
    session = {**session, "Received": created_text(received)}
    parsed = parse(raw, rcpt_tos, username, received)
    return db.add(raw, parsed, rcpt_tos, session)


def _listing(
    db: Database, start: int, limit: int, where: str, parameters: list[str]
) -> tuple[list[dict[str, Any]], int, int, int, int]:
    summaries, matched, matched_unread = db.listing(start, limit, where, parameters)
    total, unread = db.stats() if where else (matched, matched_unread)
    return summaries, matched, matched_unread, total, unread


def _part(db: Database, message_id: str, part_id: str) -> Part | None:
    location = db.raw_location(message_id)
    if location is None:
        return None
    # A part is found by parsing the whole message: it is read whole, once.
    raw = db.raw_slice(location[0], 0, location[1])
    return extract_part(raw, part_id)
