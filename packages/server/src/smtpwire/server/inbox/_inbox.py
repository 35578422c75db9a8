"""The inbox as the SMTP server sees it: a handler that stores every message it
accepts, with the facts of the session that delivered it, and an observer that
records each session's commands and replies for the transcript."""

from __future__ import annotations

import collections
import inspect
import logging
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from smtpwire.server.observe import Observer
from smtpwire.server.session import Envelope, LoginPassword, Session

from ._store import MessageStore

if TYPE_CHECKING:
    from ._web import WebInbox

__all__ = ["Inbox", "InboxObserver", "StoringHandler"]

log = logging.getLogger("mail.log")

#: Lines of a session kept before its first MAIL (greeting, EHLO, STARTTLS, AUTH).
OPENING_LINES: Final = 50
#: Lines kept per message (the oldest go first on a session sending many commands).
MESSAGE_LINES: Final = 500


class _Transcript:
    def __init__(self) -> None:
        self.opening: list[str] = []
        self.current: collections.deque[str] = collections.deque(maxlen=MESSAGE_LINES)
        self.mail_seen = False

    def add(self, line: str) -> None:
        if not self.mail_seen and len(self.opening) < OPENING_LINES:
            self.opening.append(line)
        else:
            self.current.append(line)

    def take(self) -> list[str]:
        """The lines of the message just completed: the session's opening, then
        what came since the previous message."""
        lines = [*self.opening, *self.current]
        self.current.clear()
        return lines


class InboxObserver(Observer):
    """Keeps each session's transcript (AUTH lines arrive masked: the server never
    reports credentials to observers)."""

    def __init__(self) -> None:
        self._sessions: weakref.WeakKeyDictionary[Any, _Transcript] = weakref.WeakKeyDictionary()

    def _transcript(self, server: Any) -> _Transcript:
        found = self._sessions.get(server)
        if found is None:
            found = self._sessions[server] = _Transcript()
        return found

    def command_received(self, server: Any, line: bytes) -> None:
        transcript = self._transcript(server)
        if line[:4].upper() == b"MAIL":
            transcript.mail_seen = True
        transcript.add("C: " + line.rstrip(b"\r").decode("utf-8", "replace"))

    def reply_sent(self, server: Any, reply: bytes) -> None:
        self._transcript(server).add("S: " + reply.decode("utf-8", "replace"))

    def intercept(self, server: Any, command: str, line: bytes) -> None:
        if command == "MESSAGE":
            size = len(server.envelope.original_content or b"")
            self._transcript(server).add(f"C: <message, {size} octets>")

    def take(self, server: Any) -> list[str]:
        found = self._sessions.get(server)
        return [] if found is None else found.take()


class Inbox:
    """A handler that keeps every message in a :class:`MessageStore`, and the
    web inbox over it.

    ::

        inbox = Inbox()                      # or Inbox("mail.sqlite", max_messages=1000)
        controller = Controller(inbox, observer=inbox.observer, hostname="127.0.0.1", port=0)
        controller.start()
        async with inbox.serve_web("127.0.0.1", 0) as web:
            print(web.url)                   # the UI and the mailpit-compatible API

    Give ``observer=inbox.observer`` to the server for the session transcripts;
    without it the rest of the session facts are still kept.  A message is stored
    before the server answers 250 to it.  :meth:`close` when done.
    """

    def __init__(self, path: str | Path | None = None, *, max_messages: int | None = None) -> None:
        self.store = MessageStore(path, max_messages=max_messages)
        self.observer = InboxObserver()

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        await self.keep(server, session, envelope)
        return "250 Message accepted for delivery"

    async def keep(self, server: Any, session: Session, envelope: Envelope) -> dict[str, Any]:
        """Store the message of ``envelope``; its summary."""
        raw = envelope.original_content
        if raw is None:
            content = envelope.content
            raw = (
                content.encode("utf-8", "surrogateescape")
                if isinstance(content, str)
                else bytes(content or b"")
            )
        login = auth_login(session)
        facts = session_facts(session, envelope, login, self.observer.take(server))
        summary = await self.store.add(raw, envelope.rcpt_tos, facts, login)
        log.info(
            "Inbox: stored %s from %s to %s", summary["ID"], envelope.mail_from, envelope.rcpt_tos
        )
        return summary

    @asynccontextmanager
    async def serve_web(
        self, host: str = "127.0.0.1", port: int = 8026, *, auth: tuple[str, str] | None = None
    ) -> AsyncIterator[WebInbox]:
        """The web inbox and its API on ``host:port`` (port 0: a free one, see
        ``.port``), in the running event loop, until the block ends.  Needs
        aiohttp (``pip install 'smtpwire-server[web]'``)."""
        from ._web import WebInbox  # noqa: PLC0415 - aiohttp, an optional extra

        web = WebInbox(self.store, host, port, auth=auth)
        await web.start()
        try:
            yield web
        finally:
            await web.stop()

    def close(self) -> None:
        self.store.close()

    @classmethod
    def from_cli(cls, parser: Any, *args: str) -> Inbox:
        """``-c smtpwire.server.inbox.Inbox [PATH]``: an inbox, in memory or in PATH."""
        if len(args) > 1:
            parser.error("Inbox usage: [PATH]")
        return cls(args[0] if args else None)


class StoringHandler:
    """Another handler with the inbox beside it (``--web`` with ``-c``): every hook
    is the handler's own, and a message it accepts (a 2xx reply) is also stored.

    The hooks are found through ``__getattr__`` and ``__dir__``, which the server's
    hook discovery looks at for each instance."""

    def __init__(self, inbox: Inbox, handler: Any) -> None:
        self.inbox = inbox
        self._handler = handler

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handler, name)

    def __dir__(self) -> list[str]:
        return sorted({*dir(self._handler), *object.__dir__(self), "handle_DATA"})

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        hook = getattr(self._handler, "handle_DATA", None)
        status: Any = "250 OK" if hook is None else hook(server, session, envelope)
        if inspect.isawaitable(status):
            status = await status
        if isinstance(status, str) and status.startswith("2"):
            await self.inbox.keep(server, session, envelope)
        return str(status)


def auth_login(session: Session) -> str | None:
    """The user name the client authenticated as, never its password."""
    data = session.auth_data
    login = data.login if isinstance(data, LoginPassword) else session.login_data
    if isinstance(login, bytes):
        return login.decode("utf-8", "replace")
    return login if isinstance(login, str) else None


def session_facts(
    session: Session, envelope: Envelope, login: str | None, transcript: Sequence[str]
) -> dict[str, Any]:
    ssl_object = (session.ssl or {}).get("ssl_object") if isinstance(session.ssl, dict) else None
    cipher = ssl_object.cipher() if ssl_object is not None else None
    peer = session.peer
    return {
        "Peer": list(peer) if isinstance(peer, tuple) else peer,
        "HELO": session.host_name,
        "ESMTP": bool(session.extended_smtp),
        "TLS": {
            "On": session.ssl is not None,
            "Version": ssl_object.version() if ssl_object is not None else None,
            "Cipher": cipher[0] if cipher else None,
        },
        "Authenticated": bool(session.authenticated),
        "AuthLogin": login,
        "MailFrom": envelope.mail_from,
        "RcptTo": list(envelope.rcpt_tos),
        "MailOptions": list(envelope.mail_options),
        "RcptOptions": list(envelope.rcpt_options),
        "Transcript": list(transcript),
    }
