"""A 1 GiB message streamed through ``smtpwire.client.SMTP`` in bounded memory.

The message (exactly 1024**3 octets of CRLF text lines, some starting with a dot,
one being a lone dot) comes from an async generator that builds it lazily, in
chunks of about 64 KiB cut without regard to line ends.  A minimal asyncio server
in the same event loop hashes the DATA section as it arrives, keeping none of it,
and finds the terminator across read boundaries.  The test proves that:

* the wire form is exactly right: the server's SHA-256 and octet count equal those
  of the expected dot-stuffed form (computed independently of the client's
  encoder), so a lost, repeated, reordered, unstuffed or cut chunk fails;
* the client streams: the peak of memory traced by ``tracemalloc`` (the client,
  the generator and the server together) stays under 32 MiB, so a client that
  buffered the message, or ran ahead of the socket, would fail.

The test is bounded by progress, not by the clock: a heavily loaded machine may
take minutes over the gigabyte, but the octets must keep moving (it fails after
``STALL`` seconds without a single new octet produced, received or hashed) and the
traced memory must never exceed the bound while it runs (it fails at once, rather
than after the whole gigabyte went into memory).  So it runs in a loop of its own
rather than under tests/conftest.py's 60 s per async test, with a pytest-timeout
backstop far above any machine that is merely slow.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import pytest

from smtpwire.client import SMTP

T = TypeVar("T")

GiB = 1024**3
BLOCK_SIZE = 1024 * 1024
BLOCKS = GiB // BLOCK_SIZE
CHUNK_SIZES = (65536, 65521, 65557, 65539)  # never aligned with lines or blocks
PEAK_LIMIT = 32 * 1024 * 1024
STALL = 30.0  # seconds without one octet of progress: the transfer is stuck
POLL = 0.5  # seconds between looks at the progress and the memory
BACKSTOP = 1800  # pytest-timeout's bound, for a wedge the watchdog cannot see
WAIT = 10.0


def block_lines() -> list[bytes]:
    """A block's body: lines of ordinary text, some starting with a dot (one a lone
    dot, one two dots), padded with a final line to exactly fill the block."""
    header_size = len(block_header(0))
    lines: list[bytes] = []
    size = header_size
    for number in itertools.count():
        line = b"line %06d: the quick brown fox jumps over the lazy dog\r\n" % number
        if number % 7 == 3:
            line = b"." + line
        elif number % 101 == 50:
            line = b".\r\n"
        elif number % 211 == 100:
            line = b"..\r\n"
        if size + len(line) + 100 > BLOCK_SIZE:
            break
        lines.append(line)
        size += len(line)
    lines.append(b"x" * (BLOCK_SIZE - size - 2) + b"\r\n")
    return lines


def block_header(index: int) -> bytes:
    return b"X-Block: %010d\r\n" % index


LINES = block_lines()
BODY = b"".join(LINES)
# The wire form, by a rule of its own: a dot opening a line gets another dot.
STUFFED_BODY = b"".join(b"." + line if line.startswith(b".") else line for line in LINES)
assert len(block_header(0)) + len(BODY) == BLOCK_SIZE


def expected_wire(hashed: list[int]) -> tuple[int, str]:
    """Octet count and SHA-256 of the DATA section the client must send;
    ``hashed[0]`` counts the blocks done (progress the watchdog can see)."""
    digest = hashlib.sha256()
    for index in range(BLOCKS):
        digest.update(block_header(index))
        digest.update(STUFFED_BODY)  # hashlib releases the GIL: this runs in a thread
        hashed[0] += 1
    digest.update(b".\r\n")
    return BLOCKS * (len(block_header(0)) + len(STUFFED_BODY)) + 3, digest.hexdigest()


@dataclass
class Produced:
    octets: int = 0
    chunks: int = 0
    largest: int = 0


async def message_chunks(produced: Produced) -> AsyncIterator[bytes]:
    """The 1 GiB message, built one 1 MiB block at a time and cut into ~64 KiB
    chunks: never more than a block and a chunk in memory."""
    sizes = itertools.cycle(CHUNK_SIZES)
    size = next(sizes)
    buffer, offset = b"", 0
    for index in range(BLOCKS):
        buffer = buffer[offset:] + block_header(index) + BODY
        offset = 0
        while len(buffer) - offset >= size:
            chunk = buffer[offset : offset + size]
            offset += size
            size = next(sizes)
            produced.octets += len(chunk)
            produced.chunks += 1
            produced.largest = max(produced.largest, len(chunk))
            yield chunk
    if offset < len(buffer):
        produced.octets += len(buffer) - offset
        produced.chunks += 1
        yield buffer[offset:]


class HashingServer(asyncio.Protocol):
    """220, EHLO (PIPELINING, 8BITMIME), 250 to MAIL/RCPT, 354 to DATA; then counts
    and hashes the DATA section without keeping it, until ``CRLF.CRLF`` (found
    across reads with a 4-octet tail), and answers 250."""

    def __init__(self, results: list[tuple[int, str]]) -> None:
        self.results = results
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.in_data = False
        self.digest = hashlib.sha256()
        self.octets = 0
        self.tail = b""
        self.hung_up = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(b"220 gigabyte sink ready\r\n")

    def data_received(self, data: bytes) -> None:
        if self.in_data:
            data = self.take_data(data)
        self.buffer += data
        while not self.in_data and not self.hung_up and b"\r\n" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\r\n")
            self.reply(self.answer(line))
            if self.in_data:
                self.buffer = self.take_data(self.buffer)

    def take_data(self, data: bytes) -> bytes:
        """Hash DATA octets; return what follows the terminator, if it came."""
        window = self.tail + data
        end = window.find(b"\r\n.\r\n")
        if end < 0:
            self.digest.update(data)
            self.octets += len(data)
            self.tail = window[-4:]
            return b""
        stop = end + 5 - len(self.tail)
        self.digest.update(data[:stop])
        self.octets += stop
        self.results.append((self.octets, self.digest.hexdigest()))
        self.reply(b"250 received %d octets" % self.octets)
        self.in_data = False
        return data[stop:]

    def answer(self, line: bytes) -> bytes:
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"EHLO":
            return b"250-gigabyte\r\n250-PIPELINING\r\n250 8BITMIME"
        if verb == b"DATA":
            self.in_data = True
            self.digest = hashlib.sha256()
            self.octets = 0
            self.tail = b"\r\n"  # the data starts at a line start
            return b"354 go ahead"
        if verb == b"QUIT":
            return b"221 bye"
        if verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
            return b"250 OK"
        # Message text read as commands (the data ended early): hang up at once.
        assert self.transport is not None
        self.transport.close()
        self.hung_up = True
        return b"500 unrecognised command"

    def reply(self, text: bytes) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(text + b"\r\n")


class Stalled(AssertionError):
    """The watchdog's verdict: no progress for STALL seconds, or memory over the bound."""


