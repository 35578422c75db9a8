"""CHUNKING (RFC 3030) on the client: with ``chunking=True`` and a server offering
CHUNKING, a message goes as ``BDAT <size> LAST`` with no dot-stuffing; with
PIPELINING too, MAIL, every RCPT and the BDAT leave in one write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from smtpwire.client import SMTP, SMTPDataError, SMTPRecipientsRefused

WAIT = 10.0


class ChunkingServer(asyncio.Protocol):
    """A minimal server that understands BDAT byte counts exactly and records every
    read, every command line and every message it took."""

    def __init__(self, extensions: list[str], record: dict[str, list[bytes]]) -> None:
        self.extensions = extensions
        self.record = record
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(b"220 chunky ready\r\n")

    def data_received(self, data: bytes) -> None:
        self.record["reads"].append(data)
        self.buffer += data
        replies = []
        while b"\r\n" in self.buffer:
            line, _, rest = self.buffer.partition(b"\r\n")
            if line.upper().startswith(b"BDAT "):
                size = int(line.split()[1])
                if len(rest) < size:
                    break  # wait for the whole chunk
                self.record["messages"].append(rest[:size])
                self.buffer = rest[size:]
                self.record["lines"].append(line)
                failed = any(b.startswith(b"5") for b in self.record["replies"][-1:])
                replies.append(b"554 no valid recipients" if failed else b"250 chunks accepted")
                continue
            self.buffer = rest
            self.record["lines"].append(line)
            replies.append(self.answer(line))
        if replies:
            self.record["replies"].extend(replies)
            assert self.transport is not None
            self.transport.write(b"".join(reply + b"\r\n" for reply in replies))

    def answer(self, line: bytes) -> bytes:
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"EHLO":
            listed = [b"250-chunky", *(f"250-{e}".encode() for e in self.extensions)]
            return b"\r\n".join([*listed, b"250 HELP"])
        if verb == b"RCPT" and b"nobody" in line:
            return b"550 no such user"
        if verb == b"QUIT":
            return b"221 bye"
        return b"250 OK"


@asynccontextmanager
async def chunking_server(
    extensions: list[str],
) -> AsyncIterator[tuple[int, dict[str, list[bytes]]]]:
    record: dict[str, list[bytes]] = {"reads": [], "lines": [], "messages": [], "replies": []}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ChunkingServer(extensions, record), "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], record
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), WAIT)


def client(port: int, **kwargs: object) -> SMTP:
    return SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=WAIT, **kwargs)  # type: ignore[arg-type]


MESSAGE = b"Subject: chunked\r\n\r\n.starts with a dot\nbare newline\r\n"


async def test_bdat_sends_the_message_unstuffed_in_one_round_trip() -> None:
    async with (
        chunking_server(["PIPELINING", "CHUNKING"]) as (port, record),
        client(port, chunking=True) as smtp,
    ):
        await smtp.ehlo()
        reads_before = len(record["reads"])
        refused, reply = await smtp.sendmail("a@example.com", ["b@example.com"], MESSAGE)
        assert (refused, reply) == ({}, "chunks accepted")
        # MAIL, RCPT and BDAT with its data arrived in a single read.
        assert len(record["reads"]) - reads_before == 1
    normalised = b"Subject: chunked\r\n\r\n.starts with a dot\r\nbare newline\r\n"
    assert record["messages"] == [normalised]  # no stuffing dot, CRLF line ends
    assert f"BDAT {len(normalised)} LAST".encode() in record["lines"]
    assert not any(line.upper() == b"DATA" for line in record["lines"])


async def test_bdat_without_pipelining_goes_command_by_command() -> None:
    async with (
        chunking_server(["CHUNKING"]) as (port, record),
        client(port, chunking=True) as smtp,
    ):
        await smtp.ehlo()
        reads_before = len(record["reads"])
        await smtp.sendmail("a@example.com", ["b@example.com", "c@example.com"], b"hi\r\n")
        assert len(record["reads"]) - reads_before == 4  # MAIL, RCPT, RCPT, BDAT
    assert record["messages"] == [b"hi\r\n"]


async def test_bdat_partial_and_total_refusals() -> None:
    async with (
        chunking_server(["PIPELINING", "CHUNKING"]) as (port, record),
        client(port, chunking=True) as smtp,
    ):
        refused, _ = await smtp.sendmail(
            "a@example.com", ["b@example.com", "nobody@example.com"], b"x\r\n"
        )
        assert list(refused) == ["nobody@example.com"]
        with pytest.raises(SMTPRecipientsRefused):
            await smtp.sendmail("a@example.com", ["nobody@example.com"], b"y\r\n")
        # The server consumed the refused BDAT's bytes: still in step.
        assert (await smtp.noop()).code == 250
    assert record["messages"][0] == b"x\r\n"


async def test_chunking_is_used_only_when_asked_and_offered() -> None:
    async with (
        chunking_server(["CHUNKING"]) as (port, record),
        client(port) as smtp,  # not asked for
    ):
        # This server only knows BDAT and answers DATA with 250 instead of 354,
        # which the client reports; what matters is that it chose DATA.
        with pytest.raises(SMTPDataError):
            await smtp.sendmail("a@example.com", ["b@example.com"], b"x\r\n")
    assert any(line.upper() == b"DATA" for line in record["lines"])
    assert record["messages"] == []
