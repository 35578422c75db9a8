"""Shared scaffolding for the client tests that run against smtpwire.server:
a recording handler, misbehaving server variants and a client factory."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import smtpwire.client as aiosmtplib
from smtpwire.server.smtp import SMTP as ServerSMTP
from support.server import ServerThread, serving

HOST = "testhost"
CLIENT_NAME = "client.test"
UTF8_ADDRESS = "jos\u00e9@ex\u00e4mple.com"
WAIT = 10.0


class RefusingHandler:
    """Refuses senders starting "refused", recipients starting "nobody", and messages
    holding ``REJECT-ME``; subclasses say what to keep of an accepted message
    (:meth:`record`) and how to answer it (:attr:`accepted`)."""

    accepted = "250 OK"
    name_the_refused_recipient = False

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("refused"):
            return "553 5.7.1 Sender refused"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("nobody"):
            suffix = f" {address}" if self.name_the_refused_recipient else ""
            return f"550 5.1.1 No such user{suffix}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if b"REJECT-ME" in envelope.original_content:
            return "554 5.6.0 Message refused"
        self.record(envelope)
        return self.accepted

    def record(self, envelope: Any) -> None:
        raise NotImplementedError


class Sink(RefusingHandler):
    """Keeps (sender, recipients, content) of every delivered message."""

    def __init__(self) -> None:
        self.messages: list[tuple[str | None, list[str], bytes]] = []

    def record(self, envelope: Any) -> None:
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )


class NoEhloServer(ServerSMTP):
    """An old server that knows only HELO."""

    async def smtp_EHLO(self, hostname: str | None) -> None:
        await self.push('500 Error: command "EHLO" not recognized')


class RefusingGreetingServer(ServerSMTP):
    """Says 554 instead of 220 and hangs up."""

    async def _open_session(self) -> bool:
        await self.push("554 5.3.2 No service today")
        return False


class SilentServer(ServerSMTP):
    """Accepts the connection and never greets."""

    async def _open_session(self) -> bool:
        await asyncio.Event().wait()
        return False


class StuckNoopServer(ServerSMTP):
    """Never answers NOOP."""

    async def smtp_NOOP(self, arg: str | None) -> None:
        await asyncio.Event().wait()


class ClosingNoticeServer(ServerSMTP):
    """Sets ``closed`` when a connection ends (to wait for that without sleeping)."""

    closed: threading.Event

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.closed.set()


@contextmanager
def smtp_server(
    handler: Any = None, cls: type[ServerSMTP] = ServerSMTP, **kwargs: Any
) -> Iterator[ServerThread]:
    kwargs.setdefault("hostname", HOST)
    handler = Sink() if handler is None else handler
    with serving(lambda: cls(handler, **kwargs)) as server:
        yield server


def make_client(server: ServerThread, **kwargs: Any) -> aiosmtplib.SMTP:
    kwargs.setdefault("local_hostname", CLIENT_NAME)
    kwargs.setdefault("timeout", WAIT)
    return aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, **kwargs)


def on_server(server: ServerThread, read: Callable[[Any], Any], index: int = 0) -> Any:
    """``read(protocol)`` for the server's ``index``-th connection, in its loop."""
    return server.call(lambda: read(server.protocols[index]))


def free_port() -> int:
    """A loopback port nothing listens on (bound, never listened, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
