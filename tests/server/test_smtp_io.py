"""The server's I/O: batched replies to pipelined commands, input split anywhere,
the idle timer, flow control in both directions, half-closed connections and IPv6.
"""

from __future__ import annotations

import asyncio
import itertools
import select
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpwire.common.replies import ReplyParser
from smtpwire.server.smtp import SMTP
from support.server import (
    WAIT,
    Delivered,
    RawClient,
    Recorder,
    ServerThread,
    read_until_eof,
    serving,
    text,
)

HOST = "testhost"
GREETING = f"220 {HOST} Python SMTP 1.4.6"
GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"
TIMED_OUT = f"421 4.4.2 {HOST} Error: timeout exceeded"
IDLE_TIMEOUT = 0.5


# --- helpers -----------------------------------------------------------------------------


class RecordingTransport:
    """Stands in for a connection's transport, recording its writes and read pauses.

    A wrapper rather than replaced methods: uvloop's transports (``nox -s
    tests_uvloop``), unlike asyncio's, do not let their attributes be assigned."""

    def __init__(self, transport: asyncio.BaseTransport, owner: InstrumentedSMTP) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._owner = owner

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._owner.writes.append(bytes(data))
        self._transport.write(data)

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(chunks))

    def pause_reading(self) -> None:
        self._owner.reading_paused.set()
        self._transport.pause_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class InstrumentedSMTP(SMTP):
    """Records every transport write and flow-control event of its connection."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.writes: list[bytes] = []
        self.reading_paused = threading.Event()
        self.writing_paused = threading.Event()
        self.peak_buffered = 0
        super().connection_made(cast(asyncio.Transport, RecordingTransport(transport, self)))

    def pause_writing(self) -> None:
        self.writing_paused.set()
        super().pause_writing()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.peak_buffered = max(self.peak_buffered, self._inbound.buffered)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def server(recorder: Recorder) -> Iterator[ServerThread]:
    with serving(lambda: InstrumentedSMTP(recorder, hostname=HOST)) as running:
        yield running


def connect(server: ServerThread, host: str = "127.0.0.1") -> RawClient:
    client = RawClient(server.port, host)
    assert text(client.reply()) == GREETING
    return client


def wait_for_sessions(server: ServerThread) -> None:
    """Wait (bounded) for every connection task to end; each must end cleanly."""

    async def outcome() -> list[str]:
        tasks = [p._handler_coroutine for p in server.protocols]
        _, pending = await asyncio.wait(tasks, timeout=WAIT)
        assert not pending, f"{len(pending)} connection task(s) still running"
        return [
            "cancelled" if task.cancelled() else repr(task.exception())
            for task in tasks
            if task.cancelled() or task.exception() is not None
        ]

    failures = asyncio.run_coroutine_threadsafe(outcome(), server.loop).result(WAIT + 1)
    assert failures == []
    assert server.tasks_pending() == 0


def nothing_arrives(sock: socket.socket, seconds: float) -> bool:
    """Wait up to ``seconds`` for the server to send something; True if it did not."""
    readable, _, _ = select.select([sock], [], [], seconds)
    return not readable


def ehlo_reply() -> bytes:
    lines = [f"250-{HOST}", "250-SIZE 33554432", "250-8BITMIME", "250 HELP"]
    return "".join(line + "\r\n" for line in lines).encode()


# --- pipelining ----------------------------------------------------------------------------


def test_pipelined_replies_leave_in_one_write(server: ServerThread) -> None:
    with connect(server) as client:
        client.send(
            b"EHLO client.example\r\n"
            b"MAIL FROM:<a@example.com>\r\n"
            b"RCPT TO:<b@example.org>\r\n"
            b"RCPT TO:<c@example.org>\r\n"
            b"RCPT TO:<d@example.org>\r\n"
            b"DATA\r\n"
        )
        replies = client.replies(6)
        assert [reply.code for reply in replies] == [250, 250, 250, 250, 250, 354]
        assert replies[0].lines == (HOST, "SIZE 33554432", "8BITMIME", "HELP")
        assert text(replies[-1]) == GO_AHEAD
        writes = server.call(lambda: list(server.protocols[0].writes))
    assert writes[0] == GREETING.encode() + b"\r\n"
    before_354 = ehlo_reply() + b"250 OK\r\n" * 4
    # One write carries every reply before the 354 (RFC 2920 section 3.2).
    assert writes[1].startswith(before_354), writes
    assert b"".join(writes[1:]) == before_354 + GO_AHEAD.encode() + b"\r\n"


def test_lock_step_client_gets_each_reply_in_its_own_write(server: ServerThread) -> None:
    with connect(server) as client:
        assert client.command("EHLO client.example").code == 250
        assert text(client.command("MAIL FROM:<a@example.com>")) == "250 OK"
        assert text(client.command("RCPT TO:<b@example.org>")) == "250 OK"
        assert text(client.command("NOOP")) == "250 OK"
        writes = server.call(lambda: list(server.protocols[0].writes))
    assert writes == [
        GREETING.encode() + b"\r\n",
        ehlo_reply(),
        b"250 OK\r\n",
        b"250 OK\r\n",
        b"250 OK\r\n",
    ]


def test_reply_is_not_held_back_for_a_partial_next_command(server: ServerThread) -> None:
    with connect(server) as client:
        # The reply to the complete NOOP must come before the next line is complete.
        client.send(b"NOOP\r\nNOO")
        assert text(client.reply()) == "250 OK"
        client.send(b"P\r\nRS")
        assert text(client.reply()) == "250 OK"
        client.send(b"ET\r\n")
        assert text(client.reply()) == "250 OK"


def test_reply_is_not_held_back_for_a_partial_message(
    server: ServerThread, recorder: Recorder
) -> None:
    with connect(server) as client:
        client.send(b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n")
        client.send(b"DATA\r\nSubject: early\r\n\r\nstart of body")
        assert [reply.code for reply in client.replies(4)] == [250, 250, 250, 354]
        client.send(b"\r\n.\r\n")
        assert text(client.reply()) == "250 OK"
    assert [m.content for m in recorder.messages] == [b"Subject: early\r\n\r\nstart of body\r\n"]


def test_commands_after_terminator_in_same_packet(server: ServerThread, recorder: Recorder) -> None:
    with connect(server) as client:
        client.send(b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n")
        assert [reply.code for reply in client.replies(3)] == [250, 250, 250]
        assert text(client.command("DATA")) == GO_AHEAD
        client.send(
            b"Subject: one\r\n\r\nfirst\r\n.\r\n"
            b"MAIL FROM:<x@example.com>\r\n"
            b"RCPT TO:<y@example.org>\r\n"
            b"DATA\r\n"
            b"Subject: two\r\n\r\n..second\r\n.\r\n"
            b"QUIT\r\n"
        )
        replies = [text(reply) for reply in client.replies(6)]
        assert replies == ["250 OK", "250 OK", "250 OK", GO_AHEAD, "250 OK", "221 Bye"]
        assert client.closed_by_server()
    assert recorder.messages == [
        Delivered("a@example.com", ("b@example.org",), b"Subject: one\r\n\r\nfirst\r\n"),
        Delivered("x@example.com", ("y@example.org",), b"Subject: two\r\n\r\n.second\r\n"),
    ]


SESSION = (
    b"EHLO client.example\r\n"
    b"MAIL FROM:<a@example.com>\r\n"
    b"RCPT TO:<b@example.org>\r\n"
    b"RCPT TO:<c@example.org>\r\n"
    b"DATA\r\n"
    b"Subject: split\r\n"
    b"\r\n"
    b"..leading dot\r\n"
    b"...\r\n"
    b"not the end: \r\n.x\r\n"
    b"bare\nlf and bare\rcr\r\n"
    b"\r\n.\r\n"
    b"MAIL FROM:<>\r\n"
    b"RCPT TO:<d@example.org>\r\n"
    b"DATA\r\n"
    b".\r\n"
    b"QUIT\r\n"
)
SESSION_MESSAGES = [
    Delivered(
        "a@example.com",
        ("b@example.org", "c@example.org"),
        b"Subject: split\r\n\r\n.leading dot\r\n..\r\nnot the end: \r\nx\r\n"
        b"bare\nlf and bare\rcr\r\n\r\n",
    ),
    Delivered("<>", ("d@example.org",), b""),
]
SESSION_REPLIES = [
    f"250-{HOST}\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n250 HELP",
    "250 OK",
    "250 OK",
    "250 OK",
    GO_AHEAD,
    "250 OK",
    "250 OK",
    "250 OK",
    GO_AHEAD,
    "250 OK",
    "221 Bye",
]


def run_session(server: ServerThread, chunks: list[bytes]) -> list[str]:
    """Send the chunks (one send each, Nagle off) and return the replies up to EOF."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for chunk in chunks:
            sock.sendall(chunk)
        received = read_until_eof(sock)
    replies = ReplyParser().feed(received)
    assert text(replies[0]) == GREETING
    return [reply.to_bytes().decode().removesuffix("\r\n") for reply in replies[1:]]


