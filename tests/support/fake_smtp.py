"""A scriptable fake SMTP server for client tests, running in the test's own loop.

Each test builds a :class:`FakeSMTPServer` with a script: ``on_line(connection,
line)`` returns the bytes to send for a received command line (``None`` stays
silent), ``on_message(connection, raw)`` the reply to a DATA section.  Scripts
can also send unprompted (:meth:`FakeConnection.send`), close or abort, stop
reading (to push back on a client's writes) and upgrade to TLS: a STARTTLS
answered with ``220`` is followed by ``loop.start_tls`` on the server side when
the server has a TLS context.  Every ``data_received`` chunk is recorded, so a
test can count writes and round trips and see the exact bytes on the wire.

Deliberately independent of smtpwire.server: client tests must not depend on
the server being right, and a hostile peer is easier to script by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import ssl
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import pytest
import trustme

from smtpwire.client import SMTP
from smtpwire.common.replies import ReplyParser, SMTPReply

__all__ = [
    "WAIT",
    "ClientInputSpy",
    "FakeConnection",
    "FakeSMTPServer",
    "TLSFiles",
    "assert_no_loop_errors",
    "client_for",
    "default_reply",
]

WAIT = 5.0  # seconds: bound on every wait in these helpers

LineHandler = Callable[["FakeConnection", bytes], bytes | None]
MessageHandler = Callable[["FakeConnection", bytes], bytes | None]


def default_reply(connection: FakeConnection, line: bytes) -> bytes | None:
    """A well-behaved server's answer to ``line`` (without its line ending)."""
    verb = line.split(b" ", 1)[0].upper()
    server = connection.server
    if verb == b"EHLO":
        keywords = list(server.extensions)
        if server.tls_context is not None and not connection.tls:
            keywords.append("STARTTLS")
        lines = ["fake.example Hello", *keywords]
        return b"".join(
            f"250{'-' if index < len(lines) - 1 else ' '}{text}\r\n".encode()
            for index, text in enumerate(lines)
        )
    if verb == b"HELO":
        return b"250 fake.example\r\n"
    if verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP", b"VRFY", b"EXPN"):
        return b"250 OK\r\n"
    if verb == b"DATA":
        return b"354 End data with <CR><LF>.<CR><LF>\r\n"
    if verb == b"HELP":
        return b"214 Read the RFC\r\n"
    if verb == b"STARTTLS":
        if server.tls_context is None or connection.tls:
            return b"454 TLS not available\r\n"
        return b"220 Ready to start TLS\r\n"
    if verb == b"QUIT":
        connection.close_after_reply = True
        return b"221 Bye\r\n"
    return b"500 Command unrecognized\r\n"


def default_message_reply(connection: FakeConnection, raw: bytes) -> bytes | None:
    return b"250 OK queued\r\n"


