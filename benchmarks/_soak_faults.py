"""The soak's misbehaving clients, on raw sockets: they vanish mid-command,
mid-DATA, mid-BDAT, mid-TLS-handshake or right after a message's final dot
(closing, or resetting with SO_LINGER 0), and they send slowly.

The ids of messages abandoned before their end go to the ledger as abandoned
(they must never be stored); a message whose final dot was sent but whose
reply was never read is the duplicate window (it may be stored); a slow
client's message is an ordinary one (it must be stored once when answered 250).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable

from _soak_clients import Control, Target, backoff
from _soak_ledger import (
    ACCEPTED,
    CONNECTION,
    RECIPIENT,
    REFUSED,
    SENDER,
    Ledger,
    build_message,
    outcome_of,
)

REPLY_TIMEOUT = 30.0
# The pace of slow clients: these sleeps *are* the fault (a client that trickles).
SLOW_PIECE = 64
SLOW_PAUSE = 0.02


class Unreachable(Exception):
    """The fault could not be staged (the server is restarting): not counted."""


async def read_reply(reader: asyncio.StreamReader) -> int:
    """The code of one (possibly multi-line) reply."""
    while True:
        line = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT)
        if not line:
            raise ConnectionError("connection closed by the server")
        if line[3:4] != b"-":
            return int(line[:3])


async def expect(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes, code: int
) -> None:
    writer.write(line)
    got = await read_reply(reader)
    if got != code:
        raise Unreachable(f"{line!r} answered {got}")  # e.g. 421 while draining


def vanish(writer: asyncio.StreamWriter, reset: bool) -> None:
    """Close, or with ``reset`` abort with an RST (SO_LINGER 0): the two ways a
    client disappears."""
    if reset:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:
        writer.close()


def client_hello(context: ssl.SSLContext) -> bytes:
    """The first flight of a TLS handshake (a ClientHello), made in memory."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the server: expected
        tls.do_handshake()
    return outgoing.read()


