"""Receiving a message as it arrives (``handle_DATA_STREAM``), with the reading
paused while the handler falls behind; and the memory a message kept whole for
``handle_DATA`` costs.  Over real loopback sockets."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from smtpwire.client import SMTP as Client
from smtpwire.server.controller import Controller
from smtpwire.server.lmtp import LMTP
from smtpwire.server.streaming import BodyStream, MessageAborted
from support.server import WAIT, RawClient, greeted, serving, text

BARE_REFUSED = "550 5.5.2 Error: bare <CR> or <LF> in message data"
LINE = b"0123456789" * 99 + b"\r\n"  # 992 octets


def body_of(size: int) -> bytes:
    """Whole lines, about ``size`` octets."""
    return LINE * (size // len(LINE))


class StreamKeeper:
    """Streams each message into a hash; records what happened to it."""

    def __init__(self, reply: str | None = None, gate: asyncio.Event | None = None) -> None:
        self.reply = reply
        self.gate = gate
        self.delivered: list[bytes] = []  # whole bodies, for small messages
        self.digests: list[tuple[int, str]] = []
        self.aborted: list[str] = []
        self.largest_chunk = 0
        self.envelopes: list[Any] = []
        self.stream: BodyStream | None = None

    async def handle_DATA_STREAM(
        self, server: Any, session: Any, envelope: Any, body: BodyStream
    ) -> str | None:
        self.stream = body
        self.envelopes.append(envelope)
        if self.gate is not None:
            await self.gate.wait()
        digest = hashlib.sha256()
        kept = bytearray()
        size = 0
        try:
            async for chunk in body:
                self.largest_chunk = max(self.largest_chunk, len(chunk))
                digest.update(chunk)
                size += len(chunk)
                if len(kept) < 1 << 20:
                    kept += chunk
        except MessageAborted as aborted:
            self.aborted.append(aborted.reason)
            raise
        self.digests.append((size, digest.hexdigest()))
        self.delivered.append(bytes(kept))
        return self.reply


@contextmanager
def controller(handler: Any, **kwargs: Any) -> Iterator[Controller]:
    server = Controller(handler, hostname="127.0.0.1", port=0, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def send_data(client: RawClient, body: bytes) -> str:
    assert client.command("MAIL FROM:<a@example.com>").code == 250
    assert client.command("RCPT TO:<b@example.com>").code == 250
    assert client.command("DATA").code == 354
    client.send(body + b".\r\n")
    return text(client.reply())


# --- DATA ----------------------------------------------------------------------------------


def test_data_is_streamed_unstuffed_and_the_hooks_reply_is_sent() -> None:
    handler = StreamKeeper(reply="250 2.0.0 stored")
    with controller(handler) as server, greeted(server.port) as client:
        assert send_data(client, b"Subject: s\r\n\r\n..dot\r\nend\r\n") == "250 2.0.0 stored"
        assert send_data(client, b"second\r\n") == "250 2.0.0 stored"
    assert handler.delivered == [b"Subject: s\r\n\r\n.dot\r\nend\r\n", b"second\r\n"]
    assert handler.envelopes[0].content is None
    assert handler.envelopes[0].mail_from == "a@example.com"


def test_a_hook_returning_nothing_means_250_ok() -> None:
    handler = StreamKeeper(reply=None)
    with controller(handler) as server, greeted(server.port) as client:
        assert send_data(client, b"x\r\n") == "250 OK"


async def test_a_large_message_arrives_whole_in_bounded_chunks() -> None:
    handler = StreamKeeper()
    message = body_of(8 * 1024 * 1024)
    with controller(handler) as server:
        async with Client(hostname="127.0.0.1", port=server.port) as client:
            await client.sendmail("a@example.com", ["b@example.com"], message)
    assert handler.digests == [(len(message), hashlib.sha256(message).hexdigest())]
    assert handler.largest_chunk <= 1024 * 1024


def test_reading_pauses_while_the_hook_falls_behind() -> None:
    gate = asyncio.Event()
    handler = StreamKeeper(gate=gate)
    message = body_of(32 * 1024 * 1024)  # far more than socket buffers hold
    server = RecordingController(handler, hostname="127.0.0.1", port=0, data_size_limit=0)
    server.start()
    with greeted(server.port) as client:
        assert client.command("MAIL FROM:<a@example.com>").code == 250
        assert client.command("RCPT TO:<b@example.com>").code == 250
        assert client.command("DATA").code == 354
        # sendall's timeout covers the whole message, held back while the hook waits:
        # give it room on a slow machine (still bounded).
        client.sock.settimeout(WAIT * 6)
        sent = threading.Event()
        sender = threading.Thread(
            target=lambda: (client.send(message + b".\r\n"), sent.set()), daemon=True
        )
        sender.start()
        try:
            protocol = _wait_for_paused_reading(server)
            # Paused with the hook not reading at all: the server holds a bounded amount.
            assert protocol._inbound.pending <= 1024 * 1024
            assert handler.stream is not None
            assert handler.stream._buffered <= 1024 * 1024
            assert not sent.is_set()  # the client is held back by TCP flow control
            server.loop.call_soon_threadsafe(gate.set)
            assert text(client.reply()) == "250 OK"
            sender.join(WAIT)
        finally:
            server.stop()
    assert handler.digests == [(len(message), hashlib.sha256(message).hexdigest())]


class RecordingController(Controller):
    """Keeps the protocol of every connection, to look at its flow control."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.made: list[Any] = []

    def factory(self) -> Any:
        protocol = super().factory()
        self.made.append(protocol)
        return protocol