def test_session_in_one_write(server: ServerThread, recorder: Recorder) -> None:
    assert run_session(server, [SESSION]) == SESSION_REPLIES
    assert recorder.messages == SESSION_MESSAGES


def test_session_in_one_byte_chunks(server: ServerThread, recorder: Recorder) -> None:
    chunks = [SESSION[index : index + 1] for index in range(len(SESSION))]
    assert run_session(server, chunks) == SESSION_REPLIES
    assert recorder.messages == SESSION_MESSAGES
    wait_for_sessions(server)


def test_random_splits_give_same_replies_and_content() -> None:
    recorder = Recorder()
    with serving(lambda: SMTP(recorder, hostname=HOST)) as server:
        baseline = run_session(server, [SESSION])
        assert recorder.messages == SESSION_MESSAGES

        @settings(max_examples=30, deadline=None)
        @given(
            cuts=st.lists(st.integers(1, len(SESSION) - 1), unique=True, max_size=40).map(sorted)
        )
        def check(cuts: list[int]) -> None:
            recorder.messages.clear()
            bounds = [0, *cuts, len(SESSION)]
            chunks = [SESSION[start:end] for start, end in itertools.pairwise(bounds)]
            assert run_session(server, chunks) == baseline
            assert recorder.messages == SESSION_MESSAGES

        check()
        wait_for_sessions(server)


