"""CHUNKING (RFC 3030) on the client: with ``chunking=True`` and a server offering
CHUNKING, a message goes as ``BDAT <size> LAST`` with no dot-stuffing; with
PIPELINING too, MAIL, every RCPT and the BDAT leave in one write.

With ``BODY=BINARYMIME`` (needing the server's BINARYMIME and CHUNKING, whatever
``chunking`` says) the bytes go exactly as given, by BDAT only: an in-memory message
as one ``BDAT n LAST``, a stream as one ``BDAT n`` per chunk, each answered before the
next, then ``BDAT 0 LAST``; a refused chunk ends the transaction with RSET, a failing
stream drops the connection so that no partial message is ever completed."""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from email.message import EmailMessage

import pytest

from smtpwire.client import (
    SMTP,
    SMTPDataError,
    SMTPNotSupported,
    SMTPRecipientsRefused,
    SMTPSenderRefused,
)
from smtpwire.client.lmtp import LMTP

WAIT = 10.0


class Record(dict[str, list[bytes]]):
    """What a ChunkingServer saw: every read, command line, non-LAST BDAT chunk,
    completed message and reply; ``closed`` is set when a connection ends."""

    def __init__(self) -> None:
        super().__init__(reads=[], lines=[], chunks=[], messages=[], replies=[])
        self.closed = asyncio.Event()


class ChunkingServer(asyncio.Protocol):
    """A minimal server that understands BDAT byte counts exactly and records every
    read, every command line and every message it took.  ``BDAT n`` chunks build
    up one message, completed by ``BDAT n LAST`` (``BDAT 0 LAST`` included); a
    message growing past ``max_size`` is refused with 552 at that chunk."""

    def __init__(self, extensions: list[str], record: Record, max_size: int | None = None) -> None:
        self.extensions = extensions
        self.record = record
        self.max_size = max_size
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.reset()

    def reset(self) -> None:
        self.accepted = 0  # recipients accepted in this transaction
        self.pending = b""  # its BDAT chunks so far
        self.failed = False  # a chunk was refused: the transaction is over

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(b"220 chunky ready\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.record.closed.set()

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
                chunk, self.buffer = rest[:size], rest[size:]
                self.record["lines"].append(line)
                replies.append(self.bdat(chunk, last=line.upper().endswith(b" LAST")))
                continue
            self.buffer = rest
            self.record["lines"].append(line)
            replies.append(self.answer(line))
        if replies:
            self.record["replies"].extend(replies)
            assert self.transport is not None
            self.transport.write(b"".join(reply + b"\r\n" for reply in replies))

    def bdat(self, chunk: bytes, *, last: bool) -> bytes:
        if not last:
            self.record["chunks"].append(chunk)
        if self.accepted == 0 or self.failed:
            return b"554 no valid recipients"
        self.pending += chunk
        if self.max_size is not None and len(self.pending) > self.max_size:
            self.failed = True
            return b"552 too big"
        if not last:
            return b"250 %d octets received" % len(chunk)
        self.record["messages"].append(self.pending)
        self.reset()
        return b"250 chunks accepted"

    def answer(self, line: bytes) -> bytes:
        verb = line.split(b" ", 1)[0].upper()
        if verb in (b"EHLO", b"LHLO"):
            listed = [b"250-chunky", *(f"250-{e}".encode() for e in self.extensions)]
            return b"\r\n".join([*listed, b"250 HELP"])
        if verb in (b"MAIL", b"RSET"):
            self.reset()
            if b"bounce" in line:
                return b"550 sender refused"
        if verb == b"RCPT":
            if b"nobody" in line:
                return b"550 no such user"
            self.accepted += 1
        if verb == b"QUIT":
            return b"221 bye"
        return b"250 OK"


@asynccontextmanager
async def chunking_server(
    extensions: list[str], max_size: int | None = None
) -> AsyncIterator[tuple[int, Record]]:
    record = Record()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: ChunkingServer(extensions, record, max_size), "127.0.0.1", 0
    )
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


# -- BODY=BINARYMIME (RFC 3030): always by BDAT, the bytes exactly as given ------------