def _wait_for_paused_reading(server: RecordingController) -> Any:
    """The server-side protocol, once it has paused reading (bounded poll)."""
    _wait_until(
        lambda: any(protocol._reading_paused for protocol in server.made),
        "the server never paused reading",
    )
    return server.made[0]


@pytest.mark.parametrize(
    ("kwargs", "body", "reply"),
    [
        ({"data_size_limit": 10_000}, body_of(50_000), "552 Error: Too much mail data"),
        ({}, b"x" * 2000 + b"\r\n", "500 Line too long (see RFC5321 4.5.3.1.6)"),
        (
            {"bare_lf": "reject"},
            b"a\r\nb\nc\r\n",
            "550 5.5.2 Error: bare <CR> or <LF> in message data",
        ),
    ],
    ids=["too-large", "line-too-long", "bare-lf"],
)
def test_a_refused_message_aborts_the_stream_and_the_server_replies(
    kwargs: dict[str, Any], body: bytes, reply: str
) -> None:
    handler = StreamKeeper()
    with controller(handler, **kwargs) as server, greeted(server.port) as client:
        assert send_data(client, body) == reply
        assert len(handler.aborted) == 1  # the hook was told before the reply went out
        assert send_data(client, b"fine\r\n") == "250 OK"
    assert handler.delivered == [b"fine\r\n"]


def test_connection_lost_mid_data_aborts_the_stream() -> None:
    handler = StreamKeeper()
    with controller(handler) as server:
        with greeted(server.port) as client:
            assert client.command("MAIL FROM:<a@example.com>").code == 250
            assert client.command("RCPT TO:<b@example.com>").code == 250
            assert client.command("DATA").code == 354
            client.send(body_of(300_000))
        _wait_until(lambda: handler.aborted, "the stream was never aborted")
    assert handler.aborted == ["connection lost"]
    assert handler.delivered == []


def test_a_hook_refusing_early_gets_its_reply_after_the_whole_message() -> None:
    class Refuser:
        async def handle_DATA_STREAM(
            self, server: Any, session: Any, envelope: Any, body: BodyStream
        ) -> str:
            await body.__anext__()
            return "554 5.7.1 Not wanted"

    with controller(Refuser()) as server, greeted(server.port) as client:
        assert send_data(client, body_of(2_000_000)) == "554 5.7.1 Not wanted"
        assert text(client.command("NOOP")) == "250 OK"


def test_a_failing_hook_gets_an_error_reply_and_the_session_goes_on() -> None:
    class Failing:
        async def handle_DATA_STREAM(
            self, server: Any, session: Any, envelope: Any, body: BodyStream
        ) -> str:
            raise RuntimeError("disk full")

    with controller(Failing()) as server, greeted(server.port) as client:
        assert send_data(client, b"x\r\n") == "500 Error: (RuntimeError) disk full"
        assert text(client.command("NOOP")) == "250 OK"


def test_body_read_returns_the_whole_message() -> None:
    class Reader:
        messages: list[bytes] = []  # noqa: RUF012

        async def handle_DATA_STREAM(
            self, server: Any, session: Any, envelope: Any, body: BodyStream
        ) -> None:
            self.messages.append(await body.read())

    handler = Reader()
    with controller(handler) as server, greeted(server.port) as client:
        assert send_data(client, b"a\r\nb\r\n") == "250 OK"
    assert handler.messages == [b"a\r\nb\r\n"]


# --- BDAT ----------------------------------------------------------------------------------


def bdat(chunk: bytes, *, last: bool = False) -> bytes:
    return f"BDAT {len(chunk)}{' LAST' if last else ''}\r\n".encode() + chunk


def test_a_bdat_transaction_is_one_stream() -> None:
    handler = StreamKeeper()
    with controller(handler, chunking=True) as server, greeted(server.port) as client:
        client.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\n")
        assert [reply.code for reply in client.replies(2)] == [250, 250]
        client.send(bdat(b"one\r\n") + bdat(b"two\r") + bdat(b"\nthree\r\n", last=True))
        assert [text(reply) for reply in client.replies(3)] == [
            "250 OK 5 octets received",
            "250 OK 4 octets received",
            "250 OK",
        ]
    assert handler.delivered == [b"one\r\ntwo\r\nthree\r\n"]


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"a\r", b"\nb\r"], b"a\r\nb\r\n"),
        ([b"a\n", b"b\rc\r\n"], b"a\r\nb\r\nc\r\n"),
    ],
)
def test_bdat_normalize_works_across_chunk_boundaries(chunks: list[bytes], expected: bytes) -> None:
    handler = StreamKeeper()
    with (
        controller(handler, chunking=True, bare_lf="normalize") as server,
        greeted(server.port) as client,
    ):
        client.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\n")
        client.replies(2)
        wire = b"".join(
            bdat(chunk, last=index == len(chunks) - 1) for index, chunk in enumerate(chunks)
        )
        client.send(wire)
        assert text(client.replies(len(chunks))[-1]) == "250 OK"
    assert handler.delivered == [expected]