# --- the idle timer ------------------------------------------------------------------------


@contextmanager
def timed_server(handler: Any, timeout: float = IDLE_TIMEOUT) -> Iterator[ServerThread]:
    with serving(lambda: InstrumentedSMTP(handler, hostname=HOST, timeout=timeout)) as server:
        yield server


def wait_for_idle_clock(seconds: float) -> None:
    """Block until an idle SMTP connection with a ``seconds`` timeout is cut off:
    a clock made of the server's own timer, waited for as an event."""
    with timed_server(Recorder(), seconds) as clock, connect(clock) as witness:
        assert text(witness.reply()) == f"421 4.4.2 {HOST} Error: timeout exceeded"


def test_idle_client_is_told_and_closed(recorder: Recorder) -> None:
    with timed_server(recorder) as server, connect(server) as client:
        started = time.monotonic()
        assert text(client.reply()) == TIMED_OUT
        assert time.monotonic() - started >= IDLE_TIMEOUT * 0.9
        assert client.closed_by_server()
        wait_for_sessions(server)


def test_idle_after_commands_is_closed(recorder: Recorder) -> None:
    with timed_server(recorder) as server, connect(server) as client:
        assert client.command("EHLO client.example").code == 250
        assert text(client.command("MAIL FROM:<a@example.com>")) == "250 OK"
        assert text(client.reply()) == TIMED_OUT
        assert client.closed_by_server()
        wait_for_sessions(server)
    assert recorder.messages == []


