"""Messages given as streams: file objects (``io.BytesIO``, a real file), sync
iterables and async generators of byte chunks.  Whatever the chunking, the server
must receive exactly the CRLF-normalised, unstuffed content; a 50 MiB message
arrives whole; a stream that fails halfway delivers nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from smtpwire.server.smtp import SMTP as ServerSMTP
from support.client_harness import make_client
from support.server import ServerThread, serving

HOST = "testhost"
WAIT = 10.0
MiB = 1024 * 1024

# Every awkward place: a CRLF split across chunks, a bare CR at a chunk's end then
# a LF opening the next (one line ending, not two), dots at line starts that fall on
# a chunk boundary, a bare LF before a dot, and no final line ending.
AWKWARD_CHUNKS = [
    b"Subject: streamed\r",
    b"\n\r\n",
    b".starts with a dot\r\nsplit CRLF\r",
    b"\n",
    b".",
    b"dot at chunk start\nbare LF\n",
    b"..two dots\rbare CR\r",
    b"\n",
    b".\n",
    b"last line without ending",
]
AWKWARD_DELIVERED = (
    b"Subject: streamed\r\n\r\n.starts with a dot\r\nsplit CRLF\r\n.dot at chunk start\r\n"
    b"bare LF\r\n..two dots\r\nbare CR\r\n.\r\nlast line without ending\r\n"
)
AWKWARD_ON_THE_WIRE = (
    b"Subject: streamed\r\n\r\n..starts with a dot\r\nsplit CRLF\r\n..dot at chunk start\r\n"
    b"bare LF\r\n...two dots\r\nbare CR\r\n..\r\nlast line without ending\r\n.\r\n"
)


class Sink:
    def __init__(self) -> None:
        self.messages: list[tuple[str | None, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        return "250 OK"


class RecordingServer(ServerSMTP):
    """Keeps every chunk received and notes when the connection ends."""

    def __init__(self, *args: Any, closed: threading.Event | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[bytes] = []
        self.closed = closed

    def data_received(self, data: bytes) -> None:
        self.received.append(bytes(data))
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.closed is not None:
            self.closed.set()


class PipeliningServer(RecordingServer):
    def _ehlo_lines(self) -> list[str]:
        return [*super()._ehlo_lines(), "250-PIPELINING"]


@contextmanager
def smtp_server(
    sink: Sink, server_class: type[RecordingServer] = RecordingServer, **kwargs: Any
) -> Iterator[ServerThread]:
    kwargs.setdefault("hostname", HOST)
    with serving(lambda: server_class(sink, **kwargs)) as server:
        yield server


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def server(sink: Sink) -> Iterator[ServerThread]:
    with smtp_server(sink) as running:
        yield running


def wire(server: ServerThread, index: int = 0) -> bytes:
    return b"".join(server.call(lambda: list(server.protocols[index].received)))


async def agen(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)  # a real producer yields to the loop between chunks
        yield chunk


async def send_stream(server: ServerThread, source: Any) -> tuple[dict[str, Any], str]:
    client = make_client(server)
    async with client:
        return await client.sendmail("a@example.com", ["b@example.com"], source)


# --- each kind of source ------------------------------------------------------------------------


async def test_bytesio(server: ServerThread, sink: Sink) -> None:
    result = await send_stream(server, io.BytesIO(b"".join(AWKWARD_CHUNKS)))
    assert result == ({}, "OK")
    assert sink.messages == [("a@example.com", ["b@example.com"], AWKWARD_DELIVERED)]


async def test_real_file(server: ServerThread, sink: Sink, tmp_path: Path) -> None:
    path = tmp_path / "message.eml"
    path.write_bytes(b"".join(AWKWARD_CHUNKS))
    with path.open("rb") as file:
        assert await send_stream(server, file) == ({}, "OK")
    assert sink.messages == [("a@example.com", ["b@example.com"], AWKWARD_DELIVERED)]


async def test_real_file_larger_than_one_read(
    server: ServerThread, sink: Sink, tmp_path: Path
) -> None:
    line = b".%06d a line that starts with a dot\n"
    content = b"".join(line % n for n in range(40_000))  # > 1 MiB, several reads
    path = tmp_path / "big.eml"
    path.write_bytes(content)
    with path.open("rb") as file:
        await send_stream(server, file)
    assert sink.messages[0][2] == content.replace(b"\n", b"\r\n")


async def test_sync_iterable(server: ServerThread, sink: Sink) -> None:
    assert await send_stream(server, list(AWKWARD_CHUNKS)) == ({}, "OK")
    assert sink.messages == [("a@example.com", ["b@example.com"], AWKWARD_DELIVERED)]


async def test_sync_generator(server: ServerThread, sink: Sink) -> None:
    assert await send_stream(server, (chunk for chunk in AWKWARD_CHUNKS)) == ({}, "OK")
    assert sink.messages == [("a@example.com", ["b@example.com"], AWKWARD_DELIVERED)]


async def test_async_generator(server: ServerThread, sink: Sink) -> None:
    assert await send_stream(server, agen(AWKWARD_CHUNKS)) == ({}, "OK")
    assert sink.messages == [("a@example.com", ["b@example.com"], AWKWARD_DELIVERED)]


async def test_one_byte_chunks(server: ServerThread, sink: Sink) -> None:
    content = b"".join(AWKWARD_CHUNKS)
    await send_stream(server, agen(content[i : i + 1] for i in range(len(content))))
    assert sink.messages == [("a@example.com", ["b@example.com"], AWKWARD_DELIVERED)]


async def test_stream_is_dot_stuffed_on_the_wire(server: ServerThread, sink: Sink) -> None:
    await send_stream(server, agen(AWKWARD_CHUNKS))
    data = wire(server)
    start = data.index(b"DATA\r\n") + len(b"DATA\r\n")
    assert data[start:].startswith(AWKWARD_ON_THE_WIRE)


async def test_empty_stream(server: ServerThread, sink: Sink) -> None:
    await send_stream(server, agen([]))
    await send_stream(server, io.BytesIO(b""))
    assert [m[2] for m in sink.messages] == [b"\r\n", b"\r\n"]  # as a b"" message


async def test_data_with_a_stream(server: ServerThread, sink: Sink) -> None:
    client = make_client(server)
    async with client:
        await client.mail("a@example.com")
        await client.rcpt("b@example.com")
        assert await client.data(agen(AWKWARD_CHUNKS)) == (250, "OK")
    assert sink.messages == [("a@example.com", ["b@example.com"], AWKWARD_DELIVERED)]


async def test_stream_through_a_pipelining_server(sink: Sink) -> None:
    with smtp_server(sink, PipeliningServer) as server:
        client = make_client(server)
        async with client:
            for _ in range(2):
                await client.sendmail(
                    "a@example.com", ["b@example.com", "c@example.com"], agen(AWKWARD_CHUNKS)
                )
    assert (
        sink.messages
        == [("a@example.com", ["b@example.com", "c@example.com"], AWKWARD_DELIVERED)] * 2
    )


async def test_several_streams_on_one_connection(server: ServerThread, sink: Sink) -> None:
    client = make_client(server)
    async with client:
        await client.sendmail("a@example.com", ["b@example.com"], io.BytesIO(b"one"))
        await client.sendmail("a@example.com", ["b@example.com"], [b"tw", b"o\n"])
        await client.sendmail("a@example.com", ["b@example.com"], agen([b"three\r"]))
        await client.sendmail("a@example.com", ["b@example.com"], b"four")
    assert [m[2] for m in sink.messages] == [b"one\r\n", b"two\r\n", b"three\r\n", b"four\r\n"]
    assert len(server.protocols) == 1


# --- big -----------------------------------------------------------------------------------------


def big_message(total: int) -> Iterator[bytes]:
    """``total`` octets of 100-octet CRLF lines (every 100th starting with a dot),
    cut into chunks whose size never lines up with the lines."""
    block = b"".join(
        (b"." if n % 100 == 0 else b"L") + b"%08d " % n + b"x" * 88 + b"\r\n" for n in range(1000)
    )
    assert len(block) == 100_000
    buffer = block * (total // len(block) + 1)
    step = 65_521  # prime
    view = memoryview(buffer)[:total]
    for start in range(0, total, step):
        yield bytes(view[start : start + step])


async def test_fifty_mebibytes_via_an_async_generator(sink: Sink) -> None:
    total = 50 * MiB
    total -= total % 100  # whole lines, so nothing is added at the end
    expected = hashlib.sha256()
    for chunk in big_message(total):
        expected.update(chunk)
    with smtp_server(sink, data_size_limit=64 * MiB) as server:
        client = make_client(server, timeout=60)
        async with client:
            result = await client.sendmail(
                "a@example.com", ["b@example.com"], agen(big_message(total))
            )
        assert result == ({}, "OK")
    assert len(sink.messages) == 1
    content = sink.messages[0][2]
    assert len(content) == total
    assert hashlib.sha256(content).hexdigest() == expected.hexdigest()


# --- failures --------------------------------------------------------------------------------


async def test_stream_failing_halfway_delivers_nothing(sink: Sink) -> None:
    closed = threading.Event()

    async def failing() -> AsyncIterator[bytes]:
        yield b"Subject: half\r\n\r\nfirst part\r\n"
        raise RuntimeError("the producer broke")

    with smtp_server(sink, closed=closed) as server:
        client = make_client(server)
        await client.connect()
        with pytest.raises(RuntimeError, match="the producer broke"):
            await client.sendmail("a@example.com", ["b@example.com"], failing())
        # Half a message is on the wire: the connection cannot be used again.
        assert not client.is_connected
        assert await asyncio.to_thread(closed.wait, WAIT)
        assert b"first part" in wire(server)
        # A new connection works.
        await client.connect()
        await client.sendmail("a@example.com", ["b@example.com"], b"whole\r\n")
        await client.quit()
    assert sink.messages == [("a@example.com", ["b@example.com"], b"whole\r\n")]


async def test_unsendable_message_type_is_refused_before_anything_is_written(
    server: ServerThread, sink: Sink
) -> None:
    client = make_client(server)
    async with client:
        with pytest.raises(TypeError):
            await client.sendmail("a@example.com", ["b@example.com"], 42)  # type: ignore[arg-type]
        assert client.is_connected
        assert b"MAIL" not in wire(server)
        await client.sendmail("a@example.com", ["b@example.com"], b"fine\r\n")
    assert [m[2] for m in sink.messages] == [b"fine\r\n"]
