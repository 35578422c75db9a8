"""Scaffolding for the cross-tests: smtpwire.client against smtpwire.server over real
loopback sockets (the fixtures that use it are in conftest.py).

Servers run in a :class:`Controller` thread, so the client under test has the test's
own event loop to itself.  Everything a test waits for is an event (a delivery, a
connection ending, a handler reaching a gate), and every wait is bounded by
:data:`WAIT`: nothing here sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme

import smtpwire.client as aiosmtplib
from smtpwire.server.controller import Controller
from smtpwire.server.lmtp import LMTP
from smtpwire.server.smtp import SMTP

SERVER_NAME = "mail.test"  # the server's name in its greeting
CLIENT_NAME = "client.test"
CLIENT_IDENTITY = "client@example.org"  # the subject of the client certificate
WAIT = 10.0  # seconds: the bound on every wait in these tests


# --- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """Everything TLS, issued once per session; contexts are made fresh per use (an
    ``SSLContext`` is mutable)."""

    ca: trustme.CA
    server: trustme.LeafCert  # localhost, 127.0.0.1, ::1
    wrong_name: trustme.LeafCert  # valid, for another host
    expired: trustme.LeafCert  # the loopback names, expired yesterday
    untrusted: trustme.LeafCert  # the loopback names, from a CA nobody trusts
    client: trustme.LeafCert  # a client certificate from the trusted CA
    ca_bundle: Path  # the trusted CA as a PEM file, for cert_bundle=
    client_cert_file: Path
    client_key_file: Path
    rogue_client_cert_file: Path  # a client certificate from the untrusted CA
    rogue_client_key_file: Path

    def server_context(
        self, leaf: trustme.LeafCert | None = None, *, require_client_cert: bool = False
    ) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        (leaf or self.server).configure_cert(context)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Trusts the test CA and checks host names, as an application's would."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(context)
        return context


def make_certificates(directory: Path) -> Certificates:
    """A fresh CA and its certificates; the PEM files that the client's file-path
    arguments need are written to ``directory`` (a temporary one, never the repo)."""
    ca = trustme.CA()
    rogue_ca = trustme.CA()
    loopback = ("localhost", "127.0.0.1", "::1")
    now = datetime.datetime.now(datetime.timezone.utc)
    client = ca.issue_cert(CLIENT_IDENTITY)
    rogue_client = rogue_ca.issue_cert(CLIENT_IDENTITY)
    paths = {
        name: directory / f"{name}.pem"
        for name in ("ca", "client-cert", "client-key", "rogue-cert", "rogue-key")
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client.cert_chain_pems[0].write_to_path(str(paths["client-cert"]))
    client.private_key_pem.write_to_path(str(paths["client-key"]))
    rogue_client.cert_chain_pems[0].write_to_path(str(paths["rogue-cert"]))
    rogue_client.private_key_pem.write_to_path(str(paths["rogue-key"]))
    return Certificates(
        ca=ca,
        server=ca.issue_cert(*loopback),
        wrong_name=ca.issue_cert("elsewhere.example"),
        expired=ca.issue_cert(
            *loopback,
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        ),
        untrusted=rogue_ca.issue_cert(*loopback),
        client=client,
        ca_bundle=paths["ca"],
        client_cert_file=paths["client-cert"],
        client_key_file=paths["client-key"],
        rogue_client_cert_file=paths["rogue-cert"],
        rogue_client_key_file=paths["rogue-key"],
    )


def alt_names(peercert: Any) -> list[tuple[str, str]]:
    """A certificate's subjectAltName entries; IP addresses in canonical form."""
    assert peercert is not None
    names = []
    for kind, value in peercert["subjectAltName"]:
        canonical = str(ipaddress.ip_address(value.strip())) if kind == "IP Address" else value
        names.append((kind, canonical))
    return names


# --- what the server received -------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One message as the handler saw it, with the facts of its session."""

    mail_from: str | None
    rcpt_tos: tuple[str, ...]
    content: bytes
    mail_options: tuple[str, ...]
    smtp_utf8: bool
    body_type: str | None
    over_tls: bool
    peercert: dict[str, Any] | None
    authenticated: bool | None
    auth_data: Any
    peer: Any


