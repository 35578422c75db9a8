"""Attack probes on smtpwire.client against hostile raw-socket servers written in
the test (asyncio streams in the test's own loop, 127.0.0.1, port 0).

A server that drops to plaintext after accepting STARTTLS gets a TLS error and
never sees credentials or mail; an endless multi-line reply is cut off at the
reply cap in bounded memory; extra replies are never paired with later
commands; a server that closes after ``354`` is an SMTPServerDisconnected and
nothing is sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trustme

from smtpwire.client import (
    SMTP,
    SMTPResponseException,
    SMTPServerDisconnected,
)

WAIT = 5.0
Script = Callable[["Peer"], Awaitable[None]]


class Peer:
    """One connection to the scripted server: what it read, and how to answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received = bytearray()

    async def line(self) -> bytes:
        data = await asyncio.wait_for(self.reader.readline(), WAIT)
        self.received += data
        return data.rstrip(b"\r\n")

    async def exactly(self, count: int) -> bytes:
        data = await asyncio.wait_for(self.reader.readexactly(count), WAIT)
        self.received += data
        return data

    async def say(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


@contextlib.asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[tuple[int, list[Peer]]]:
    """Serve ``script`` for every connection; yields the port and the peers seen."""
    peers: list[Peer] = []
    tasks: list[asyncio.Task[None]] = []

    async def run(peer: Peer) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            await script(peer)
        peer.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await peer.writer.wait_closed()

    def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer)
        peers.append(peer)
        tasks.append(asyncio.ensure_future(run(peer)))

    server = await asyncio.start_server(connected, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], peers
    finally:
        server.close()
        for peer in peers:
            peer.writer.transport.abort()  # a script still reading: its socket closes now
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def greet(peer: Peer, *keywords: bytes) -> None:
    """Greeting, then EHLO's reply with ``keywords``."""
    await peer.say(b"220 hostile.example ESMTP\r\n")
    assert (await peer.line()).upper().startswith(b"EHLO")
    lines = [b"hostile.example", *keywords]
    await peer.say(
        b"".join(
            b"250" + (b"-" if index < len(lines) - 1 else b" ") + line + b"\r\n"
            for index, line in enumerate(lines)
        )
    )


def client(port: int, **options: Any) -> SMTP:
    options.setdefault("local_hostname", "client.example")
    options.setdefault("start_tls", False)
    options.setdefault("timeout", WAIT)
    return SMTP(hostname="127.0.0.1", port=port, **options)


def trusting_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    trustme.CA().configure_trust(context)
    return context


# -- STARTTLS answered with 220, then plaintext -------------------------------------------------


@pytest.mark.parametrize("then", [b"250 plaintext, no TLS here\r\n", b"", b"\x15\x03\x01\x00\x02"])
async def test_plaintext_after_starttls_220_is_a_tls_error_and_nothing_leaks(then: bytes) -> None:
    async def script(peer: Peer) -> None:
        await greet(peer, b"STARTTLS", b"AUTH PLAIN LOGIN")
        assert await peer.line() == b"STARTTLS"
        await peer.say(b"220 go ahead\r\n")
        await peer.exactly(5)  # the start of the client's ClientHello
        await peer.say(then + b"250 still plaintext\r\n" * 4)
        with contextlib.suppress(asyncio.IncompleteReadError):
            await peer.exactly(1 << 20)  # whatever else comes, until the client hangs up

    async with scripted(script) as (port, peers):
        smtp = client(port, start_tls=True, tls_context=trusting_context())
        smtp.username, smtp.password = "anne", "hunter2"
        with pytest.raises((ssl.SSLError, SMTPServerDisconnected, ConnectionError)):
            await smtp.connect()
        assert not smtp.is_connected
        with pytest.raises(SMTPServerDisconnected):
            await smtp.sendmail("a@example.com", ["b@example.com"], "Subject: x\r\n\r\nhi\r\n")
        (peer,) = peers
    after = bytes(peer.received).split(b"STARTTLS\r\n", 1)[1]
    assert after[:1] == b"\x16"  # only the TLS handshake followed the STARTTLS
    for leak in (b"AUTH", b"hunter2", b"MAIL", b"RCPT", b"DATA", b"Subject"):
        assert leak not in bytes(peer.received)


