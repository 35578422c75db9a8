"""Test scaffolding for the server: a protocol served from a background thread on a
free loopback port, and a raw-socket client that reads whole replies.

Deliberately independent of smtpwire.server.controller, so protocol tests do not
depend on the controller being right.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from smtpwire.common.replies import ReplyParser, SMTPReply

WAIT = 10.0  # seconds: bound on every wait in these helpers


class ServerThread:
    """Runs ``loop.create_server(factory, host, 0)`` in its own loop and thread."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], host: str = "127.0.0.1") -> None:
        self.factory = factory
        self.host = host
        self.port = 0
        self.protocols: list[Any] = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def _make_protocol(self) -> asyncio.Protocol:
        protocol = self.factory()
        self.protocols.append(protocol)
        return protocol

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            self.loop.create_server(self._make_protocol, self.host, 0), self.loop
        )
        self._server = future.result(WAIT)
        self.port = self._server.sockets[0].getsockname()[1]

    def call(self, function: Callable[[], Any]) -> Any:
        """Run ``function`` in the server's loop and return its result."""

        async def run() -> Any:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(WAIT)

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for protocol in self.protocols:
                if protocol.transport is not None:
                    protocol.transport.abort()
            tasks = [
                protocol._handler_coroutine
                for protocol in self.protocols
                if protocol._handler_coroutine is not None
            ]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(WAIT)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(WAIT)
            self.loop.close()

    def tasks_pending(self) -> int:
        """Connection tasks not yet finished (a leak if non-zero after clients left)."""
        return int(
            self.call(
                lambda: sum(
                    1
                    for protocol in self.protocols
                    if protocol._handler_coroutine is not None
                    and not protocol._handler_coroutine.done()
                )
            )
        )


@contextmanager
def serving(
    factory: Callable[[], asyncio.Protocol], host: str = "127.0.0.1"
) -> Iterator[ServerThread]:
    server = ServerThread(factory, host)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class RawClient:
    """A client that sends exact bytes and reads complete (multi-line) replies."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=WAIT)
        self.parser = ReplyParser()
        self._replies: list[SMTPReply] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, line: str | bytes) -> SMTPReply:
        """Send one command line (CRLF added) and read its reply."""
        raw = line.encode() if isinstance(line, str) else line
        self.send(raw + b"\r\n")
        return self.reply()

    def reply(self) -> SMTPReply:
        while not self._replies:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self._replies.extend(self.parser.feed(data))
        return self._replies.pop(0)

    def replies(self, count: int) -> list[SMTPReply]:
        return [self.reply() for _ in range(count)]

    def closed_by_server(self) -> bool:
        """True when the server has closed (EOF) with nothing more to read."""
        if self._replies:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        if data:
            self._replies.extend(self.parser.feed(data))
            return False
        return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Delivered:
    mail_from: str | None
    rcpt_tos: tuple[str, ...]
    content: bytes


class Recorder:
    """A handler that keeps every envelope handed to handle_DATA, and its peer."""

    def __init__(self) -> None:
        self.messages: list[Delivered] = []
        self.peers: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        assert isinstance(envelope.original_content, bytes)
        self.messages.append(
            Delivered(envelope.mail_from, tuple(envelope.rcpt_tos), envelope.original_content)
        )
        self.peers.append(session.peer)
        return "250 OK"


def text(reply: SMTPReply) -> str:
    """A one-line reply as it was sent: ``"250 OK"``."""
    assert len(reply.lines) == 1, reply
    return f"{reply.code} {reply.lines[0]}"


def read_until_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (each read bounded by the
    socket's timeout, the number of reads by a cap)."""
    received = bytearray()
    for _ in range(1_000_000):
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        received += data
    else:
        raise AssertionError("the server never closed the connection")
    return bytes(received)


def greeted(port: int, greeting: str = "EHLO client.example") -> RawClient:
    client = RawClient(port)
    assert client.reply().code == 220
    assert client.command(greeting).code == 250
    return client


def replies_until_close(client: RawClient) -> list[str]:
    """Every reply until the server closes the connection (each read bounded)."""
    replies: list[str] = []
    for _ in range(10_000):
        try:
            replies.append(text(client.reply()))
        except ConnectionError:
            return replies
    raise AssertionError("the server never closed the connection")


class EnvelopeKeeper:
    """A handler keeping every envelope handed to handle_DATA, whole (DSN and BODY
    fields included)."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 OK"

    @property
    def contents(self) -> list[bytes | None]:
        return [envelope.original_content for envelope in self.envelopes]

    @property
    def senders(self) -> list[str | None]:
        return [envelope.mail_from for envelope in self.envelopes]