BINARY = ["BODY=BINARYMIME"]
FULL = ["PIPELINING", "CHUNKING", "BINARYMIME", "SIZE 1000000"]
# Everything DATA would rewrite: bare LF, bare CR, NUL, lines starting with a dot, a
# DATA terminator inside, 8-bit octets, and no final CRLF.
RAW = b"\x00\xffbinary\nbare LF\rbare CR\r\n.dot line\r\n.\r\n..\n.\r\x00tail"


def mail_parameters(record: Record) -> list[bytes]:
    """The parameters of the one MAIL command the server saw."""
    mails = [line for line in record["lines"] if line.upper().startswith(b"MAIL ")]
    assert len(mails) == 1, mails
    return mails[0].split()[2:]


def verbs(record: Record) -> list[bytes]:
    return [line.split(b" ", 1)[0].upper() for line in record["lines"]]


async def chunks_of(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.parametrize(
    "extensions",
    [["PIPELINING", "CHUNKING"], ["PIPELINING", "BINARYMIME"], ["PIPELINING", "SIZE 1000"]],
    ids=["no BINARYMIME", "no CHUNKING", "neither"],
)
async def test_binarymime_needs_binarymime_and_chunking(extensions: list[str]) -> None:
    async with chunking_server(extensions) as (port, record), client(port, chunking=True) as smtp:
        with pytest.raises(SMTPNotSupported, match="BINARYMIME"):
            await smtp.sendmail("a@example.com", ["b@example.com"], RAW, mail_options=BINARY)
        # Only the EHLO the client needed to learn the extensions went out.
        assert verbs(record) == [b"EHLO"]
        assert smtp.is_connected
        assert (await smtp.noop()).code == 250
    assert record["messages"] == []


@pytest.mark.parametrize("pipelining", [True, False])
async def test_binarymime_in_memory_goes_untouched_as_one_bdat_last(pipelining: bool) -> None:
    extensions = FULL if pipelining else ["CHUNKING", "BINARYMIME"]
    # chunking=False (the default): BINARYMIME goes by BDAT all the same.
    async with chunking_server(extensions) as (port, record), client(port) as smtp:
        await smtp.ehlo()
        reads_before = len(record["reads"])
        refused, reply = await smtp.sendmail(
            "a@example.com", ["b@example.com"], RAW, mail_options=BINARY
        )
        assert (refused, reply) == ({}, "chunks accepted")
        # With PIPELINING, MAIL, RCPT and BDAT with its data in a single read.
        assert len(record["reads"]) - reads_before == (1 if pipelining else 3)
    assert record["messages"] == [RAW]  # not normalised, not stuffed, not terminated
    assert record["chunks"] == []
    assert verbs(record) == [b"EHLO", b"MAIL", b"RCPT", b"BDAT", b"QUIT"]
    assert f"BDAT {len(RAW)} LAST".encode() in record["lines"]
    parameters = mail_parameters(record)
    assert b"BODY=BINARYMIME" in parameters
    # SIZE= is the exact octet count, sent only when the server offers SIZE.
    assert (f"SIZE={len(RAW)}".encode() in parameters) is pipelining
    assert any(p.startswith(b"SIZE=") for p in parameters) is pipelining


async def test_binarymime_empty_message_is_one_bdat_0_last() -> None:
    async with chunking_server(FULL) as (port, record), client(port) as smtp:
        await smtp.sendmail("a@example.com", ["b@example.com"], b"", mail_options=BINARY)
    assert record["messages"] == [b""]
    assert b"BDAT 0 LAST" in record["lines"]


def make_stream(kind: str, parts: list[bytes]) -> object:
    if kind == "async generator":
        return chunks_of(parts)
    if kind == "sync list":
        return list(parts)
    if kind == "sync generator":
        return (part for part in parts)
    return io.BytesIO(b"".join(parts))


# Bigger than the client's file read size, so a file object takes several reads.
BIG_PARTS = [random.Random(3030).randbytes(300_000), RAW, b"", random.Random(5).randbytes(9)]


@pytest.mark.parametrize("kind", ["async generator", "sync list", "sync generator", "file"])
async def test_binarymime_stream_goes_as_bdat_chunks_then_bdat_0_last(kind: str) -> None:
    whole = b"".join(BIG_PARTS)
    async with chunking_server(FULL) as (port, record), client(port) as smtp:
        await smtp.ehlo()
        refused, reply = await smtp.sendmail(
            "a@example.com",
            ["b@example.com", "c@example.com"],
            make_stream(kind, BIG_PARTS),  # type: ignore[arg-type]
            mail_options=BINARY,
        )
        assert (refused, reply) == ({}, "chunks accepted")
    assert record["messages"] == [whole]
    assert b"".join(record["chunks"]) == whole
    bdats = [line for line in record["lines"] if line.upper().startswith(b"BDAT")]
    assert bdats[-1] == b"BDAT 0 LAST"
    # One non-LAST BDAT per (non-empty) chunk, each announcing that chunk's size.
    assert bdats[:-1] == [b"BDAT %d" % len(chunk) for chunk in record["chunks"]]
    assert all(record["chunks"])
    if kind == "file":
        assert len(record["chunks"]) >= 2
    else:
        assert record["chunks"] == [part for part in BIG_PARTS if part]
    assert verbs(record) == [b"EHLO", b"MAIL", b"RCPT", b"RCPT", *[b"BDAT"] * len(bdats), b"QUIT"]
    assert b"BODY=BINARYMIME" in mail_parameters(record)


@pytest.mark.parametrize("pipelining", [True, False])
async def test_binarymime_stream_waits_for_each_chunk_reply(pipelining: bool) -> None:
    extensions = FULL if pipelining else ["CHUNKING", "BINARYMIME"]
    parts = [b"one\n", b".two\r", b"\x00three"]
    seen: list[int] = []  # chunks the server held each time the client asked for one

    async def watched() -> AsyncIterator[bytes]:
        # No await here: had the client not waited for the previous chunk's reply,
        # the server could not have read that chunk yet.
        for part in parts:
            seen.append(len(record["chunks"]))
            yield part
        seen.append(len(record["chunks"]))

    async with chunking_server(extensions) as (port, record), client(port) as smtp:
        await smtp.ehlo()
        reads_before = len(record["reads"])
        await smtp.sendmail("a@example.com", ["b@example.com"], watched(), mail_options=BINARY)
        envelope_reads = record["reads"][reads_before : reads_before + (1 if pipelining else 2)]
    assert seen == [0, 1, 2, 3]
    assert record["messages"] == [b"".join(parts)]
    assert record["replies"][-len(parts) - 2 : -1] == [
        b"250 4 octets received",
        b"250 5 octets received",
        b"250 6 octets received",
        b"250 chunks accepted",
    ]
    # The envelope went before any chunk: in one write with PIPELINING.
    assert b"".join(envelope_reads).count(b"\r\n") == 2
    assert b"BDAT" not in b"".join(envelope_reads)


@pytest.mark.parametrize("kind", ["bytes", "async generator"])
async def test_binarymime_refused_mail_stops_the_envelope(kind: str) -> None:
    message = RAW if kind == "bytes" else chunks_of([RAW])
    async with (
        chunking_server(["CHUNKING", "BINARYMIME"]) as (port, record),
        client(port) as smtp,
    ):
        await smtp.ehlo()
        with pytest.raises(SMTPSenderRefused) as caught:
            await smtp.sendmail(
                "bounce@example.com", ["b@example.com"], message, mail_options=BINARY
            )
        assert caught.value.code == 550
        assert (await smtp.noop()).code == 250
    # No RCPT and no BDAT after the refused MAIL; then the client's RSET.
    assert verbs(record) == [b"EHLO", b"MAIL", b"RSET", b"NOOP", b"QUIT"]
    assert record["messages"] == []


@pytest.mark.parametrize(
    ("pipelining", "kind"),
    [(False, "bytes"), (False, "async generator"), (True, "async generator")],
)
async def test_binarymime_all_recipients_refused_sends_no_bdat(pipelining: bool, kind: str) -> None:
    extensions = FULL if pipelining else ["CHUNKING", "BINARYMIME"]
    pulled: list[bytes] = []

    async def never_read() -> AsyncIterator[bytes]:
        pulled.append(RAW)
        yield RAW

    message = RAW if kind == "bytes" else never_read()
    async with chunking_server(extensions) as (port, record), client(port) as smtp:
        await smtp.ehlo()
        with pytest.raises(SMTPRecipientsRefused) as caught:
            await smtp.sendmail(
                "a@example.com",
                ["nobody@example.com", "nobody@example.org"],
                message,
                mail_options=BINARY,
            )
        assert [error.code for error in caught.value.recipients] == [550, 550]
        assert (await smtp.noop()).code == 250
    assert verbs(record) == [b"EHLO", b"MAIL", b"RCPT", b"RCPT", b"RSET", b"NOOP", b"QUIT"]
    assert pulled == []
    assert record["messages"] == []


async def test_binarymime_chunk_refused_midstream_raises_and_resets() -> None:
    pulled: list[bytes] = []

    async def producer() -> AsyncIterator[bytes]:
        for part in [b"12345678", b"9abcdefgh", b"never sent"]:
            pulled.append(part)
            yield part

    async with chunking_server(FULL, max_size=10) as (port, record), client(port) as smtp:
        await smtp.ehlo()
        with pytest.raises(SMTPDataError) as caught:
            await smtp.sendmail("a@example.com", ["b@example.com"], producer(), mail_options=BINARY)
        assert (caught.value.code, caught.value.message) == (552, "too big")
        assert smtp.is_connected
        assert (await smtp.noop()).code == 250
        # Still in step: the next message goes through.
        await smtp.sendmail("a@example.com", ["b@example.com"], b"short", mail_options=BINARY)
    assert pulled == [b"12345678", b"9abcdefgh"]  # no chunk after the refused one
    assert record["lines"][3:6] == [b"BDAT 8", b"BDAT 9", b"RSET"]
    assert b"BDAT 0 LAST" not in record["lines"]
    assert record["messages"] == [b"short"]


@pytest.mark.parametrize("kind", ["async generator", "sync generator", "file"])
async def test_binarymime_failing_stream_drops_the_connection(kind: str) -> None:
    first = b"first chunk\x00\n."

    async def async_source() -> AsyncIterator[bytes]:
        yield first
        raise OSError("disk gone")

    def sync_source() -> Iterator[bytes]:
        yield first
        raise OSError("disk gone")

    class FailingFile(io.BytesIO):
        def read(self, size: int | None = -1, /) -> bytes:
            if self.tell():
                raise OSError("disk gone")
            return super().read(size)

    source: object = {
        "async generator": async_source(),
        "sync generator": sync_source(),
        "file": FailingFile(first),
    }[kind]
    async with chunking_server(FULL) as (port, record), client(port) as smtp:
        await smtp.ehlo()
        with pytest.raises(OSError, match="disk gone"):
            await smtp.sendmail(
                "a@example.com",
                ["b@example.com"],
                source,  # type: ignore[arg-type]
                mail_options=BINARY,
            )
        assert not smtp.is_connected
        await asyncio.wait_for(record.closed.wait(), WAIT)
    assert record["chunks"] == [first]
    assert b"BDAT 0 LAST" not in record["lines"]
    assert verbs(record) == [b"EHLO", b"MAIL", b"RCPT", b"BDAT"]
    assert record["messages"] == []


async def test_lmtp_refuses_binarymime_before_mail_rather_than_lose_replies() -> None:
    # After BDAT LAST an LMTP server answers once per recipient; the LMTP client
    # does not send BINARYMIME at all rather than read only one of those replies.
    async with chunking_server(FULL) as (port, record):
        lmtp = LMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=WAIT)
        async with lmtp:
            with pytest.raises(SMTPNotSupported, match="LMTP"):
                await lmtp.sendmail(
                    "a@example.com", ["b@example.com", "c@example.com"], RAW, mail_options=BINARY
                )
            assert (await lmtp.noop()).code == 250
    assert b"MAIL" not in verbs(record)
    assert record["messages"] == []


async def test_send_message_keeps_the_callers_body_parameter_only() -> None:
    message = EmailMessage()
    message["From"] = "a@example.com"
    message["To"] = "b@example.com"
    message.set_content("caf\u00e9\n", cte="8bit")
    async with (
        chunking_server([*FULL, "8BITMIME"]) as (port, record),
        client(port) as smtp,
    ):
        await smtp.send_message(message, mail_options=["BODY=BINARYMIME"])
    bodies = [p for p in mail_parameters(record) if p.upper().startswith(b"BODY=")]
    assert bodies == [b"BODY=BINARYMIME"]
    assert len(record["messages"]) == 1