class FaultClient:
    """Stages one fault after another (round robin), paced by ``pause``."""

    def __init__(
        self, target: Target, ledger: Ledger, control: Control, rng: random.Random
    ) -> None:
        self.target = target
        self.ledger = ledger
        self.control = control
        self.rng = rng
        self.faults: list[tuple[str, Callable[[bool], Awaitable[None]]]] = [
            ("vanish mid-command", self.mid_command),
            ("vanish mid-DATA", self.mid_data),
            ("vanish mid-BDAT", self.mid_bdat),
            ("vanish mid-TLS-handshake (SMTPS)", self.mid_handshake_smtps),
            ("vanish mid-TLS-handshake (STARTTLS)", self.mid_handshake_starttls),
            ("vanish after the final dot", self.after_dot),
        ]

    async def open(self, tls: bool = False) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        port = self.target.smtps_port if tls else self.target.plain_port
        context = self.target.context() if tls else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.target.host, port, ssl=context), REPLY_TIMEOUT
            )
        except (OSError, TimeoutError) as error:
            raise Unreachable(str(error)) from error
        try:
            if await read_reply(reader) != 220:
                raise Unreachable("no greeting")
            await expect(reader, writer, b"EHLO fault.client\r\n", 250)
        except BaseException:
            writer.transport.abort()
            raise
        return reader, writer

    async def run(self, pause: float) -> None:
        turn = 0
        while not self.control.stopping.is_set():
            kind, stage = self.faults[turn % len(self.faults)]
            reset = turn // len(self.faults) % 2 == 1  # close and reset in turn
            turn += 1
            try:
                await stage(reset)
            except (Unreachable, OSError, TimeoutError, ssl.SSLError):
                self.ledger.fault("fault not staged (server unavailable)")
            else:
                self.ledger.fault(f"{kind}, {'reset' if reset else 'closed'}")
            # The fault rate: pacing, not synchronisation.
            await asyncio.sleep(pause * (0.5 + self.rng.random()))

    async def _envelope(
        self, tls: bool = False
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await self.open(tls)
        try:
            await expect(reader, writer, f"MAIL FROM:<{SENDER}>\r\n".encode(), 250)
            await expect(reader, writer, f"RCPT TO:<{RECIPIENT}>\r\n".encode(), 250)
        except BaseException:
            writer.transport.abort()
            raise
        return reader, writer

    def _abandoned(self, tls: bool) -> bytes:
        message_id = self.ledger.new_message(
            "fault", secure=tls, authenticated=False, abandoned=True
        )
        return build_message(message_id, 1, 4_000)

    async def mid_command(self, reset: bool) -> None:
        _, writer = await self.open()
        writer.write(f"MAIL FROM:<{SENDER}> SIZ".encode())  # no line end: mid-command
        await writer.drain()
        vanish(writer, reset)

    async def mid_data(self, reset: bool) -> None:
        tls = self.rng.random() < 0.5
        reader, writer = await self._envelope(tls)
        await expect(reader, writer, b"DATA\r\n", 354)
        message = self._abandoned(tls)
        writer.write(message[: len(message) // 2])
        await writer.drain()
        vanish(writer, reset)

    async def mid_bdat(self, reset: bool) -> None:
        _, writer = await self._envelope()
        message = self._abandoned(False)
        writer.write(f"BDAT {len(message)} LAST\r\n".encode() + message[: len(message) // 2])
        await writer.drain()
        vanish(writer, reset)

    async def mid_handshake_smtps(self, reset: bool) -> None:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.target.host, self.target.smtps_port), REPLY_TIMEOUT
            )
        except (OSError, TimeoutError) as error:
            raise Unreachable(str(error)) from error
        hello = client_hello(self.target.context())
        # Half the ClientHello, or all of it and then gone before the server's answer
        # is read: two points of the handshake.
        writer.write(hello[: len(hello) // 2] if self.rng.random() < 0.5 else hello)
        await writer.drain()
        vanish(writer, reset)

    async def mid_handshake_starttls(self, reset: bool) -> None:
        reader, writer = await self.open()
        await expect(reader, writer, b"STARTTLS\r\n", 220)
        hello = client_hello(self.target.context())
        writer.write(hello[: len(hello) // 2])
        await writer.drain()
        vanish(writer, reset)

    async def after_dot(self, reset: bool) -> None:
        """The duplicate window, on purpose: the whole message, then gone."""
        reader, writer = await self._envelope()
        await expect(reader, writer, b"DATA\r\n", 354)
        message_id = self.ledger.new_message("fault-after-dot", secure=False, authenticated=False)
        writer.write(build_message(message_id, 1, 2_000) + b".\r\n")
        await writer.drain()
        self.ledger.told(message_id, 1, CONNECTION)
        vanish(writer, reset)


async def slow_client(target: Target, ledger: Ledger, control: Control, rng: random.Random) -> None:
    """Ordinary messages sent in 64-octet pieces 20 ms apart (a 4 KiB message
    takes over a second), each reply awaited: a client that trickles."""

    async def trickle(writer: asyncio.StreamWriter, data: bytes) -> None:
        for start in range(0, len(data), SLOW_PIECE):
            writer.write(data[start : start + SLOW_PIECE])
            await writer.drain()
            await asyncio.sleep(SLOW_PAUSE)  # the fault's timing

    async def send(content: bytes) -> str:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(target.host, target.plain_port), REPLY_TIMEOUT
            )
        except (OSError, TimeoutError):
            return CONNECTION
        try:
            code = await read_reply(reader)
            for line in (b"EHLO slow.client\r\n", f"MAIL FROM:<{SENDER}>\r\n".encode(),
                         f"RCPT TO:<{RECIPIENT}>\r\n".encode(), b"DATA\r\n"):  # fmt: skip
                if code >= 400:
                    return outcome_of(code)
                await trickle(writer, line)
                code = await read_reply(reader)
            if code != 354:
                return outcome_of(code)
            await trickle(writer, content + b".\r\n")
            code = await read_reply(reader)
            writer.write(b"QUIT\r\n")
            return outcome_of(code)
        except (OSError, TimeoutError, ValueError):
            return CONNECTION
        finally:
            writer.close()

    while not control.stopping.is_set():
        message_id = ledger.new_message("slow client", secure=False, authenticated=False)
        ledger.fault("slow client message")
        attempt = 1
        while True:
            outcome = await send(build_message(message_id, attempt, rng.randint(1_000, 4_000)))
            ledger.told(message_id, attempt, outcome)
            if outcome in (ACCEPTED, REFUSED) or not control.may_retry(attempt):
                break
            attempt += 1
            await asyncio.sleep(backoff(attempt, rng))