class Inbox:
    """A handler recording every delivered message, safe to read from the test's
    thread while the server's thread writes.

    A message is recorded before ``handle_DATA`` returns, so once a client has its
    ``250`` the message is here; :meth:`arrived` is for the cases where the client
    never learns the outcome (it timed out, was cancelled, or the server stopped).
    ``keep_content=False`` keeps only each message's size and SHA-256.
    """

    def __init__(self, *, keep_content: bool = True) -> None:
        self._lock = threading.Condition()
        self._deliveries: list[Delivery] = []
        self._digests: list[tuple[int, str]] = []
        self.keep_content = keep_content

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> Any:
        self.record(session, envelope)
        return "250 OK"

    def record(self, session: Any, envelope: Any) -> None:
        content = envelope.original_content
        assert isinstance(content, bytes)
        tls = session.ssl
        delivery = Delivery(
            mail_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            content=content if self.keep_content else b"",
            mail_options=tuple(envelope.mail_options),
            smtp_utf8=bool(envelope.smtp_utf8),
            body_type=envelope.body_type,
            over_tls=tls is not None,
            peercert=None if tls is None else tls.get("peercert"),
            authenticated=session.authenticated,
            auth_data=session.auth_data,
            peer=session.peer,
        )
        digest = (len(content), hashlib.sha256(content).hexdigest())
        with self._lock:
            self._deliveries.append(delivery)
            self._digests.append(digest)
            self._lock.notify_all()

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    @property
    def contents(self) -> list[bytes]:
        return [delivery.content for delivery in self.deliveries]

    @property
    def digests(self) -> list[tuple[int, str]]:
        """(size, SHA-256 hex) of each message, in arrival order."""
        with self._lock:
            return list(self._digests)

    def wait_for(self, count: int, timeout: float = WAIT) -> list[Delivery]:
        """Block until at least ``count`` messages arrived (call it in a thread)."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._deliveries) >= count, timeout):
                raise AssertionError(
                    f"{len(self._deliveries)} of {count} expected messages arrived in {timeout} s"
                )
            return list(self._deliveries)

    async def arrived(self, count: int) -> list[Delivery]:
        return await asyncio.to_thread(self.wait_for, count)


class Gate:
    """What a server-side hook awaits until the test opens it: a stalled server with
    no sleep.  Its event is made lazily in the server's loop; :meth:`open` works
    from any thread, even once that loop is gone."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opened = False
        self.reached = threading.Event()  # a hook is waiting at the gate

    async def wait(self) -> None:
        with self._guard:
            if self._event is None:
                self._loop = asyncio.get_running_loop()
                self._event = asyncio.Event()
                if self._opened:
                    self._event.set()
            event = self._event
        self.reached.set()
        await asyncio.wait_for(event.wait(), WAIT)

    def open(self) -> None:
        with self._guard:
            self._opened = True
            if self._loop is not None and self._event is not None:
                with contextlib.suppress(RuntimeError):  # that loop is closed already
                    self._loop.call_soon_threadsafe(self._event.set)

    async def until_reached(self) -> None:
        reached = await asyncio.to_thread(self.reached.wait, WAIT)
        assert reached, "no hook reached the gate"


# --- servers --------------------------------------------------------------------------------------