async def test_plaintext_after_starttls_220_through_the_starttls_method() -> None:
    async def script(peer: Peer) -> None:
        await greet(peer, b"STARTTLS")
        assert await peer.line() == b"STARTTLS"
        await peer.say(b"220 go ahead\r\n")
        await peer.exactly(5)
        await peer.say(b"250 hostile.example\r\n")
        with contextlib.suppress(asyncio.IncompleteReadError):
            await peer.exactly(1 << 20)

    async with scripted(script) as (port, peers):
        smtp = client(port)
        await smtp.connect()
        with pytest.raises(ssl.SSLError):
            await smtp.starttls(tls_context=trusting_context())
        assert not smtp.is_connected
    assert b"MAIL" not in bytes(peers[0].received)


# -- an endless multi-line reply --------------------------------------------------------------


async def test_endless_continuation_lines_fail_with_response_too_long_in_bounded_memory() -> None:
    block = b"250-" + b"x" * 1018 + b"\r\n"  # 1 KiB lines, 64 per write
    sent = 0

    async def script(peer: Peer) -> None:
        nonlocal sent
        await peer.say(b"220 hostile.example ESMTP\r\n")
        await peer.line()
        while sent < 10 * 1024 * 1024:  # 10 MiB at most, or until the client leaves
            await peer.say(block * 64)
            sent += len(block) * 64

    tracemalloc.start()
    try:
        async with scripted(script) as (port, _):
            smtp = client(port)
            await smtp.connect()
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            with pytest.raises(SMTPResponseException) as caught:
                await smtp.ehlo()
            peak = tracemalloc.get_traced_memory()[1] - before
            assert not smtp.is_connected
    finally:
        tracemalloc.stop()
    assert (caught.value.code, caught.value.message) == (-1, "Response too long")
    assert peak < 1024 * 1024, peak
    assert sent < 10 * 1024 * 1024  # the client hung up long before the end


# -- extra replies after BDAT -----------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [False, True], ids=["lockstep", "pipelined"])
async def test_extra_replies_after_bdat_are_never_paired_with_later_commands(
    pipelining: bool,
) -> None:
    async def script(peer: Peer) -> None:
        await greet(peer, b"CHUNKING", *([b"PIPELINING"] if pipelining else []))
        commands = 0
        while True:
            line = await peer.line()
            verb = line.split(b" ", 1)[0].upper()
            commands += 1
            if verb == b"BDAT":
                size = int(line.split()[1])
                await peer.exactly(size)
                await peer.say(
                    b"250 2.6.0 the real one\r\n250 2.0.0 extra\r\n"
                    b"550 5.0.0 bogus\r\n354 bogus too\r\n"
                )
            elif verb == b"NOOP":
                await peer.say(b"250 2.0.0 noop #%d\r\n" % commands)
            elif verb == b"QUIT":
                await peer.say(b"221 bye\r\n")
                return
            else:
                await peer.say(b"250 2.1.0 ok\r\n")

    async with scripted(script) as (port, peers):
        smtp = client(port, chunking=True)
        await smtp.connect()
        refused, message = await smtp.sendmail(
            "a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nhi\r\n"
        )
        assert (refused, message) == ({}, "2.6.0 the real one")
        first = await smtp.noop()
        second = await smtp.noop()
        assert (first.code, first.message) == (250, "2.0.0 noop #4")
        assert (second.code, second.message) == (250, "2.0.0 noop #5")
        assert (await smtp.quit()).code == 221
    assert b"BDAT 18 LAST\r\nSubject: x\r\n\r\nhi\r\n" in bytes(peers[0].received)


# -- a server that closes after 354 -----------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_close_after_354_is_server_disconnected_and_nothing_is_retried(how: str) -> None:
    async def script(peer: Peer) -> None:
        await greet(peer)
        while True:
            line = await peer.line()
            if line.upper() == b"DATA":
                await peer.say(b"354 go ahead\r\n")
                if how == "abort":
                    peer.writer.transport.abort()
                return
            await peer.say(b"250 ok\r\n")

    async with scripted(script) as (port, peers):
        smtp = client(port)
        await smtp.connect()
        with pytest.raises(SMTPServerDisconnected):
            await smtp.sendmail("a@example.com", ["b@example.com"], "Subject: x\r\n\r\nhi\r\n")
        assert not smtp.is_connected
        with pytest.raises(SMTPServerDisconnected):
            await smtp.noop()
    assert len(peers) == 1  # no reconnection, no second attempt
    assert bytes(peers[0].received).count(b"MAIL FROM") == 1
