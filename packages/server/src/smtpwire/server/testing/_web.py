"""The test server's inbox over HTTP (``SMTPTestServer(web=True)``), for end-to-end
tests whose sender, or whose checks, run in another process: the web inbox of
:mod:`smtpwire.server.inbox` (mailpit's API, smtpwire's own endpoints, the UI) in the
server's own event loop, with the server's fault rules behind
``/api/smtpwire/faults``.

Each accepted message is kept twice: in the Python inbox (``server.inbox``) and in
an in-memory SQLite store that the HTTP side reads.  aiohttp is imported only when
a server asks for this (this module is imported only then), so the testing package
works without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from smtpwire.server.inbox._database import Database
from smtpwire.server.inbox._inbox import auth_login, session_facts
from smtpwire.server.inbox._store import MessageStore
from smtpwire.server.session import Envelope, Session

from ._faults import FaultRules

if TYPE_CHECKING:
    from smtpwire.server.inbox._web import WebInbox

__all__ = ["START_TIMEOUT", "TestWebInbox"]

#: How long starting or stopping the HTTP side may take in the server's loop.
START_TIMEOUT: Final = 15.0


class TestWebInbox:
    """The HTTP side of one test server: a store made when the server starts (so
    no message accepted from the first connection on is missed), a web server
    started in the SMTP server's loop once it runs, both ended with the server."""

    __test__ = False

    def __init__(self, host: str, faults: FaultRules) -> None:
        self.store = MessageStore()  # in memory: gone with the server
        self._host = host
        self._faults = faults
        self._web: WebInbox | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str | None:
        return None if self._web is None else self._web.url

    def serve(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start serving HTTP in ``loop`` (the SMTP server's, running in its thread)
        on a free port of the server's host."""
        from smtpwire.server.inbox._api_faults import FAULTS  # noqa: PLC0415 - aiohttp
        from smtpwire.server.inbox._web import WebInbox  # noqa: PLC0415 - aiohttp

        web = WebInbox(self.store, self._host, 0)
        web.app[FAULTS] = self._faults  # before start: the app is frozen then
        asyncio.run_coroutine_threadsafe(web.start(), loop).result(START_TIMEOUT)
        self._web, self._loop = web, loop

    async def keep(self, session: Session, envelope: Envelope, transcript: Sequence[str]) -> None:
        """Store an accepted message, with the facts of its session, as the
        command line's web inbox does."""
        login = auth_login(session)
        facts = session_facts(session, envelope, login, transcript)
        await self.store.add(envelope.original_content or b"", envelope.rcpt_tos, facts, login)

    def clear(self) -> None:
        """Delete every stored message (between two tests), from any thread: the
        store's own thread does it, and the UI hears of it as of any delete."""
        deleted = self.store.run_sync(Database.delete, None)
        if deleted:
            self.store.events.publish("deleted", {"IDs": None})

    def stop_serving(self) -> None:
        """Stop the web server (in the SMTP server's loop, while that still runs):
        open waits and event streams end first."""
        web, loop = self._web, self._loop
        self._web = self._loop = None
        if web is not None and loop is not None:
            asyncio.run_coroutine_threadsafe(web.stop(), loop).result(START_TIMEOUT)

    def close(self) -> None:
        """Close the store (after the SMTP server stopped: nothing adds to it)."""
        self.store.close()