def test_rset_between_bdat_chunks_aborts_the_stream() -> None:
    handler = StreamKeeper()
    with controller(handler, chunking=True) as server, greeted(server.port) as client:
        client.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\n" + bdat(b"partial\r\n"))
        assert [reply.code for reply in client.replies(3)] == [250, 250, 250]
        assert text(client.command("RSET")) == "250 OK"
        _wait_until(lambda: handler.aborted, "the stream was never aborted")
    assert handler.delivered == []


def test_a_bare_lf_in_a_bdat_chunk_under_reject_aborts_at_once() -> None:
    handler = StreamKeeper()
    with (
        controller(handler, chunking=True, bare_lf="reject") as server,
        greeted(server.port) as client,
    ):
        client.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\n" + bdat(b"bare\nlf"))
        assert [reply.code for reply in client.replies(3)] == [250, 250, 250]
        _wait_until(lambda: handler.aborted, "the stream was not aborted at the bad chunk")
        client.send(bdat(b"more\r\n", last=True))
        assert text(client.reply()) == BARE_REFUSED
    assert handler.delivered == []


async def test_the_client_streams_a_binarymime_file_by_bdat_into_the_hook() -> None:
    handler = StreamKeeper()
    payload = bytes(range(256)) * 40_000  # NULs, bare CR and LF: binary
    with controller(handler, modern=True) as server:
        async with Client(hostname="127.0.0.1", port=server.port) as client:
            await client.sendmail(
                "a@example.com", ["b@example.com"], payload, mail_options=["BODY=BINARYMIME"]
            )
    assert handler.digests == [(len(payload), hashlib.sha256(payload).hexdigest())]


# --- LMTP --------------------------------------------------------------------------------


def test_lmtp_streaming_hook_answers_per_recipient() -> None:
    class PerRecipient:
        async def handle_DATA_STREAM(
            self, server: Any, session: Any, envelope: Any, body: BodyStream
        ) -> list[str]:
            await body.read()
            return ["250 2.1.5 first", "452 4.2.2 second is full"]

    with serving(lambda: LMTP(PerRecipient())) as server, RawClient(server.port) as client:
        assert client.reply().code == 220
        assert client.command("LHLO x").code == 250
        client.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nRCPT TO:<c@x>\r\nDATA\r\n")
        assert [reply.code for reply in client.replies(4)] == [250, 250, 250, 354]
        client.send(b"x\r\n.\r\n")
        assert [text(reply) for reply in client.replies(2)] == [
            "250 2.1.5 first",
            "452 4.2.2 second is full",
        ]


# --- memory ------------------------------------------------------------------------------


class WholeKeeper:
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.peak_in_hook = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.sizes.append(len(envelope.content))
        self.peak_in_hook = tracemalloc.get_traced_memory()[1]
        return "250 OK"


class Hasher:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0

    async def handle_DATA_STREAM(
        self, server: Any, session: Any, envelope: Any, body: BodyStream
    ) -> None:
        async for chunk in body:
            self.digest.update(chunk)
            self.size += len(chunk)


def _peak_growth_receiving(handler: Any, message: bytes) -> int:
    """Peak traced memory above the level before the message, while the server
    (in this process) receives it."""
    wire = message + b".\r\n"
    with controller(handler, data_size_limit=0) as server, greeted(server.port) as client:
        assert client.command("MAIL FROM:<a@example.com>").code == 250
        assert client.command("RCPT TO:<b@example.com>").code == 250
        assert client.command("DATA").code == 354
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            client.send(wire)
            reply = text(client.reply())
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert reply == "250 OK"
    return peak - baseline


def test_handle_data_peak_memory_stays_within_1_2_times_the_message() -> None:
    message = body_of(48 * 1024 * 1024)
    handler = WholeKeeper()
    growth = _peak_growth_receiving(handler, message)
    assert handler.sizes == [len(message)]
    assert growth <= 1.2 * len(message), growth / len(message)


def test_streaming_peak_memory_is_a_few_chunks_whatever_the_size() -> None:
    message = body_of(128 * 1024 * 1024)
    handler = Hasher()
    growth = _peak_growth_receiving(handler, message)
    assert (handler.size, handler.digest.hexdigest()) == (
        len(message),
        hashlib.sha256(message).hexdigest(),
    )
    assert growth <= 8 * 1024 * 1024, growth


def _wait_until(condition: Any, failure: str) -> None:
    for _ in range(200):
        if condition():
            return
        threading.Event().wait(0.05)
    raise AssertionError(failure)