class FakeConnection(asyncio.Protocol):
    """One client connection: records what arrives, answers through the script."""

    def __init__(self, server: FakeSMTPServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.chunks: list[bytes] = []  # every data_received chunk, in order (after TLS: plaintext)
        self.lines: list[bytes] = []  # command lines, without their line ending
        self.messages: list[bytes] = []  # DATA sections as received, terminator included
        self.replies_sent: list[bytes] = []
        self.tls = False
        self.tls_error: BaseException | None = None
        self.in_data = False
        self.close_after_reply = False
        self.upgrading = False
        self.closed = asyncio.Event()
        self._buffer = bytearray()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not isinstance: uvloop's transports do not derive from asyncio's.
        self.transport = cast(asyncio.Transport, transport)
        self.server._connection_made(self)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(bytes(data))
        self._buffer += data
        self._process()
        self.server._notify()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        self.server._notify()

    # -- for scripts -----------------------------------------------------------------------

    @property
    def received(self) -> bytes:
        """Everything received so far, as one byte string."""
        return b"".join(self.chunks)

    def send(self, data: bytes) -> None:
        """Write ``data`` now (unprompted, or as a late reply)."""
        if self.transport is not None and not self.transport.is_closing():
            self.replies_sent.append(data)
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def pause_reading(self) -> None:
        """Stop reading: the client's writes back up once the socket buffers fill."""
        if self.transport is not None:
            self.transport.pause_reading()

    def default(self, line: bytes) -> bytes | None:
        return default_reply(self, line)

    # -- internals -------------------------------------------------------------------------

    def _process(self) -> None:
        while self._buffer and not self.upgrading:
            if self.in_data:
                if not self._take_message():
                    return
                continue
            end = self._buffer.find(b"\n")
            if end < 0:
                return
            raw = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            line = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
            self.lines.append(line)
            reply = self.server.on_line(self, line)
            if reply is not None and line.split(b" ", 1)[0].upper() == b"DATA":
                self.in_data = reply.startswith(b"354")
            upgrade = (
                reply is not None
                and line.upper() == b"STARTTLS"
                and reply.startswith(b"220")
                and self.server.tls_context is not None
                and self.server.auto_tls
                and not self.upgrading
            )
            self._answer(reply)
            if upgrade:
                self.start_tls()

    def _take_message(self) -> bool:
        if self._buffer.startswith(b".\r\n"):
            end = 3
        else:
            found = self._buffer.find(b"\r\n.\r\n")
            if found < 0:
                return False
            end = found + 5
        raw = bytes(self._buffer[:end])
        del self._buffer[:end]
        self.in_data = False
        self.messages.append(raw)
        self._answer(self.server.on_message(self, raw))
        return True

    def _answer(self, reply: bytes | None) -> None:
        if reply is not None:
            self.send(reply)
        if self.close_after_reply:
            self.close()

    def start_tls(self) -> None:
        """Upgrade now (server side); the handshake runs in a task the server awaits.

        Plaintext the client sent after STARTTLS is dropped; what arrives during the
        handshake (already decrypted) waits until the TLS transport is in place."""
        self.upgrading = True
        self._buffer.clear()
        self.server._tasks.append(asyncio.ensure_future(self._upgrade()))

    async def _upgrade(self) -> None:
        context = self.server.tls_context
        assert context is not None
        transport = self.transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        try:
            upgraded = await loop.start_tls(
                transport, self, context, server_side=True, ssl_handshake_timeout=WAIT
            )
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as error:
            self.tls_error = error
            transport.abort()
            self.server._notify()
            return
        assert upgraded is not None
        self.transport = upgraded
        self.tls = True
        self.upgrading = False
        self._process()
        self.server._notify()


class FakeSMTPServer:
    """``async with FakeSMTPServer(...) as server:`` listens on 127.0.0.1, a free port."""

    def __init__(
        self,
        *,
        greeting: bytes | None = b"220 fake.example ESMTP ready\r\n",
        on_line: LineHandler = default_reply,
        on_message: MessageHandler = default_message_reply,
        on_connect: Callable[[FakeConnection], None] | None = None,
        extensions: Iterable[str] = ("8BITMIME",),
        tls_context: ssl.SSLContext | None = None,
        auto_tls: bool = True,
    ) -> None:
        self.greeting = greeting
        self.on_line = on_line
        self.on_message = on_message
        self.on_connect = on_connect
        self.extensions = list(extensions)
        self.tls_context = tls_context
        self.auto_tls = auto_tls
        self.connections: list[FakeConnection] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Future[None]] = []
        self._activity = asyncio.Event()

    async def __aenter__(self) -> FakeSMTPServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: FakeConnection(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in self.connections:
            connection.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), WAIT)
        self._server = None

    @property
    def connection(self) -> FakeConnection:
        """The only (or latest) connection."""
        assert self.connections, "no client connected"
        return self.connections[-1]

    def _connection_made(self, connection: FakeConnection) -> None:
        self.connections.append(connection)
        if self.greeting is not None:
            connection.send(self.greeting)
        if self.on_connect is not None:
            self.on_connect(connection)
        self._notify()

    def _notify(self) -> None:
        self._activity.set()
        self._activity = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        """Wait (at most ``timeout``) until ``predicate()`` holds after some server event."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"condition not reached within {timeout} s")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._activity.wait(), remaining)

    async def wait_connected(self, count: int = 1) -> FakeConnection:
        await self.wait_until(lambda: len(self.connections) >= count)
        return self.connections[count - 1]


class TLSFiles:
    """A trustme CA and a certificate for 127.0.0.1, with contexts for both ends."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        self.certificate = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.certificate.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(context)
        return context


def client_for(server: FakeSMTPServer, **options: Any) -> SMTP:
    """A client for ``server``: no STARTTLS on connect and a fixed EHLO name unless
    told otherwise (no getfqdn lookup), and a bounded default timeout."""
    options.setdefault("hostname", "127.0.0.1")
    options.setdefault("port", server.port)
    options.setdefault("local_hostname", "client.example")
    options.setdefault("start_tls", False)
    options.setdefault("timeout", WAIT)
    return SMTP(**options)


class _SpyingParser:
    """Hands the client's parser every chunk the client receives, telling the spy first."""

    def __init__(self, parser: ReplyParser, spy: ClientInputSpy) -> None:
        self._parser = parser
        self._spy = spy

    def feed(self, data: bytes) -> list[SMTPReply]:
        self._spy.saw(bytes(data))
        return self._parser.feed(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


class ClientInputSpy:
    """Watches what a connected client's protocol receives (a synchronisation point:
    "the client has seen these bytes"), without changing what it does with them."""

    def __init__(self, client: SMTP) -> None:
        protocol = client.protocol
        assert protocol is not None, "client not connected"
        self.received = bytearray()
        self._changed = asyncio.Event()
        # The protocol's reply parser is wrapped, not its data_received: uvloop looks
        # the protocol's methods up once, when the connection is made.
        protocol._parser = _SpyingParser(protocol._parser, self)  # type: ignore[assignment]

    def saw(self, data: bytes) -> None:
        self.received += data
        self._changed.set()

    async def wait_for(self, needle: bytes, timeout: float = WAIT) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while needle not in self.received:
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"client never received {needle!r}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


def assert_no_loop_errors(caplog: pytest.LogCaptureFixture) -> None:
    """No "Task/Future exception was never retrieved" (or other loop error) logged."""
    gc.collect()
    errors = [
        record.getMessage()
        for record in caplog.records
        if record.name == "asyncio" and record.levelno >= logging.ERROR
    ]
    assert errors == []
