"""Test doubles for the server engine's contract tests: a transport that records
what the protocol does to it (for driving a protocol by hand, aiosmtpd's own
test style), a TLS client over ``ssl.MemoryBIO`` that decides exactly when each
TLS record leaves (close_notify included), and a handler and an SMTP subclass
whose every hook and override point notes whether it runs in an asyncio Task.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any

from smtpwire.common.replies import ReplyParser, SMTPReply
from smtpwire.server.smtp import SMTP, Envelope, Session
from support.server import WAIT, RawClient, read_until_eof, text

PEER = ("127.0.0.1", 40025)
HOST = "engine.test"
GREETING = f"220 {HOST} Python SMTP 1.4.6"
GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"
BODY = b"Subject: contract\r\n\r\nbody line\r\n"


def texts(replies: list[SMTPReply]) -> list[str]:
    return [text(reply) for reply in replies]


def replies_to_eof(client: RawClient) -> list[str]:
    """Every reply the server sends until it closes the connection (parsed from
    raw bytes, so that a reply too many or too few shows)."""
    return texts(client.parser.feed(read_until_eof(client.sock)))


def bdat_last(chunk: bytes) -> bytes:
    return b"BDAT %d LAST\r\n%s" % (len(chunk), chunk)


class RecordingTransport(asyncio.Transport):
    """A transport for ``protocol.connection_made(transport)``: keeps every
    ``write`` call separately, counts ``close``/``abort``, and lets a coroutine
    wait (in whatever loop runs it) until a condition on them holds.

    ``always_closing`` makes ``is_closing()`` answer True whatever happened, as a
    real transport does once the peer has gone or a TLS close_notify came in.
    """

    def __init__(self, *, always_closing: bool = False) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.close_calls = 0
        self.abort_calls = 0
        self.always_closing = always_closing
        self.closed = False
        self.reading = True
        self._waiter: asyncio.Future[None] | None = None

    # -- what the protocol calls ------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": PEER, "sockname": ("127.0.0.1", 25)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        self._wake()

    def is_closing(self) -> bool:
        return self.always_closing or self.closed

    def close(self) -> None:
        self.close_calls += 1
        self.closed = True
        self._wake()

    def abort(self) -> None:
        self.abort_calls += 1
        self.closed = True
        self._wake()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_write_buffer_size(self) -> int:
        return 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        return None

    # -- what the test looks at -------------------------------------------------------

    @property
    def written(self) -> bytes:
        return b"".join(self.writes)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def until(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds; checked after every write and close
        (the caller bounds the wait)."""
        while not condition():
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    async def until_written(self, data: bytes) -> None:
        await self.until(lambda: data in self.written)


