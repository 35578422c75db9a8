"""The LMTP client against smtpwire.server's LMTP (one reply per recipient after the
message), and ``SMTPPool`` against smtpwire.server: many concurrent sends through a
bounded set of reused connections, each message delivered exactly once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest

import smtpwire.client as aiosmtplib
from smtpwire.client.lmtp import LMTP as ClientLMTP
from smtpwire.client.pool import SMTPPool
from smtpwire.server.lmtp import LMTP as ServerLMTP
from smtpwire.server.smtp import SMTP as ServerSMTP
from support.server import ServerThread, serving

HOST = "testhost"
WAIT = 10.0


@dataclass(frozen=True)
class Delivered:
    mail_from: str | None
    rcpt_tos: list[str]
    content: bytes
    peer: Any


class Sink:
    """Records messages (with the connection they came on) and QUITs; refuses
    recipients starting "nobody" at RCPT.  For LMTP, ``statuses`` maps a recipient
    to its reply after the message (250 OK when absent)."""

    def __init__(self, statuses: dict[str, str] | None = None) -> None:
        self.messages: list[Delivered] = []
        self.quits = 0
        self.statuses = statuses or {}

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("nobody"):
            return f"550 5.1.1 No such user {address}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str | list[str]:
        self.messages.append(
            Delivered(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content,
                session.peer,
            )
        )
        if isinstance(server, ServerLMTP):
            return [self.statuses.get(r, "250 2.0.0 Delivered") for r in envelope.rcpt_tos]
        return "250 OK"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.quits += 1
        return "221 Bye"


class CountingServer(ServerSMTP):
    """Tracks how many connections are open at once (all in the server's loop) and
    signals each connection's end."""

    live = 0
    peak = 0
    ended: threading.Semaphore

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.received.append(bytes(data))
        super().data_received(data)

    def connection_made(self, transport: Any) -> None:
        cls = type(self)
        cls.live += 1
        cls.peak = max(cls.peak, cls.live)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        type(self).live -= 1
        super().connection_lost(exc)
        type(self).ended.release()


def counting_server_class() -> type[CountingServer]:
    """A fresh subclass per test, so the counters start at zero."""
    return type("Counting", (CountingServer,), {"ended": threading.Semaphore(0)})


class PipeliningLMTP(ServerLMTP):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.received.append(bytes(data))
        super().data_received(data)

    def _ehlo_lines(self) -> list[str]:
        return [*super()._ehlo_lines(), "250-PIPELINING"]


@contextmanager
def server_of(cls: type[ServerSMTP], handler: Any, **kwargs: Any) -> Iterator[ServerThread]:
    kwargs.setdefault("hostname", HOST)
    with serving(lambda: cls(handler, **kwargs)) as server:
        yield server


def lmtp_client(server: ServerThread, **kwargs: Any) -> ClientLMTP:
    kwargs.setdefault("local_hostname", "client.test")
    kwargs.setdefault("timeout", WAIT)
    return ClientLMTP(hostname="127.0.0.1", port=server.port, **kwargs)


def pool_for(server: ServerThread, **kwargs: Any) -> SMTPPool:
    kwargs.setdefault("local_hostname", "client.test")
    kwargs.setdefault("timeout", WAIT)
    return SMTPPool(hostname="127.0.0.1", port=server.port, **kwargs)


async def server_has_closed(server: ServerThread, cls: type[CountingServer], count: int) -> None:
    """Wait until ``count`` server connections have ended and their sockets are
    closed, and give this loop the chance to read what they sent last.

    ``connection_lost`` runs just before the server's socket is closed, so one more
    call into the server's loop makes sure the FIN is out; waiting for a second
    call from a thread keeps this loop in ``select`` meanwhile, where it reads the
    last reply (a 421) and then, in a later round, the end of the stream.
    """

    def wait() -> None:
        for _ in range(count):
            assert cls.ended.acquire(timeout=WAIT)
        server.call(lambda: None)

    await asyncio.to_thread(wait)
    await asyncio.to_thread(server.call, lambda: None)


# --- LMTP ----------------------------------------------------------------------------------------


async def test_lmtp_greets_with_lhlo() -> None:
    with server_of(PipeliningLMTP, Sink()) as server:
        client = lmtp_client(server)
        async with client:
            response = await client.ehlo()
            assert response.code == 250
            assert client.supports_extension("pipelining")
            assert (await client.helo()).code == 250  # LMTP has no HELO: LHLO again
            received = server.call(lambda: list(server.protocols[0].received))
            assert server.call(lambda: server.protocols[0].session.host_name) == "client.test"
    assert [c for c in received if c.startswith(b"LHLO")] == [b"LHLO client.test\r\n"] * 3
    assert not any(c.startswith((b"EHLO", b"HELO")) for c in received)


@pytest.mark.parametrize("server_class", [ServerLMTP, PipeliningLMTP])
async def test_lmtp_per_recipient_results(server_class: type[ServerLMTP]) -> None:
    sink = Sink({"b@example.com": "552 5.2.2 Mailbox full"})
    recipients = ["a@example.com", "b@example.com", "nobody@example.com", "c@example.com"]
    with server_of(server_class, sink) as server:
        client = lmtp_client(server)
        async with client:
            refused, message = await client.sendmail("s@example.com", recipients, b"lmtp\r\n")
            assert refused == {
                "nobody@example.com": (550, "5.1.1 No such user nobody@example.com"),
                "b@example.com": (552, "5.2.2 Mailbox full"),
            }
            assert message == "2.0.0 Delivered"
            # The connection is in step: the next transaction works.
            refused, _ = await client.sendmail("s@example.com", ["a@example.com"], b"next\r\n")
            assert refused == {}
    assert [(m.rcpt_tos, m.content) for m in sink.messages] == [
        (["a@example.com", "b@example.com", "c@example.com"], b"lmtp\r\n"),
        (["a@example.com"], b"next\r\n"),
    ]


@pytest.mark.parametrize("server_class", [ServerLMTP, PipeliningLMTP])
async def test_lmtp_all_refused_after_the_message(server_class: type[ServerLMTP]) -> None:
    sink = Sink({"a@example.com": "452 4.2.2 Over quota", "b@example.com": "552 5.2.2 Full"})
    with server_of(server_class, sink) as server:
        client = lmtp_client(server)
        async with client:
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as caught:
                await client.sendmail(
                    "s@example.com",
                    ["a@example.com", "nobody@example.com", "b@example.com"],
                    b"nobody takes this\r\n",
                )
            assert {(e.recipient, e.code, e.message) for e in caught.value.recipients} == {
                ("a@example.com", 452, "4.2.2 Over quota"),
                ("nobody@example.com", 550, "5.1.1 No such user nobody@example.com"),
                ("b@example.com", 552, "5.2.2 Full"),
            }
            assert client.is_connected
            assert (await client.noop()).code == 250
            assert await client.sendmail("s@example.com", ["c@example.com"], b"ok\r\n") == (
                {},
                "2.0.0 Delivered",
            )


async def test_lmtp_send_message() -> None:
    sink = Sink({"b@example.com": "450 4.2.1 Try later"})
    message = EmailMessage()
    message["From"] = "s@example.com"
    message["To"] = "a@example.com, b@example.com"
    message.set_content("over LMTP\n")
    with server_of(ServerLMTP, sink) as server:
        client = lmtp_client(server)
        async with client:
            refused, _ = await client.send_message(message)
    assert refused == {"b@example.com": (450, "4.2.1 Try later")}
    assert sink.messages[0].content.endswith(b"\r\n\r\nover LMTP\r\n")


async def test_lmtp_pipelined_transaction_is_one_write() -> None:
    sink = Sink()
    recipients = [f"r{i}@example.com" for i in range(5)]
    with server_of(PipeliningLMTP, sink) as server:
        client = lmtp_client(server)
        async with client:
            await client.sendmail("s@example.com", recipients, b"x\r\n")
        received = server.call(lambda: list(server.protocols[0].received))
    transaction = [c for c in received if c.startswith(b"MAIL")]
    assert len(transaction) == 1
    assert transaction[0].endswith(b"DATA\r\n")
    assert transaction[0].count(b"RCPT TO:") == 5


async def test_lmtp_client_against_an_smtp_server() -> None:
    with server_of(ServerSMTP, Sink()) as server:
        client = lmtp_client(server)
        with pytest.raises(aiosmtplib.SMTPHeloError) as caught:
            await client.connect()
        assert caught.value.code == 500
        assert not client.is_connected


# --- SMTPPool ----------------------------------------------------------------------------------


async def test_pool_200_concurrent_sends_through_10_connections() -> None:
    sink = Sink()
    counting = counting_server_class()
    with server_of(counting, sink) as server:
        pool = pool_for(server, max_connections=10)
        async with pool:
            results = await asyncio.gather(
                *(
                    pool.sendmail(
                        "s@example.com",
                        [f"r{n}@example.com"],
                        b"Message-Number: %d\r\n\r\nbody %d\r\n" % (n, n),
                    )
                    for n in range(200)
                )
            )
        connections = len(server.protocols)
    assert results == [({}, "OK")] * 200
    assert len(sink.messages) == 200
    delivered = collections.Counter((m.rcpt_tos[0], m.content) for m in sink.messages)
    assert delivered == {
        (f"r{n}@example.com", b"Message-Number: %d\r\n\r\nbody %d\r\n" % (n, n)): 1
        for n in range(200)
    }
    assert connections <= 10
    assert counting.peak <= 10
    assert len({m.peer for m in sink.messages}) == connections
    assert sink.quits == connections  # async with closed every one of them


async def test_pool_reuses_a_connection() -> None:
    sink = Sink()
    with server_of(ServerSMTP, sink) as server:
        async with pool_for(server) as pool:
            for n in range(5):
                await pool.sendmail("s@example.com", ["a@example.com"], b"%d\r\n" % n)
            assert pool.idle_connections == 1
        assert len(server.protocols) == 1
    assert [m.content for m in sink.messages] == [b"%d\r\n" % n for n in range(5)]


async def test_pool_max_messages_per_connection_sequential() -> None:
    sink = Sink()
    with server_of(ServerSMTP, sink) as server:
        async with pool_for(server, max_messages_per_connection=3) as pool:
            for n in range(10):
                await pool.sendmail("s@example.com", ["a@example.com"], b"%d\r\n" % n)
        connections = len(server.protocols)
    per_connection = collections.Counter(m.peer for m in sink.messages)
    assert sorted(per_connection.values()) == [1, 3, 3, 3]
    assert connections == 4
    assert sink.quits == 4  # retired connections said QUIT too


async def test_pool_max_messages_per_connection_concurrent() -> None:
    sink = Sink()
    counting = counting_server_class()
    with server_of(counting, sink) as server:
        async with pool_for(server, max_connections=4, max_messages_per_connection=5) as pool:
            await asyncio.gather(
                *(
                    pool.sendmail("s@example.com", ["a@example.com"], b"%d\r\n" % n)
                    for n in range(60)
                )
            )
    per_connection = collections.Counter(m.peer for m in sink.messages)
    assert sum(per_connection.values()) == 60
    assert max(per_connection.values()) <= 5
    assert len(per_connection) >= 12
    assert counting.peak <= 4


async def test_pool_retiring_connection_counts_against_max_connections() -> None:
    """A connection retired after its last message is still open until its QUIT is
    answered; the pool must not open another beyond ``max_connections`` meanwhile.
    The server holds the retiring QUIT until another connection arrives (or 0.5 s
    passes), so a pool that does not wait is caught every time."""

    class HoldingQuit(CountingServer):
        another: asyncio.Event | None = None

        def connection_made(self, transport: Any) -> None:
            cls = type(self)
            if cls.another is None:
                cls.another = asyncio.Event()
            else:
                cls.another.set()
            super().connection_made(transport)

        async def smtp_QUIT(self, arg: str | None) -> None:
            another = type(self).another
            if another is not None and not another.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(another.wait(), 0.5)
            await super().smtp_QUIT(arg)

    sink = Sink()
    holding = type("Holding", (HoldingQuit,), {"ended": threading.Semaphore(0)})
    with server_of(holding, sink) as server:
        async with pool_for(server, max_connections=1, max_messages_per_connection=1) as pool:
            await pool.sendmail("s@example.com", ["a@example.com"], b"one\r\n")
            await pool.sendmail("s@example.com", ["a@example.com"], b"two\r\n")
    assert [m.content for m in sink.messages] == [b"one\r\n", b"two\r\n"]
    assert holding.peak == 1


async def test_pool_replaces_a_connection_the_server_dropped_while_idle() -> None:
    sink = Sink()
    counting = counting_server_class()
    with server_of(counting, sink) as server:
        async with pool_for(server) as pool:
            await pool.sendmail("s@example.com", ["a@example.com"], b"first\r\n")
            assert pool.idle_connections == 1
            server.call(server.protocols[0].transport.close)
            await server_has_closed(server, counting, 1)
            assert await pool.sendmail("s@example.com", ["a@example.com"], b"second\r\n") == (
                {},
                "OK",
            )
        connections = len(server.protocols)
    assert [m.content for m in sink.messages] == [b"first\r\n", b"second\r\n"]
    assert connections == 2


async def test_pool_replaces_a_connection_the_server_timed_out() -> None:
    sink = Sink()
    counting = counting_server_class()
    with server_of(counting, sink, timeout=0.3) as server:
        async with pool_for(server) as pool:
            await pool.sendmail("s@example.com", ["a@example.com"], b"first\r\n")
            # The server says "421 ... timeout exceeded" and closes after 0.3 s idle.
            await server_has_closed(server, counting, 1)
            await pool.sendmail("s@example.com", ["a@example.com"], b"second\r\n")
        connections = len(server.protocols)
    assert [m.content for m in sink.messages] == [b"first\r\n", b"second\r\n"]
    assert connections == 2


async def test_pool_checks_an_idle_connection_before_reuse() -> None:
    """With ``check_after=0`` every reuse is checked with RSET first, so a drop the
    client has not even noticed yet is caught before MAIL goes out."""
    sink = Sink()
    counting = counting_server_class()
    with server_of(counting, sink) as server:
        async with pool_for(server, check_after=0) as pool:
            await pool.sendmail("s@example.com", ["a@example.com"], b"first\r\n")
            server.call(server.protocols[0].transport.close)
            await pool.sendmail("s@example.com", ["a@example.com"], b"second\r\n")
            await pool.sendmail("s@example.com", ["a@example.com"], b"third\r\n")
        connections = len(server.protocols)
        second_session = b"".join(server.call(lambda: list(server.protocols[1].received)))
    assert [m.content for m in sink.messages] == [b"first\r\n", b"second\r\n", b"third\r\n"]
    assert connections == 2
    assert second_session.count(b"RSET\r\n") == 1  # the check before "third"


async def test_pool_close_quits_idle_connections() -> None:
    sink = Sink()
    counting = counting_server_class()
    with server_of(counting, sink) as server:
        pool = pool_for(server, max_connections=3)
        await asyncio.gather(
            *(pool.sendmail("s@example.com", ["a@example.com"], b"%d\r\n" % n) for n in range(9))
        )
        idle = pool.idle_connections
        assert 1 <= idle <= 3
        assert sink.quits == 0
        await pool.close()
        assert pool.idle_connections == 0
        assert sink.quits == len(server.protocols) == idle
        await server_has_closed(server, counting, idle)
        with pytest.raises(aiosmtplib.SMTPException, match="closed"):
            await pool.sendmail("s@example.com", ["a@example.com"], b"late\r\n")
    assert len(sink.messages) == 9


async def test_pool_async_with_closes() -> None:
    sink = Sink()
    with server_of(ServerSMTP, sink) as server:
        async with pool_for(server) as pool:
            assert isinstance(pool, SMTPPool)
            await pool.sendmail("s@example.com", ["a@example.com"], b"x\r\n")
        assert sink.quits == 1
        with pytest.raises(aiosmtplib.SMTPException):
            await pool.sendmail("s@example.com", ["a@example.com"], b"late\r\n")


async def test_pool_refusal_keeps_the_connection() -> None:
    sink = Sink()
    with server_of(ServerSMTP, sink) as server:
        async with pool_for(server) as pool:
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
                await pool.sendmail("s@example.com", ["nobody@example.com"], b"x\r\n")
            refused, _ = await pool.sendmail(
                "s@example.com", ["nobody@example.com", "a@example.com"], b"y\r\n"
            )
            assert list(refused) == ["nobody@example.com"]
        assert len(server.protocols) == 1
    assert [m.content for m in sink.messages] == [b"y\r\n"]


async def test_pool_send_message() -> None:
    sink = Sink()
    message = EmailMessage()
    message["From"] = "s@example.com"
    message["To"] = "a@example.com"
    message["Bcc"] = "b@example.com"
    message.set_content("pooled\n")
    with server_of(ServerSMTP, sink) as server:
        async with pool_for(server) as pool:
            await pool.send_message(message)
    assert sink.messages[0].rcpt_tos == ["a@example.com", "b@example.com"]
    assert b"b@example.com" not in sink.messages[0].content


async def test_pool_broken_send_is_not_reused() -> None:
    sink = Sink()

    async def failing() -> AsyncIterator[bytes]:
        yield b"half a message\r\n"
        raise RuntimeError("producer failed")

    with server_of(ServerSMTP, sink) as server:
        async with pool_for(server) as pool:
            with pytest.raises(RuntimeError, match="producer failed"):
                await pool.sendmail("s@example.com", ["a@example.com"], failing())
            assert pool.idle_connections == 0
            await pool.sendmail("s@example.com", ["a@example.com"], b"whole\r\n")
        assert len(server.protocols) == 2
    assert [m.content for m in sink.messages] == [b"whole\r\n"]


async def test_pool_connect_failure_releases_the_slot() -> None:
    with server_of(ServerSMTP, Sink()) as server:
        port = server.port
    # The server is gone: every send fails to connect, and none waits for a slot.
    pool = SMTPPool(hostname="127.0.0.1", port=port, max_connections=1, timeout=WAIT)
    for _ in range(3):
        with pytest.raises(aiosmtplib.SMTPConnectError):
            await pool.sendmail("s@example.com", ["a@example.com"], b"x\r\n")
    await pool.close()


def test_pool_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        SMTPPool(hostname="127.0.0.1", max_connections=0)
    with pytest.raises(ValueError, match="max_messages_per_connection"):
        SMTPPool(hostname="127.0.0.1", max_messages_per_connection=0)
    with pytest.raises(ValueError):  # noqa: PT011 - SMTP's own configuration check
        SMTPPool(hostname="127.0.0.1", use_tls=True, start_tls=True)