def test_idle_mid_data_is_closed_without_delivery(recorder: Recorder) -> None:
    with timed_server(recorder) as server, connect(server) as client:
        assert client.command("EHLO client.example").code == 250
        assert text(client.command("MAIL FROM:<a@example.com>")) == "250 OK"
        assert text(client.command("RCPT TO:<b@example.org>")) == "250 OK"
        assert text(client.command("DATA")) == GO_AHEAD
        client.send(b"Subject: stalled\r\n\r\nhalf\r\n")
        assert text(client.reply()) == TIMED_OUT
        assert client.closed_by_server()
        wait_for_sessions(server)
    assert recorder.messages == []


def test_steady_data_lines_keep_the_connection(recorder: Recorder) -> None:
    pace = IDLE_TIMEOUT * 0.4
    lines = [f"line {number}\r\n".encode() for number in range(6)]  # 6 x 0.2 s > 0.5 s
    with timed_server(recorder) as server, connect(server) as client:
        assert client.command("EHLO client.example").code == 250
        assert text(client.command("MAIL FROM:<a@example.com>")) == "250 OK"
        assert text(client.command("RCPT TO:<b@example.org>")) == "250 OK"
        assert text(client.command("DATA")) == GO_AHEAD
        started = time.monotonic()
        for line in lines:
            client.send(line)
            # Pacing by listening: the server must stay silent meanwhile.
            assert nothing_arrives(client.sock, pace), "server spoke mid-DATA"
        assert time.monotonic() - started > IDLE_TIMEOUT * 2
        client.send(b".\r\n")
        assert text(client.reply()) == "250 OK"
        assert text(client.command("NOOP")) == "250 OK"
    assert [message.content for message in recorder.messages] == [b"".join(lines)]


def test_steady_commands_keep_the_connection(recorder: Recorder) -> None:
    pace = IDLE_TIMEOUT * 0.4
    with timed_server(recorder) as server, connect(server) as client:
        started = time.monotonic()
        for _ in range(6):
            assert text(client.command("NOOP")) == "250 OK"
            assert nothing_arrives(client.sock, pace), "server spoke unasked"
        assert time.monotonic() - started > IDLE_TIMEOUT * 2
        assert text(client.command("QUIT")) == "221 Bye"


def test_trickled_partial_line_does_not_keep_the_connection(recorder: Recorder) -> None:
    """Bytes without a line feed (slowloris) do not reset the idle timer."""
    with timed_server(recorder) as server, connect(server) as client:
        started = time.monotonic()
        for _ in range(50):  # 50 x 0.1 s: ten timeouts
            try:
                client.send(b"N")
            except OSError:
                break
            if not nothing_arrives(client.sock, IDLE_TIMEOUT / 5):
                break
        assert text(client.reply()) == TIMED_OUT
        assert time.monotonic() - started < IDLE_TIMEOUT * 4
        assert client.closed_by_server()