class MemoryTLSClient:
    """A TLS client over a connected socket, through ``ssl.MemoryBIO``: the test
    decides when each record goes out, so it can send its last commands, its
    close_notify and a TCP half-close back to back before reading anything."""

    def __init__(
        self, sock: socket.socket, context: ssl.SSLContext, server_hostname: str = "localhost"
    ) -> None:
        sock.settimeout(WAIT)
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)
        self.parser = ReplyParser()
        self._replies: list[SMTPReply] = []

    def _send_records(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def _receive_records(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.incoming.write(data)

    def handshake(self) -> None:
        for _ in range(1000):
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                self._send_records()
                self._receive_records()
                continue
            self._send_records()
            return
        raise AssertionError("the TLS handshake never completed")

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self._send_records()

    def reply(self) -> SMTPReply:
        for _ in range(100_000):
            if self._replies:
                return self._replies.pop(0)
            try:
                data = self.tls.read(65536)
            except ssl.SSLWantReadError:
                self._receive_records()
                continue
            if not data:
                raise ConnectionError("the server sent close_notify")
            self._replies.extend(self.parser.feed(data))
        raise AssertionError("no complete reply arrived")

    def command(self, line: str) -> SMTPReply:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def close_notify_and_half_close(self) -> None:
        """Send the TLS close_notify alert now, then a TCP FIN; reading stays open."""
        # unwrap() queues the alert, then wants the server's own close_notify.
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.unwrap()
        self._send_records()
        self.sock.shutdown(socket.SHUT_WR)

    def read_replies_to_eof(self) -> list[SMTPReply]:
        """Everything the server sends until it closes the TCP connection, decrypted
        and parsed (a reply whose record never arrived is simply missing)."""
        self.incoming.write(read_until_eof(self.sock))
        self.incoming.write_eof()
        plaintext = bytearray()
        for _ in range(100_000):
            try:
                chunk = self.tls.read(65536)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError, ssl.SSLWantReadError):
                break  # its close_notify, or the end of the TCP stream
            if not chunk:
                break
            plaintext += chunk
        replies = [*self._replies, *self.parser.feed(bytes(plaintext))]
        self._replies = []
        return replies


class TaskProbe:
    """Notes, for each piece of user code, whether it ran in an asyncio Task and
    whether ``asyncio.timeout`` (3.11+; RuntimeError outside a task) works there."""

    def __init__(self) -> None:
        self.in_task: list[tuple[str, bool]] = []
        self.timeout_works: list[tuple[str, bool]] = []

    def note(self, name: str) -> None:
        self.in_task.append((name, asyncio.current_task() is not None))

    async def probe(self, name: str) -> None:
        self.note(name)
        if sys.version_info >= (3, 11):
            try:
                async with asyncio.timeout(1):
                    await asyncio.sleep(0)
            except RuntimeError:
                self.timeout_works.append((name, False))
            else:
                self.timeout_works.append((name, True))

    # -- the handler's hooks ------------------------------------------------------------

    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        await self.probe("handle_HELO")
        session.host_name = hostname
        return "250 helo probed"

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, lines: list[str]
    ) -> list[str]:
        await self.probe("handle_EHLO")
        session.host_name = hostname
        return [f"250-{server.hostname}", "250 ehlo probed"]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        await self.probe("handle_MAIL")
        envelope.mail_from = address
        return "250 mail probed"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        await self.probe("handle_RCPT")
        envelope.rcpt_tos.append(address)
        return "250 rcpt probed"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self.probe("handle_DATA")
        return "250 data probed"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self.probe("handle_RSET")
        return "250 rset probed"

    async def handle_NOOP(
        self, server: SMTP, session: Session, envelope: Envelope, arg: str | None
    ) -> str:
        await self.probe("handle_NOOP")
        if arg == "fail":
            raise ValueError("probe failure")
        return "250 noop probed"

    async def handle_VRFY(
        self, server: SMTP, session: Session, envelope: Envelope, address: str
    ) -> str:
        await self.probe("handle_VRFY")
        return "252 vrfy probed"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self.probe("handle_QUIT")
        return "221 quit probed"


class ProbedSMTP(SMTP):
    """Every documented override point, noting where it runs (the constructor's
    own calls, made by the protocol factory outside any task in aiosmtpd too, are
    not counted)."""

    def __init__(self, probe: TaskProbe, **kwargs: Any) -> None:
        self.probe = probe
        self.constructed = False
        super().__init__(probe, **kwargs)
        self.constructed = True

    async def push(self, status: str | bytes) -> None:
        await self.probe.probe("push")
        await super().push(status)

    async def check_helo_needed(self, helo: str = "HELO") -> bool:
        await self.probe.probe("check_helo_needed")
        return await super().check_helo_needed(helo)

    async def check_auth_needed(self, caller_method: str) -> bool:
        await self.probe.probe("check_auth_needed")
        return await super().check_auth_needed(caller_method)

    async def smtp_NOOP(self, arg: str | None) -> None:
        await self.probe.probe("smtp_NOOP")
        await super().smtp_NOOP(arg)

    async def handle_exception(self, error: Exception) -> str:
        await self.probe.probe("handle_exception")
        return await super().handle_exception(error)

    def _create_session(self) -> Session:
        if self.constructed:
            self.probe.note("_create_session")
        return super()._create_session()

    def _create_envelope(self) -> Envelope:
        if self.constructed:
            self.probe.note("_create_envelope")
        return super()._create_envelope()