async def watched(
    work: Awaitable[T], progress: Callable[[], int], memory_limit: int | None = None
) -> T:
    """``work``'s result, however long it takes, as long as ``progress()`` keeps
    growing (at least once every STALL seconds) and, with ``memory_limit``, the
    memory traced by tracemalloc stays under it; otherwise ``work`` is cancelled
    and the test fails with what was seen."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    last, moved_at = progress(), loop.time()
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=POLL)
            if done:
                return task.result()
            if memory_limit is not None and tracemalloc.get_traced_memory()[0] > memory_limit:
                raise Stalled(f"traced memory over {memory_limit / 2**20:.1f} MiB while sending")
            now, seen = loop.time(), progress()
            if seen != last:
                last, moved_at = seen, now
            elif now - moved_at > STALL:
                raise Stalled(f"no progress for {STALL:.0f} s at {seen} octets")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=WAIT)


@pytest.mark.timeout(BACKSTOP)
def test_one_gibibyte_streams_exactly_in_bounded_memory() -> None:
    """Its own event loop (not an async test): tests/conftest.py bounds those by
    the clock, this one is bounded by progress."""
    asyncio.run(one_gibibyte())


async def one_gibibyte() -> None:
    results: list[tuple[int, str]] = []
    servers: list[HashingServer] = []

    def serve() -> HashingServer:
        servers.append(HashingServer(results))
        return servers[-1]

    def moved() -> int:
        """Octets produced by the generator plus octets the server has read."""
        return produced.octets + sum(server.octets for server in servers)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # Hashed in a thread while the message is sent (hashlib releases the GIL).
    hashed = [0]
    expected = asyncio.ensure_future(asyncio.to_thread(expected_wire, hashed))
    produced = Produced()
    tracemalloc.start()
    try:
        async with SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=120) as smtp:
            tracemalloc.reset_peak()
            baseline = tracemalloc.get_traced_memory()[0]
            refused, reply = await watched(
                smtp.sendmail("sender@example.com", ["rcpt@example.com"], message_chunks(produced)),
                moved,
                memory_limit=baseline + PEAK_LIMIT,
            )
            peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        server.close()
        await asyncio.wait_for(server.wait_closed(), WAIT)
    octets, digest = await watched(expected, lambda: hashed[0])

    assert (produced.octets, produced.largest) == (GiB, max(CHUNK_SIZES))
    assert produced.chunks > GiB // max(CHUNK_SIZES)
    assert refused == {}
    assert reply == f"received {octets} octets"
    assert results == [(octets, digest)]
    assert peak - baseline < PEAK_LIMIT, f"peak {(peak - baseline) / 2**20:.1f} MiB while sending"