def test_slow_handler_is_not_timed_out() -> None:
    class SlowHandler(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.started = threading.Event()
            self.release = asyncio.Event()

        async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
            self.started.set()
            await self.release.wait()
            return await super().handle_DATA(server, session, envelope)

    handler = SlowHandler()
    with timed_server(handler) as server, connect(server) as client:
        assert client.command("EHLO client.example").code == 250
        assert text(client.command("MAIL FROM:<a@example.com>")) == "250 OK"
        assert text(client.command("RCPT TO:<b@example.org>")) == "250 OK"
        assert text(client.command("DATA")) == GO_AHEAD
        client.send(b"Subject: slow\r\n\r\nbody\r\n.\r\n")
        assert handler.started.wait(WAIT)
        # Two idle timeouts pass, measured by other connections' timers, while
        # the hook is busy; the client is waiting for the server, not idle.
        wait_for_idle_clock(IDLE_TIMEOUT)
        wait_for_idle_clock(IDLE_TIMEOUT)
        assert server.call(lambda: not server.protocols[0]._closing)
        server.call(handler.release.set)
        assert text(client.reply()) == "250 OK"
        assert text(client.command("NOOP")) == "250 OK"
    assert [message.content for message in handler.messages] == [b"Subject: slow\r\n\r\nbody\r\n"]


def flood_without_reading(
    client: RawClient, *, payload: int
) -> tuple[threading.Thread, list[int], list[BaseException]]:
    """Pipeline up to ``payload`` octets of NOOPs from a thread without reading."""
    chunk = b"NOOP\r\n" * 10_000
    sent = [0]
    errors: list[BaseException] = []

    def send() -> None:
        try:
            for _ in range(payload // len(chunk)):
                client.sock.sendall(chunk)
                sent[0] += len(chunk)
        except OSError as error:
            errors.append(error)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    return sender, sent, errors


def small_buffers_client(server: ServerThread) -> RawClient:
    """A client with small socket buffers, connected to a server side whose buffers
    are small too: what one side does not read backs up quickly."""
    client = RawClient(server.port)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    assert text(client.reply()) == GREETING

    def shrink() -> None:
        sock = server.protocols[-1].transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)

    server.call(shrink)
    return client


# Octets of pipelined NOOPs: with the small socket buffers above, many times what
# all buffers on the way can hold (so the client must block), yet quick to process.
FLOOD = 2 * 1024 * 1024


def read_exactly(sock: socket.socket, size: int) -> bytes:
    received = bytearray()
    for _ in range(1_000_000):
        if len(received) >= size:
            break
        data = sock.recv(min(65536, size - len(received)))
        assert data, "server closed the connection"
        received += data
    return bytes(received)


def test_flood_without_reading_pauses_reading_and_completes(server: ServerThread) -> None:
    with small_buffers_client(server) as client:
        protocol = server.protocols[0]
        sender, sent, errors = flood_without_reading(client, payload=FLOOD)
        try:
            assert protocol.writing_paused.wait(WAIT), "server never stopped writing"
            assert protocol.reading_paused.wait(WAIT), "server never stopped reading"
            assert server.call(lambda: protocol._inbound.buffered) < 1024 * 1024
            assert sent[0] < FLOOD, "the whole flood went in without back-pressure"
            # Now read: everything is answered, in order, and the session goes on.
            commands = (FLOOD // 60_000) * 10_000
            assert read_exactly(client.sock, 8 * commands) == b"250 OK\r\n" * commands
            sender.join(WAIT)
            assert not sender.is_alive()
            assert errors == []
            assert sent[0] == 6 * commands
            assert text(client.command("QUIT")) == "221 Bye"
        finally:
            with suppress(OSError):  # wakes a sender still blocked
                client.sock.shutdown(socket.SHUT_RDWR)
            sender.join(WAIT)
        peak = server.call(lambda: protocol.peak_buffered)
    assert peak < 1024 * 1024
    wait_for_sessions(server)


class DrainWatcher(InstrumentedSMTP):
    """Signals when the session, out of input, is about to wait for more: either at
    once (``settled``: everything is answered) or after its replies drain
    (``parked_on_drain`` as well)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.settled = threading.Event()
        self.parked_on_drain = threading.Event()
        super().connection_made(transport)

    def _caught_up(self) -> None:
        super()._caught_up()
        # All answered (by a runner, or in the read callback): the next input starts
        # another runner or is answered where it arrives.
        self.settled.set()

    async def _flush_and_drain(self) -> None:
        if self._writing_paused:
            self.parked_on_drain.set()
            self.settled.set()
        await super()._flush_and_drain()


def test_input_arriving_while_replies_drain_is_not_lost(recorder: Recorder) -> None:
    """Commands that arrive while the session waits for its replies to drain (the
    client is slow to read) must still be answered once the client reads."""
    batch = b"NOOP\r\n" * 7000  # its replies stay under the outbox flush size
    with serving(lambda: DrainWatcher(recorder, hostname=HOST)) as server:
        with small_buffers_client(server) as client:
            protocol = server.protocols[0]
            batches = 0
            for _ in range(100):
                protocol.settled.clear()
                client.send(batch)
                batches += 1
                assert protocol.settled.wait(WAIT), "server never caught up"
                if protocol.parked_on_drain.is_set():
                    break
            assert protocol.parked_on_drain.is_set(), "replies never backed up"
            # The session now waits for its replies to drain; a last command arrives.
            client.send(b"NOOP\r\n")
            expected = b"250 OK\r\n" * (batches * 7000 + 1)
            assert read_exactly(client.sock, len(expected)) == expected
            assert text(client.command("QUIT")) == "221 Bye"
        wait_for_sessions(server)


def test_client_that_stops_reading_is_timed_out(recorder: Recorder) -> None:
    """A client that pipelines until the server cannot write, then neither reads
    nor sends, is as idle as one that sends nothing: it must not hold the
    connection (and its buffers) forever."""
    with timed_server(recorder) as server:
        client = small_buffers_client(server)
        protocol = server.protocols[0]
        sender, _, _ = flood_without_reading(client, payload=FLOOD)
        try:
            assert protocol.writing_paused.wait(WAIT), "server never stopped writing"
            assert protocol.reading_paused.wait(WAIT), "server never stopped reading"
            wait_for_idle_clock(IDLE_TIMEOUT * 3)

            def given_up() -> bool:
                return protocol.transport is None or protocol.transport.is_closing()

            assert server.call(given_up), "stalled connection still open after 3 timeouts"
        finally:
            with suppress(OSError):  # wakes the blocked sender; fails if already reset
                client.sock.shutdown(socket.SHUT_RDWR)
            client.close()
            sender.join(WAIT)
        wait_for_sessions(server)


# --- half-closed and closed connections ------------------------------------------------------


def test_quit_then_half_close_still_gets_bye(server: ServerThread) -> None:
    with connect(server) as client:
        client.send(b"NOOP\r\nQUIT\r\n")
        client.sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(client.sock) == b"250 OK\r\n221 Bye\r\n"
    wait_for_sessions(server)


def test_half_close_without_quit_gets_pending_replies(server: ServerThread) -> None:
    with connect(server) as client:
        client.send(b"EHLO client.example\r\nNOOP\r\n")
        client.sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(client.sock) == ehlo_reply() + b"250 OK\r\n"
    wait_for_sessions(server)


def test_eof_after_mail_closes_without_delivery(server: ServerThread, recorder: Recorder) -> None:
    with connect(server) as client:
        assert client.command("EHLO client.example").code == 250
        assert text(client.command("MAIL FROM:<a@example.com>")) == "250 OK"
        assert text(client.command("RCPT TO:<b@example.org>")) == "250 OK"
        client.sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(client.sock) == b""
    wait_for_sessions(server)
    assert recorder.messages == []


def test_eof_mid_data_closes_without_delivery(server: ServerThread, recorder: Recorder) -> None:
    with connect(server) as client:
        assert client.command("EHLO client.example").code == 250
        assert text(client.command("MAIL FROM:<a@example.com>")) == "250 OK"
        assert text(client.command("RCPT TO:<b@example.org>")) == "250 OK"
        assert text(client.command("DATA")) == GO_AHEAD
        client.send(b"Subject: cut\r\n\r\nno end\r\n.")
        client.sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(client.sock) == b""
    wait_for_sessions(server)
    assert recorder.messages == []


# --- IPv6 ------------------------------------------------------------------------------------


def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
def test_ipv6_session(recorder: Recorder) -> None:
    with serving(lambda: SMTP(recorder, hostname=HOST), host="::1") as server:
        with connect(server, host="::1") as client:
            assert client.command("EHLO client.example").code == 250
            assert text(client.command("MAIL FROM:<a@example.com>")) == "250 OK"
            assert text(client.command("RCPT TO:<b@[IPv6:::1]>")) == "250 OK"
            assert text(client.command("DATA")) == GO_AHEAD
            client.send(b"Subject: v6\r\n\r\nhello\r\n.\r\n")
            assert text(client.reply()) == "250 OK"
            assert text(client.command("QUIT")) == "221 Bye"
            local_port = client.sock.getsockname()[1]
        wait_for_sessions(server)
    assert recorder.messages == [
        Delivered("a@example.com", ("b@[IPv6:::1]",), b"Subject: v6\r\n\r\nhello\r\n")
    ]
    (peer,) = recorder.peers
    assert peer[:2] == ("::1", local_port)