class ConnectionTracker:
    """Counts the server's connections as they open and end, so that a test can
    wait for the server to have closed one, and check the most open at once."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self.opened = 0
        self.closed = 0
        self.peak = 0
        self.wire: list[bytes] = []  # what a WireTap server received, chunk by chunk
        self.sessions: list[SMTP] = []  # only touched in the server's loop

    def connection_made(self) -> None:
        with self._lock:
            self.opened += 1
            self.peak = max(self.peak, self.opened - self.closed)

    def received(self, data: bytes) -> None:
        with self._lock:
            if len(self.wire) < 10_000:
                self.wire.append(bytes(data[:4096]))
            self._lock.notify_all()

    def wait_for_wire(self, marker: bytes, timeout: float = WAIT) -> None:
        """Block until ``marker`` has arrived at a WireTap server."""
        with self._lock:
            if not self._lock.wait_for(lambda: marker in b"".join(self.wire), timeout):
                raise AssertionError(f"{marker!r} never reached the server")

    def connection_lost(self) -> None:
        with self._lock:
            self.closed += 1
            self._lock.notify_all()

    def wait_closed(self, count: int, timeout: float = WAIT) -> None:
        with self._lock:
            if not self._lock.wait_for(lambda: self.closed >= count, timeout):
                raise AssertionError(f"only {self.closed} of {count} connections ended")


class TrackedSMTP(SMTP):
    """The server's SMTP, reporting connections to its controller's tracker."""

    tracker: ConnectionTracker

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tracker.connection_made()
        self.tracker.sessions.append(self)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.tracker.connection_lost()


class TrackedLMTP(LMTP, TrackedSMTP):
    pass


class WireTap(TrackedSMTP):
    """Keeps the start of every chunk received (after TLS: the plaintext), to tell
    a pipelined batch from commands sent one by one."""

    def data_received(self, data: bytes) -> None:
        self.tracker.received(data)
        super().data_received(data)


class Server(Controller):
    """A controller serving ``protocol`` (an SMTP subclass) on a loopback address,
    port 0, with :class:`ConnectionTracker` bookkeeping."""

    def __init__(
        self, handler: Any, *, protocol: type[SMTP] = TrackedSMTP, host: str, **kwargs: Any
    ) -> None:
        kwargs.setdefault("server_hostname", SERVER_NAME)
        super().__init__(handler, hostname=host, port=0, **kwargs)
        self.protocol = protocol
        self.tracker = ConnectionTracker()

    def factory(self) -> SMTP:
        protocol = self.protocol(self.handler, **self.SMTP_kwargs)
        protocol.tracker = self.tracker  # type: ignore[attr-defined]
        return protocol

    async def closed_connections(self, count: int) -> None:
        """Wait until ``count`` connections have ended on the server, and their last
        bytes (a reply, the FIN) had the chance to reach this loop.

        ``connection_lost`` runs just before the server's socket is closed: one more
        round through the server's loop makes sure it is.  Both waits run in a
        thread, so this loop sits in ``select`` meanwhile and reads what came.
        """
        await asyncio.to_thread(self.tracker.wait_closed, count)
        await asyncio.to_thread(self.call_in_loop, lambda: None)

    async def all_closed(self) -> None:
        """Wait until every connection the server has seen has ended.

        A test over TLS ends with this: closing a TLS connection takes an exchange of
        close_notify alerts with the server's thread, and a client socket still
        mid-shutdown when the test's loop closes would be reported as leaked."""
        await self.closed_connections(self.tracker.opened)

    async def sessions_done(self) -> None:
        """Wait until every session task on the server has finished: after that no
        handler can still deliver anything for those connections."""

        async def finish() -> None:
            tasks = [
                session._handler_coroutine
                for session in self.tracker.sessions
                if session._handler_coroutine is not None
            ]
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=WAIT)
                assert not pending, f"{len(pending)} session(s) still running"

        def run() -> None:
            asyncio.run_coroutine_threadsafe(finish(), self.loop).result(WAIT + 1)

        await asyncio.to_thread(run)

    async def wire_holds(self, marker: bytes) -> None:
        await asyncio.to_thread(self.tracker.wait_for_wire, marker)

    def call_in_loop(self, function: Callable[[], Any]) -> Any:
        """``function()`` run in the server's loop (its result, from any thread)."""

        async def run() -> Any:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(WAIT)


StartServer = Callable[..., Server]


def make_client(server: Server, **kwargs: Any) -> aiosmtplib.SMTP:
    kwargs.setdefault("local_hostname", CLIENT_NAME)
    kwargs.setdefault("timeout", WAIT)
    return aiosmtplib.SMTP(hostname=server.hostname, port=server.port, **kwargs)


# --- messages -------------------------------------------------------------------------------------


def numbered_message(number: int, *, size: int = 0) -> bytes:
    """A small RFC 5322 message with a unique Message-ID, padded to about ``size``."""
    head = (
        "From: sender@example.org\r\n"
        "To: rcpt@example.org\r\n"
        f"Subject: message {number}\r\n"
        f"Message-ID: <{number}.integration@example.org>\r\n"
        "\r\n"
        f"body of message {number}\r\n"
    ).encode()
    filler = b"0123456789abcdef" * 4 + b"\r\n"
    if size > len(head):
        head += filler * ((size - len(head)) // len(filler) + 1)
    return head


def message_number(content: bytes) -> int:
    """The number in a :func:`numbered_message`'s Message-ID."""
    start = content.index(b"Message-ID: <") + len(b"Message-ID: <")
    return int(content[start : content.index(b".", start)])
